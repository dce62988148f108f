"""What a capture holds, read back with tshark, against what the traffic generator sent."""

from __future__ import annotations

import ipaddress
from collections import Counter

from tests.support.packets import tshark_fields

FIELDS = (
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "ip.proto",
    "ipv6.nxt",
    "udp.srcport",
    "tcp.srcport",
    "udp.dstport",
    "tcp.dstport",
    "frame.len",
    "frame.cap_len",
)


def packets_in(path) -> list[tuple]:
    """(src, dst, proto, sport, dport, wire length, captured length) of every packet."""
    rows = []
    for r in tshark_fields(path, *FIELDS):
        src, dst = r[0] or r[1], r[2] or r[3]
        proto = int(r[4] or r[5])
        sport = int(r[6] or r[7] or 0)
        dport = int(r[8] or r[9] or 0)
        rows.append((src, dst, proto, sport, dport, int(r[10]), int(r[11])))
    return rows


def expected(flows, keep) -> Counter:
    """Packets per (src, dst, proto, sport, dport) the generator put on the wire, both ways."""
    out: Counter = Counter()
    protos = {"udp": 17, "tcp": 6}
    for f in flows:
        v6 = f["family"] == 6
        if f["proto"] == "icmp":
            fwd = (f["src"], f["dst"], 58 if v6 else 1, 0, 0)
            back = (f["dst"], f["src"], 58 if v6 else 1, 0, 0)
        else:
            p = protos[f["proto"]]
            fwd = (f["src"], f["dst"], p, f["sport"], f["dport"])
            back = (f["dst"], f["src"], p, f["dport"], f["sport"])
        if keep(fwd):
            out[fwd] += f["packets"]
        if f["reply_packets"] and keep(back):
            out[back] += f["reply_packets"]
    return +out


def in_prefixes(addr: str, prefixes: list[str]) -> bool:
    a = ipaddress.ip_address(addr)
    return any(a.version == n.version and a in n for n in map(ipaddress.ip_network, prefixes))


def captured(lab, pcap_id) -> Counter:
    got: Counter = Counter()
    for path in lab.files(pcap_id).values():
        for src, dst, proto, sport, dport, wire, cap in packets_in(path):
            assert wire == cap  # whole packets
            got[(src, dst, proto, sport, dport)] += 1
    return got
