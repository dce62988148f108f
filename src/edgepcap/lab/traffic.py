"""Bounded test traffic from the lab's client to its customers, counted per 5-tuple.

UDP (swallowed by the customer), TCP SYNs (answered by one RST each) and ICMP echo
(answered by one reply each): every packet on the wire is known in advance.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from dataclasses import asdict, dataclass

from edgepcap.agent.kernel import netns
from edgepcap.lab.topology import CLIENT4, CLIENT6, Layout

MAX_COUNT = 100_000
MAX_SECONDS = 60.0
MIN_RATE, MAX_RATE = 1.0, 100_000.0
IPV6_CHECKSUM = 7


@dataclass
class Flow:
    proto: str  # udp | tcp | icmp
    family: int
    src: str
    sport: int
    dst: str
    dport: int
    packets: int
    bytes: int  # IP packet bytes on the wire, all packets
    tenant: str
    machine: str
    reply_packets: int = 0
    reply_bytes: int = 0
    colo: str = ""  # the machine's

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _syn(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 6, len(header))
        csum = checksum(pseudo + header)
        header = header[:16] + struct.pack("!H", csum) + header[18:]
    return header


def _send_all(
    layout: Layout,
    tenants: list[str],
    count: int,
    size: int,
    v6: bool,
    protos: list[str],
    deadline: float,
    rate: float | None = None,
    hosts: int | None = None,
) -> list[Flow]:
    flows: list[Flow] = []
    families = [4, 6] if v6 else [4]
    for tenant in tenants:
        for i, (h4, h6) in enumerate(layout.hosts(tenant)[:hosts], start=1):
            machine = layout.machines[i - 1]
            t = 0 if tenant == "customer" else 1
            for family in families:
                dst, src = (h4, CLIENT4) if family == 4 else (h6, CLIENT6)
                af = socket.AF_INET if family == 4 else socket.AF_INET6
                ip_hdr = 20 if family == 4 else 40
                k = 1000 * t + 100 * i + (0 if family == 4 else 50)
                if "udp" in protos:
                    sport, dport = 40000 + k, 5000 + i
                    with socket.socket(af, socket.SOCK_DGRAM) as s:
                        s.bind((src, sport))
                        payload = b"\xab" * size
                        sent = 0
                        start = time.monotonic()
                        while sent < count and (now := time.monotonic()) < deadline:
                            if rate is not None and (due := start + sent / rate) > now:
                                time.sleep(due - now)
                            s.sendto(payload, (dst, dport))
                            sent += 1
                    flows.append(
                        Flow(
                            "udp",
                            family,
                            src,
                            sport,
                            dst,
                            dport,
                            sent,
                            sent * (ip_hdr + 8 + size),
                            tenant,
                            machine,
                        )
                    )
                if "tcp" in protos:
                    sport = 42000 + k
                    flows.append(
                        _tcp(af, src, dst, sport, count, ip_hdr, deadline, tenant, machine)
                    )
                if "icmp" in protos:
                    flows.append(
                        _icmp(
                            af, src, dst, 7000 + k, count, size, ip_hdr, deadline, tenant, machine
                        )
                    )
    for flow in flows:
        flow.colo = layout.colo_of(flow.machine)
    return flows


def _tcp(
    af: int,
    src: str,
    dst: str,
    sport: int,
    count: int,
    ip_hdr: int,
    deadline: float,
    tenant: str,
    machine: str,
) -> Flow:
    with socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_TCP) as s:
        if af == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 16)
        s.bind((src, 0))
        sent = 0
        while sent < count and time.monotonic() < deadline:
            s.sendto(_syn(src, dst, sport, 80, 1000 + sent), (dst, 0))
            sent += 1
    # Each SYN to a closed port is answered by one RST/ACK (20 bytes of TCP).
    return Flow(
        "tcp",
        4 if af == socket.AF_INET else 6,
        src,
        sport,
        dst,
        80,
        sent,
        sent * (ip_hdr + 20),
        tenant,
        machine,
        reply_packets=sent,
        reply_bytes=sent * (ip_hdr + 20),
    )


def _icmp(
    af: int,
    src: str,
    dst: str,
    ident: int,
    count: int,
    size: int,
    ip_hdr: int,
    deadline: float,
    tenant: str,
    machine: str,
) -> Flow:
    v4 = af == socket.AF_INET
    proto = socket.IPPROTO_ICMP if v4 else socket.IPPROTO_ICMPV6
    kind = 8 if v4 else 128
    with socket.socket(af, socket.SOCK_RAW, proto) as s:
        s.bind((src, 0))
        payload = b"\xcd" * size
        sent = 0
        while sent < count and time.monotonic() < deadline:
            body = struct.pack("!BBHHH", kind, 0, 0, ident & 0xFFFF, sent & 0xFFFF) + payload
            if v4:
                body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
            s.sendto(body, (dst, 0))
            sent += 1
        replies = 0
        wait_until = min(deadline, time.monotonic() + 3)
        while replies < sent and time.monotonic() < wait_until:
            ready, _, _ = select.select([s], [], [], 0.1)
            if not ready:
                continue
            data = s.recv(65535)
            icmp = data[(data[0] & 0x0F) * 4 :] if v4 else data
            echo_reply = icmp and icmp[0] == (0 if v4 else 129)
            if echo_reply and struct.unpack("!H", icmp[4:6])[0] == ident & 0xFFFF:
                replies += 1
    length = ip_hdr + 8 + size
    return Flow(
        "icmp",
        4 if v4 else 6,
        src,
        ident,
        dst,
        0,
        sent,
        sent * length,
        tenant,
        machine,
        reply_packets=replies,
        reply_bytes=replies * length,
    )


def send(
    layout: Layout,
    tenants: list[str],
    count: int,
    size: int = 100,
    v6: bool = True,
    protos: tuple[str, ...] = ("udp", "tcp", "icmp"),
    seconds: float = 30.0,
    rate: float | None = None,
    hosts: int | None = None,
) -> list[Flow]:
    """Send `count` packets per flow from the client namespace, UDP flows at most `rate`
    packets/s each (None: as fast as they go), to each tenant's first `hosts` hosts (None:
    all, one per machine); returns what was sent."""
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be 1 to {MAX_COUNT}")
    if not 0 <= size <= 1400:
        raise ValueError("size must be 0 to 1400 bytes")
    if rate is not None and not (MIN_RATE <= rate <= MAX_RATE and protos == ("udp",)):
        raise ValueError(f"rate must be {MIN_RATE} to {MAX_RATE} packets/s, for UDP only")
    deadline = time.monotonic() + min(seconds, MAX_SECONDS)
    return netns.run_in(
        layout.ns("client"),
        _send_all,
        layout,
        tenants,
        count,
        size,
        v6,
        list(protos),
        deadline,
        rate,
        hosts,
    )
