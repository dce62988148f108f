"""NFLOG packet messages turned into PCAP records many at a time (numpy), for the reader's
fast path: where the messages are, which of them have the attributes where the group's
`Layout` says, their values read all at once, and each record's header written into the
receive buffer just before its packet, so that a record is one slice of that buffer.

Why numpy: reading a message's values with `struct` costs ~1 µs of interpreter work per
packet, which at the generator's top rate is the reader's whole core (BENCHMARKS.md, full
capture); here the interpreter's work per packet is one slice copied into the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepcap.agent.kernel.nflog_messages import (
    ETH_P_IP,
    ETH_P_IPV6,
    NF_INET_LOCAL_OUT,
    PACKET_TYPE,
    WALL_CLOCK_FLOOR,
    Layout,
)
from edgepcap.formats.pcapfile import RECORD_HEADER

HEAD = RECORD_HEADER.size  # the record header, written over the attributes before the packet
RUN_MIN = 8  # messages of one length in a row, at least, for them to be found at once


def message_offsets(views: Views, start: int, stop: int) -> np.ndarray:
    """Where the whole messages of one read (between `start` and `stop`) begin; a message
    cut short ends them (never a record of bytes that are not there).

    Messages of one length in a row (packets of one size: a flood, a bulk transfer) are
    found at once: the places they would be at are checked to hold that length. Reads
    with fewer such runs are walked message by message."""
    n32 = views.n16.view(np.uint32)
    found: list[np.ndarray] = []
    walked: list[int] = []
    at, by_runs = start, True
    while at + 16 <= stop:
        length = int(n32[at >> 2])
        if length < 16 or at + length > stop:
            break
        stride = (length + 3) & ~3
        fit = (stop - at - length) // stride + 1
        if by_runs and fit >= RUN_MIN:
            places = at + np.arange(fit, dtype=np.int64) * stride
            same = n32[places >> 2] == length
            run = fit if same.all() else int(np.argmin(same))
            if walked:
                found.append(np.array(walked, np.int64))
                walked = []
            found.append(places[:run])
            at += run * stride
            by_runs = run >= RUN_MIN
            continue
        walked.append(at)
        at += stride
    if walked:
        found.append(np.array(walked, np.int64))
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def copy_records(views: Views, out: Any, starts: np.ndarray, caplen: np.ndarray) -> None:
    """Append the records at `starts` (each HEAD + its caplen bytes) to `out`: a bytearray,
    or a `direct_io.Chunk`. Records of one size at one distance from each other are one
    strided copy; others are copied one by one."""
    k = len(starts)
    size = caplen + HEAD
    u8 = views.u8
    if k > 1:
        step = int(starts[1] - starts[0])
        if (size == size[0]).all() and (np.diff(starts) == step).all():
            width = int(size[0])
            # Whole records as single elements: numpy copies each with one memcpy.
            kind = np.dtype((np.void, width))
            rows = np.ndarray((k,), kind, u8, int(starts[0]), (step,))
            if type(out) is bytearray:
                out += rows.tobytes()
            else:
                dst = np.frombuffer(out.mem, kind, count=k, offset=out.end)
                dst[...] = rows
                out.end += k * width
            return
    data = memoryview(u8)
    if type(out) is bytearray:
        for a, b in zip(starts.tolist(), (starts + size).tolist(), strict=True):
            out += data[a:b]
        return
    view, end = out.view, out.end
    for a, b in zip(starts.tolist(), (starts + size).tolist(), strict=True):
        view[end : end + b - a] = data[a:b]
        end += b - a
    out.end = end


@dataclass
class Views:
    """One receive buffer seen as native 16-bit words, big-endian 16- and 32-bit words,
    bytes, and little-endian 32-bit words (PCAP record headers)."""

    u8: np.ndarray
    n16: np.ndarray
    be16: np.ndarray
    be32: np.ndarray
    le32: np.ndarray

    @classmethod
    def of(cls, buffer: bytearray | memoryview) -> Views:
        size = len(buffer) & ~3
        raw = memoryview(buffer)[:size]
        return cls(
            np.frombuffer(raw, np.uint8),
            np.frombuffer(raw, np.uint16),
            np.frombuffer(raw, ">u2"),
            np.frombuffer(raw, ">u4"),
            np.frombuffer(raw, "<u4"),
        )


def _u32(length: int, kind: int) -> int:
    """An attribute header (length, type: native 16-bit words) as one native 32-bit word."""
    return int(np.array([length, kind], np.uint16).view(np.uint32)[0])


class Run:
    """The messages of one receive that match a layout, read at once."""

    def __init__(self, views: Views, offsets: np.ndarray, layout: Layout) -> None:
        self.layout = layout
        hdr, ts, seq, payload = layout.at
        o = offsets
        v = views
        n32 = v.n16.view(np.uint32)
        length = n32[o >> 2].astype(np.int64)
        caplen = v.n16[(o + payload) >> 1].astype(np.int64) - 4
        e = layout.expect
        match = (
            (v.n16[(o + 4) >> 1] == PACKET_TYPE)
            & (n32[(o + hdr) >> 2] == _u32(e[0], e[1]))
            & (n32[(o + ts) >> 2] == _u32(e[2], e[3]))
            & (n32[(o + seq) >> 2] == _u32(e[4], e[5]))
            & (v.n16[(o + payload + 2) >> 1] == layout.payload_type)
            & (caplen >= 6)
            & (caplen <= length - payload - 4)
            & (v.be32[(o + ts + 4) >> 2] == 0)  # seconds that fit a PCAP record
        )
        self.match = match
        self.offsets = o
        self.caplen = caplen
        self.views = views

    def matching(self, i: int) -> int:
        """How many messages from the i-th on match the layout."""
        rest = self.match[i:]
        miss = np.flatnonzero(~rest)
        return int(miss[0]) if miss.size else int(rest.size)

    def records(
        self, i: int, j: int, next_seq: int | None
    ) -> tuple[np.ndarray, np.ndarray, list[int], int, int, int]:
        """Messages i..j-1 (all matching) as records in place: where they begin in the
        buffer and their packets' lengths,
        which of them were sent by the machine, the next expected sequence number, the
        packets lost before them and their bytes."""
        hdr, ts, seq_at, payload = self.layout.at
        v = self.views
        o = self.offsets[i:j]
        caplen = self.caplen[i:j]
        proto = v.be16[(o + hdr + 4) >> 1].astype(np.int64)
        hook = v.u8[o + hdr + 6]
        sec = v.be32[(o + ts + 8) >> 2].astype(np.int64)
        usec = v.be32[(o + ts + 16) >> 2].astype(np.int64)
        seq = v.be32[(o + seq_at + 4) >> 2].astype(np.int64)
        w1 = v.be16[(o + payload + 6) >> 1].astype(np.int64)
        w2 = v.be16[(o + payload + 8) >> 1].astype(np.int64)
        orig = np.where(proto == ETH_P_IP, w1, np.where(proto == ETH_P_IPV6, w2 + 40, caplen))
        # A boot-relative stamp (older kernels' paced output packets) is no wall-clock
        # time: such packets get the reader's clock.
        early = sec < WALL_CLOCK_FLOOR
        if early.any():
            now_sec, now_usec = divmod(time.time_ns() // 1000, 1_000_000)
            sec = np.where(early, now_sec, sec)
            usec = np.where(early, now_usec, usec)
        lost = 0
        if next_seq is not None:
            lost += (int(seq[0]) - next_seq) & 0xFFFFFFFF
        lost += int((((seq[1:] - seq[:-1]) - 1) & 0xFFFFFFFF).sum())
        at = (o + payload + 4 - HEAD) >> 2
        le32 = v.le32
        le32[at] = sec
        le32[at + 1] = usec
        le32[at + 2] = caplen
        le32[at + 3] = orig
        outbound = np.flatnonzero(hook == NF_INET_LOCAL_OUT).tolist()
        return (
            at << 2,
            caplen,
            outbound,
            (int(seq[-1]) + 1) & 0xFFFFFFFF,
            lost,
            int(caplen.sum()),
        )
