"""The NFLOG reader's batched receive: the reads queued in the socket taken at once and
made into PCAP records in one go, for captures without a budget (the worker's fast path).

This is the "many reads at once" half of `nflog.NflogSocket` (its base class): binding,
configuring and the one-at-a-time path (`receive`) are in `nflog`; many messages made
into records with numpy are in `nflog_batch`, one message at a time here (`_scalar`).
"""

from __future__ import annotations

import errno
import socket
import time
from typing import TYPE_CHECKING

import numpy as np

from edgepcap.agent.kernel import nflog_batch as batch
from edgepcap.agent.kernel.nflog_messages import (
    ETH_P_IP,
    ETH_P_IPV6,
    NF_INET_LOCAL_OUT,
    NLMSGHDR,
    PACKET_TYPE,
    WALL_CLOCK_FLOOR,
    Layout,
    original_length,
    walk,
)
from edgepcap.formats.pcapfile import RECORD_HEADER
from edgepcap.formats.protocol import Outbound

if TYPE_CHECKING:
    from edgepcap.direct_io import Chunk  # what the worker fills: a page-aligned buffer

# What one `receive_records` reads at most: the reads queued in the socket up to this
# many bytes (~700 whole packets, ~7 000 small ones) are made into records in one go.
RECV_BYTES = 1 << 20
# Runs of messages matching a layout, at most, that one call reads at once: traffic whose
# layout changes at every message is read one message at a time after these.
MAX_RUNS = 8


