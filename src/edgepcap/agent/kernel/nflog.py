"""NFLOG over netlink: bind a log group, configure it, receive packets one read at a time
(`receive`), count kernel drops. The batched receive of captures without a budget (many
reads at once, made into records) is `nflog_receive.BatchedReceive`, this socket's base;
the messages' layout and parsing are in `nflog_messages`.

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

from edgepcap.agent.kernel import nflog_batch as batch
from edgepcap.agent.kernel.nflog_messages import (
    CFG_F_SEQ,
    CMD_BIND,
    CMD_UNBIND,
    COPY_PACKET,
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
from edgepcap.agent.kernel.nflog_receive import RECV_BYTES, BatchedReceive
from edgepcap.formats.pcapfile import Packet
from edgepcap.formats.pcapng import INBOUND, OUTBOUND


class NflogError(OSError):
    pass


class NflogSocket(BatchedReceive):
    """One bound NFLOG group. Not thread-safe: one reader."""

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
