"""Packets for people: decode IP headers for previews, and summarise a PCAP file."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

from edgepcap.formats.filters import PORT_PROTOCOLS
from edgepcap.formats.pcapfile import LINKTYPE_ETHERNET, LINKTYPE_RAW, Packet, Reader

PROTOCOLS = {
    1: "ICMP",
    6: "TCP",
    17: "UDP",
    58: "ICMPv6",
    33: "DCCP",
    132: "SCTP",
    136: "UDPLite",
    47: "GRE",
    50: "ESP",
}
MAX_SUMMARY_PACKETS = 50_000_000


@dataclass
class Decoded:
    time_ns: int
    source: str
    destination: str
    protocol: str
    source_port: int | None
    destination_port: int | None
    length: int
    captured: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decode(packet: Packet, linktype: int = LINKTYPE_RAW) -> Decoded:
    data = packet.data
    if linktype == LINKTYPE_ETHERNET:
        data = data[14:]
    src = dst = "?"
    proto_num = -1
    sport = dport = None
    if data and data[0] >> 4 == 4 and len(data) >= 20:
        ihl = (data[0] & 0x0F) * 4
        proto_num = data[9]
        src = str(ipaddress.IPv4Address(data[12:16]))
        dst = str(ipaddress.IPv4Address(data[16:20]))
        frag = ((data[6] & 0x1F) << 8) | data[7]
        l4 = data[ihl:] if frag == 0 else b""
    elif data and data[0] >> 4 == 6 and len(data) >= 40:
        proto_num = data[6]
        src = str(ipaddress.IPv6Address(data[8:24]))
        dst = str(ipaddress.IPv6Address(data[24:40]))
        l4 = data[40:]
    else:
        l4 = b""
    if proto_num in PORT_PROTOCOLS and len(l4) >= 4:
        sport = int.from_bytes(l4[0:2], "big")
        dport = int.from_bytes(l4[2:4], "big")
    name = PROTOCOLS.get(proto_num, str(proto_num) if proto_num >= 0 else "?")
    return Decoded(packet.ts_ns, src, dst, name, sport, dport, packet.orig_len, len(packet.data))


def preview(reader: Reader, count: int = 100) -> list[dict[str, Any]]:
    """The first `count` packets, decoded, each with its bytes in hex."""
    out = []
    # islice, not a break after the fact: a damaged record past the last one shown
    # must not spoil the preview.
    for packet in islice(reader, count):
        row = decode(packet, reader.header.linktype).as_dict()
        row["hex"] = packet.data.hex()
        out.append(row)
    return out


def summarise(
    packets: Iterable[Packet], linktype: int = LINKTYPE_RAW, top: int = 10
) -> dict[str, Any]:
    """Top talkers, protocols and time span: a quick look without Wireshark."""
    talkers: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    protocols: Counter[str] = Counter()
    bytes_by_proto: Counter[str] = Counter()
    first = last = None
    count = total = 0
    for packet in packets:
        d = decode(packet, linktype)
        count += 1
        total += d.length
        talkers[d.source] += d.length
        pairs[(d.source, d.destination)] += 1
        protocols[d.protocol] += 1
        bytes_by_proto[d.protocol] += d.length
        first = d.time_ns if first is None else min(first, d.time_ns)
        last = d.time_ns if last is None else max(last, d.time_ns)
        if count >= MAX_SUMMARY_PACKETS:
            break
    return {
        "packets": count,
        "bytes": total,
        "first_ns": first,
        "last_ns": last,
        "seconds": round((last - first) / 1e9, 6) if count else 0.0,
        "protocols": [
            {"protocol": p, "packets": n, "bytes": bytes_by_proto[p]}
            for p, n in protocols.most_common()
        ],
        "top_sources": [{"source": s, "bytes": b} for s, b in talkers.most_common(top)],
        "top_conversations": [
            {"source": s, "destination": d, "packets": n} for (s, d), n in pairs.most_common(top)
        ],
    }
