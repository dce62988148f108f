"""Builds real IPv4/IPv6 packets and PCAP files for tests, and reads files back with tshark."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
from pathlib import Path

from edgepcap.formats.pcapfile import Packet, global_header, record
from edgepcap.lab.traffic import checksum


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x" * 32) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    body = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if s.version == 4:
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, 17, 0, s.packed, d.packed
        )
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return header + body
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), 17, 64, s.packed, d.packed) + body


def chunks_of(data: bytes, size: int) -> list[bytes]:
    """`data` cut into chunks of `size` bytes, as an object store's reads hand it over."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def write_pcap(path: Path, packets: list[Packet], nanosecond: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(global_header(nanosecond=nanosecond))
        for p in packets:
            fh.write(record(p, nanosecond))


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    """Rows of the given fields for every packet, as tshark reads the file."""
    args = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=,"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    assert "appears to be damaged" not in out.stderr, out.stderr
    return [line.split(",") for line in out.stdout.splitlines()]


# What Wireshark shows of a pcapng packet's machine and direction (pcapng downloads and
# live streams), with its UDP destination port.
MACHINE_FIELDS = (
    "frame.interface_name",
    "frame.interface_description",
    "udp.dstport",
    "frame.packet_flags_direction",
)