class BatchedReceive:
    """The batched receive of one bound NFLOG group; `nflog.NflogSocket` binds the group,
    owns the buffer and the reading state declared below, and stamps unstamped packets
    (`_unstamped`). Not thread-safe: one reader."""

    # Fewer messages than this in one call are read one at a time: numpy's fixed cost per
    # call (~30 µs) is more than the per-message reads it saves.
    vector_min = 32
    _buf_obj: bytearray | None = None
    # Set by `NflogSocket.__init__`; the buffer is the one-at-a-time path's too.
    sock: socket.socket
    packets: int
    overruns: int
    seq_lost: int
    _next_seq: int | None
    _layout: Layout | None
    _nlbufsiz: int
    _buf: bytearray
    _view: memoryview
    _views: batch.Views

    def _unstamped(self, hook: int) -> None:
        """A packet came without a kernel timestamp (`NflogSocket._unstamped`)."""
        raise NotImplementedError

    def _recv_many(self, timeout: float | None) -> tuple[memoryview, list[tuple[int, int]]]:
        """One netlink read waiting up to `timeout`, then the reads already queued, into
        one buffer (at most RECV_BYTES): what they hold and where each read's messages
        are. Reading many at once is what lets the records of ~1 000 packets be made in
        one go (`nflog_batch`); the buffer is the same for every call, so no page is new."""
        view = self._view
        segments: list[tuple[int, int]] = []
        at, room = 0, len(view) - self._nlbufsiz * 2
        self.sock.settimeout(timeout)
        flags = 0
        while at <= room:
            try:
                n = self.sock.recv_into(view[at:], 0, flags)
            except (TimeoutError, BlockingIOError):
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1
                if flags:
                    break
                continue  # the first read: the messages after the overrun wait
            segments.append((at, at + n))
            at = (at + n + 3) & ~3
            if not flags:
                # Only what is queued now: a socket with a timeout would wait that long for
                # more (Python polls and retries even a MSG_DONTWAIT read), and under
                # steady traffic it would gather a whole buffer before returning.
                self.sock.settimeout(0.0)
                flags = socket.MSG_DONTWAIT
        return view, segments

    def receive_records(
        self,
        timeout: float | None,
        out: bytearray | Chunk,
        outbound: Outbound | None = None,
        first: int = 0,
    ) -> tuple[int, int]:
        """Append PCAP records (LINKTYPE_RAW, microseconds) of what is received to `out`.

        The fast path for captures without a budget: no per-packet objects, the payload is
        copied once from the netlink buffer into the record stream. Returns (packets, bytes).
        """
        data, segments = self._recv_many(timeout)
        return self.records(data, out, outbound, first, segments) if segments else (0, 0)

    def records(
        self,
        data: memoryview,
        out: bytearray | Chunk,
        outbound: Outbound | None = None,
        first: int = 0,
        segments: list[tuple[int, int]] | None = None,
    ) -> tuple[int, int]:
        """Append the PCAP records of the packet messages in `data` (netlink reads, each
        between the bounds of one of `segments`; all of `data` when None) to `out`; the
        ordinals of those the machine sent itself go to `outbound` (the first record
        appended is packet `first` of the object)."""
        if segments is None:
            segments = [(0, len(data))]
        if data.readonly or data.obj is not self._buf_obj:
            # Records are made in place: a copy that may be written, with room to read
            # a few bytes past the end.
            data = memoryview(bytearray(data) + bytes(64))[: len(data)]
            views = batch.Views.of(data.obj)
        else:
            views = self._views
        at = np.concatenate([batch.message_offsets(views, start, stop) for start, stop in segments])
        count = total = 0
        if len(at) < self.vector_min:
            return self._scalar(data, at.tolist(), out, outbound, first)
        at = at[views.n16[(at + 4) >> 1] == PACKET_TYPE]
        i, runs = 0, 0
        while i < len(at):
            layout = self._layout
            j = 0
            if layout is not None and runs < MAX_RUNS:
                runs += 1
                run = batch.Run(views, at[i:], layout)
                j = run.matching(0)
            if not j:
                # Walked one by one until a layout fits (learnt from the first walked).
                stop = i + 1 if runs < MAX_RUNS else len(at)
                got, size = self._scalar(data, at[i:stop].tolist(), out, outbound, first + count)
                count, total, i = count + got, total + size, stop
                continue
            starts, caplen, sent, next_seq, lost, size = run.records(0, j, self._next_seq)
            batch.copy_records(views, out, starts, caplen)
            if outbound is not None:
                for k in sent:
                    outbound.add(first + count + k)
            self._next_seq = next_seq
            self.seq_lost += lost
            self.packets += j
            count, total, i = count + j, total + size, i + j
        return count, total

    def _scalar(
        self,
        data: memoryview,
        offsets: list[int],
        out: bytearray | Chunk,
        outbound: Outbound | None,
        first: int,
    ) -> tuple[int, int]:
        """The records of the whole messages at `offsets`, one message at a time: read by
        the layout when they match it, else walked (learning the layout anew)."""
        count = total = 0
        pack_record = RECORD_HEADER.pack
        local_out = NF_INET_LOCAL_OUT
        layout = self._layout
        next_seq, lost = self._next_seq, 0
        for offset in offsets:
            length, kind = NLMSGHDR.unpack_from(data, offset)[:2]
            n = offset + length
            if layout is not None and offset + layout.size <= n:
                # The fast path: one check that the message has its attributes where the
                # layout says, then its values in one read. Anything else is walked.
                heads = layout.heads.unpack_from(data, offset)
                caplen = heads[8] - 4
                if (
                    heads[1] == PACKET_TYPE
                    and heads[2:8] == layout.expect
                    and heads[9] == layout.payload_type
                    and 6 <= caplen <= length - layout.payload - 4
                ):
                    proto, hook, sec, usec, seq, _w0, w1, w2 = layout.values.unpack_from(
                        data, offset
                    )
                    if hook == local_out and outbound is not None:
                        outbound.add(first + count)
                    if next_seq is not None and seq != next_seq:
                        lost += (seq - next_seq) & 0xFFFFFFFF
                    next_seq = (seq + 1) & 0xFFFFFFFF
                    if proto == ETH_P_IP:
                        orig = w1
                    elif proto == ETH_P_IPV6:
                        orig = w2 + 40
                    else:
                        orig = caplen
                    # A boot-relative stamp; a missing one never takes this path (the
                    # layout needs the attribute), so no `_unstamped` check is due here.
                    if sec < WALL_CLOCK_FLOOR:
                        sec, usec = divmod(time.time_ns() // 1000, 1_000_000)
                    start = offset + layout.payload + 4
                    out += pack_record(sec, usec, caplen, orig)
                    out += data[start : start + caplen]
                    count += 1
                    total += caplen
                    continue
            if kind == PACKET_TYPE:
                start, end, proto, sec, usec, seq, layout, hook = walk(data, offset, n)
                if seq is not None:
                    if next_seq is not None and seq != next_seq:
                        lost += (seq - next_seq) & 0xFFFFFFFF
                    next_seq = (seq + 1) & 0xFFFFFFFF
                if start >= 0:
                    caplen = end - start
                    if hook == NF_INET_LOCAL_OUT and outbound is not None:
                        outbound.add(first + count)
                    if sec < WALL_CLOCK_FLOOR:
                        self._unstamped(hook)
                        sec, usec = divmod(time.time_ns() // 1000, 1_000_000)
                    out += pack_record(sec, usec, caplen, original_length(data[start:end], proto))
                    out += data[start:end]
                    count += 1
                    total += caplen
        self._layout = layout
        self._next_seq = next_seq
        self.seq_lost += lost
        self.packets += count
        return count, total
