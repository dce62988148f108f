"""NFLOG over netlink: bind a log group, receive packets in batches, count kernel drops.
The messages' layout and parsing are in `nflog_messages`.

Hand-written because no maintained Python library speaks NFLOG with batching and buffer
tuning: it reads 128 KiB batches, sets the group's queue threshold and a large receive
buffer, and counts what the kernel dropped (figures: BENCHMARKS.md, full capture).
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from edgepcap.agent.kernel import nflog_batch as batch
from edgepcap.agent.kernel.nflog_messages import (
    CFG_F_SEQ,
    CMD_BIND,
    CMD_UNBIND,
    COPY_PACKET,
    ETH_P_IP,
    ETH_P_IPV6,
    NETLINK_NETFILTER,
    NF_INET_FORWARD,
    NF_INET_LOCAL_OUT,
    NFGENMSG,
    NFNL_SUBSYS_ULOG,
    NFULA_CFG_CMD,
    NFULA_CFG_FLAGS,
    NFULA_CFG_MODE,
    NFULA_CFG_NLBUFSIZ,
    NFULA_CFG_QTHRESH,
    NFULA_CFG_TIMEOUT,
    NFULNL_MSG_CONFIG,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NLMSGHDR,
    PACKET_TYPE,
    SO_RCVBUFFORCE,
    SO_TIMESTAMPNS,
    SOL_SOCKET,
    WALL_CLOCK_FLOOR,
    Layout,
    _attr,
    original_length,
    stamps_logged_packets,
    walk,
)
from edgepcap.formats.pcapfile import RECORD_HEADER, Packet
from edgepcap.formats.pcapng import INBOUND, OUTBOUND
from edgepcap.formats.protocol import Outbound

if TYPE_CHECKING:
    from edgepcap.direct_io import Chunk  # what the worker fills: a page-aligned buffer

# What one `receive_records` reads at most: the reads queued in the socket up to this
# many bytes (~700 whole packets, ~7 000 small ones) are made into records in one go.
RECV_BYTES = 1 << 20
# Runs of messages matching a layout, at most, that one call reads at once: traffic whose
# layout changes at every message is read one message at a time after these.
MAX_RUNS = 8


class NflogError(OSError):
    pass


class NflogSocket:
    """One bound NFLOG group. Not thread-safe: one reader."""

    # Fewer messages than this in one call are read one at a time: numpy's fixed cost per
    # call (~30 µs) is more than the per-message reads it saves.
    vector_min = 32
    _buf_obj: bytearray | None = None

    def __init__(
        self,
        group: int,
        snaplen: int = 0xFFFF,
        rcvbuf: int = 32 << 20,
        nlbufsiz: int = 128 << 10,
        qthresh: int = 4096,
        timeout_cs: int = 1,
    ) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group {group} out of range")
        self.group = group
        self.snaplen = snaplen
        self.packets = 0
        self.overruns = 0  # ENOBUFS: the socket buffer overflowed
        self.seq_lost = 0  # packets the kernel numbered but never delivered
        self._next_seq: int | None = None
        self._layout: Layout | None = None
        self._seqno = 0
        self._nlbufsiz = nlbufsiz
        self._buf = bytearray(RECV_BYTES + nlbufsiz * 2)
        self._buf_obj = self._buf
        self._view = memoryview(self._buf)
        self._views = batch.Views.of(self._buf)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._stamp: socket.socket | None = None
        try:
            self.sock.setsockopt(SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            self.sock.bind((0, 0))
            if not stamps_logged_packets():
                # Asked now, not when the first packet shows up unstamped: the kernel
                # switches stamping on lazily, so a late ask leaves the first batches
                # with the reader's clock.
                self._stamp_received()
            self._config(_attr(NFULA_CFG_CMD, bytes([CMD_BIND])))
            self._config(
                _attr(NFULA_CFG_MODE, struct.pack("!IBB", snaplen, COPY_PACKET, 0))
                + _attr(NFULA_CFG_NLBUFSIZ, struct.pack("!I", nlbufsiz))
                + _attr(NFULA_CFG_QTHRESH, struct.pack("!I", qthresh))
                + _attr(NFULA_CFG_TIMEOUT, struct.pack("!I", timeout_cs))
                + _attr(NFULA_CFG_FLAGS, struct.pack("!H", CFG_F_SEQ))
            )
        except BaseException:
            self.sock.close()
            if self._stamp is not None:
                self._stamp.close()  # or the machine-wide stamping stays on until GC
            raise

    def _config(self, attrs: bytes) -> None:
        self._seqno += 1
        body = NFGENMSG.pack(socket.AF_UNSPEC, 0, self.group) + attrs
        msg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
        header = NLMSGHDR.pack(
            NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, self._seqno, 0
        )
        self.sock.send(header + body)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            offset = 0
            while offset + NLMSGHDR.size <= len(data):
                length, kind, _flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
                if kind == NLMSG_ERROR and seq == self._seqno:
                    code = -struct.unpack_from("=i", data, offset + NLMSGHDR.size)[0]
                    self.sock.settimeout(None)
                    if code:
                        hint = " (another process holds this group)" if code == errno.EBUSY else ""
                        raise NflogError(
                            code,
                            f"NFLOG group {self.group}: {errno.errorcode.get(code, code)}{hint}",
                        )
                    return
                offset += (length + 3) & ~3
        raise NflogError(errno.ETIMEDOUT, f"NFLOG group {self.group}: no answer to config")

    @property
    def dropped(self) -> int:
        return self.seq_lost

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, timeout: float | None) -> list[Packet]:
        """The packets of one receive call (possibly many), or [] on timeout."""
        data = self._recv(timeout)
        return [] if data is None else self._parse(data)

    def _recv(self, timeout: float | None) -> memoryview | None:
        """One netlink read (many packets), or None on timeout or a counted overrun."""
        self.sock.settimeout(timeout)
        try:
            n = self.sock.recv_into(self._buf)
        except (TimeoutError, BlockingIOError):
            return None
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.overruns += 1
                return None
            raise
        return memoryview(self._buf)[:n]

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

    def _parse(self, data: memoryview) -> list[Packet]:
        out: list[Packet] = []
        offset, n = 0, len(data)
        while offset + 16 <= n:
            length, kind = NLMSGHDR.unpack_from(data, offset)[:2]
            if length < 16 or offset + length > n:
                break
            if kind == PACKET_TYPE:
                start, end, proto, sec, usec, seq, _, hook = walk(
                    data, offset, offset + length, learn=False
                )
                if seq is not None:
                    if self._next_seq is not None and seq != self._next_seq:
                        self.seq_lost += (seq - self._next_seq) & 0xFFFFFFFF
                    self._next_seq = (seq + 1) & 0xFFFFFFFF
                if start >= 0:
                    payload = bytes(data[start:end])
                    if sec < WALL_CLOCK_FLOOR:
                        self._unstamped(hook)
                    ts_ns = (
                        sec * 1_000_000_000 + usec * 1000
                        if sec >= WALL_CLOCK_FLOOR
                        else time.time_ns()
                    )
                    way = OUTBOUND if hook == NF_INET_LOCAL_OUT else INBOUND
                    out.append(Packet(ts_ns, original_length(payload, proto), payload, way))
            offset += (length + 3) & ~3
        self.packets += len(out)
        return out

    def _unstamped(self, hook: int) -> None:
        """A packet came without a kernel timestamp: ask the kernel to stamp every
        received packet if it was an input-side one (the safety net for a kernel whose
        release misleads `stamps_logged_packets`).

        Newer kernels stamp each logged packet on input and forwarding hooks, so the
        machine-wide stamping (a clock read per packet on every interface) stays off
        unless it is needed; output-hook packets are never stamped and get the reader's
        clock either way.
        """
        if hook <= NF_INET_FORWARD:
            self._stamp_received()

    def _stamp_received(self) -> None:
        if self._stamp is None:
            self._stamp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._stamp.setsockopt(SOL_SOCKET, SO_TIMESTAMPNS, 1)

    def close(self) -> None:
        try:
            self._config(_attr(NFULA_CFG_CMD, bytes([CMD_UNBIND])))
        except OSError:
            pass
        finally:
            self.sock.close()
            if self._stamp is not None:
                self._stamp.close()

    def __enter__(self) -> NflogSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Packet]:
        while True:
            yield from self.receive(None)
