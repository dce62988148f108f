"""The NFLOG netlink protocol's messages: their numbers and layouts, encoding the
attributes of a config message, and reading a packet message: the attribute walk, and
the layout learnt from one message that lets the reader skip the walk for the next."""

from __future__ import annotations

import os
import re
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2

NFULA_PACKET_HDR = 1
NFULA_TIMESTAMP = 3
NFULA_PAYLOAD = 9
NFULA_SEQ = 12

NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULA_CFG_FLAGS = 6
CMD_BIND = 1
CMD_UNBIND = 2
COPY_PACKET = 2
CFG_F_SEQ = 0x0001

PACKET_TYPE = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
NLMSGHDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("!BBH")
NLATTR = struct.Struct("=HH")
PACKET_HDR = struct.Struct("!HB")  # hardware protocol, hook
NF_INET_FORWARD = 2  # hooks up to here are the ones where the kernel can stamp packets
NF_INET_LOCAL_OUT = 3  # the output hook: packets the machine sends itself
U32 = struct.Struct("!I")
TS = struct.Struct("!QQ")
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_SOCKET = 1
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
# A stamp before 2000 is no wall-clock time: older kernels pass on the boot-relative
# delivery time some output packets carry (TCP pacing) as if it were one.
WALL_CLOCK_FLOOR = 946_684_800


def stamps_logged_packets(release: str | None = None) -> bool:
    """Whether this kernel's NFLOG stamps input and forwarded packets itself (Linux 6.6,
    commit 1d85594fd3e7); before it, only packets the kernel was asked to stamp carry a
    time. An unreadable release counts as old: stamping then costs a little, never data."""
    m = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return m is not None and (int(m[1]), int(m[2])) >= (6, 6)


def _attr(kind: int, value: bytes) -> bytes:
    length = NLATTR.size + len(value)
    return NLATTR.pack(length, kind) + value + b"\0" * ((4 - length % 4) % 4)


def original_length(data: bytes, proto: int) -> int:
    """The packet's length on the wire from its IP header (NFLOG only gives the copy)."""
    if proto == ETH_P_IP and len(data) >= 4:
        return (data[2] << 8) | data[3]
    if proto == ETH_P_IPV6 and len(data) >= 6:
        return ((data[4] << 8) | data[5]) + 40
    return len(data)


class Layout:
    """Where one group's packet messages keep their attributes.

    The kernel builds every message of a group alike (same attributes, same sizes before
    the payload) while packets come through the same interface and link header, so once
    learnt from one message, one check of the attribute headers replaces the walk through
    them for the next: the reader's per-packet cost halves (BENCHMARKS.md).
    """

    def __init__(self, hdr: int, ts: int, seq: int, payload: int, heads: tuple[int, ...]):
        self.payload = payload
        self.at = (hdr, ts, seq, payload)  # where each attribute begins in the message
        self.size = payload + 4 + 6  # through the payload's first 6 bytes (IP lengths)
        # The message header (length, type), then the attribute headers (length, type)
        # of the protocol, timestamp, sequence number and payload, in native order.
        self.heads = _fields("=", [(0, "IH"), *((p, "HH") for p in (hdr, ts, seq, payload))])
        self.expect = heads[:6]
        self.payload_type = heads[7]
        # Values in network order: protocol and hook, timestamp, sequence number, and the
        # first three 16-bit words of the packet (IPv4 total length, IPv6 payload length).
        self.values = _fields(
            "!", [(hdr + 4, "HB"), (ts + 4, "QQ"), (seq + 4, "I"), (payload + 4, "HHH")]
        )

    @classmethod
    def learn(cls, data: memoryview, offset: int, at: dict[int, int]) -> Layout | None:
        needed = (NFULA_PACKET_HDR, NFULA_TIMESTAMP, NFULA_SEQ, NFULA_PAYLOAD)
        if any(k not in at for k in needed):
            return None
        hdr, ts, seq, payload = (at[k] - offset for k in needed)
        if not hdr < ts < seq < payload or payload < max(at.values()) - offset:
            return None  # not the kernel's order: walk every message
        heads: tuple[int, ...] = ()
        for p in (hdr, ts, seq, payload):
            heads += NLATTR.unpack_from(data, offset + p)
        return cls(hdr, ts, seq, payload, heads)


def _fields(order: str, fields: list[tuple[int, str]]) -> struct.Struct:
    """A struct reading `fields` (offset, format) of one message, skipping the rest."""
    fmt, at = order, 0
    for offset, kind in fields:
        if offset > at:
            fmt += f"{offset - at}x"
        fmt += kind
        at = offset + struct.calcsize("=" + kind)
    return struct.Struct(fmt)


def walk(
    data: memoryview, offset: int, stop: int, learn: bool = True
) -> tuple[int, int, int, int, int, int | None, Layout | None, int]:
    """The attribute walk through one packet message: payload bounds, protocol,
    timestamp, sequence number, (if asked) the layout learnt from it, and the hook."""
    pos = offset + 20
    start = end = -1
    sec = usec = proto = hook = 0
    seq = None
    at: dict[int, int] = {}
    while pos + 4 <= stop:
        alen, atype = NLATTR.unpack_from(data, pos)
        if alen < 4:
            break
        atype &= 0x3FFF
        at[atype] = pos
        if atype == NFULA_PAYLOAD:
            start, end = pos + 4, min(pos + alen, stop)
        elif atype == NFULA_TIMESTAMP:
            sec, usec = TS.unpack_from(data, pos + 4)
        elif atype == NFULA_PACKET_HDR:
            proto, hook = PACKET_HDR.unpack_from(data, pos + 4)
        elif atype == NFULA_SEQ:
            seq = U32.unpack_from(data, pos + 4)[0]
        pos += (alen + 3) & ~3
    layout = Layout.learn(data, offset, at) if learn else None
    return start, end, proto, sec, usec, seq, layout, hook
