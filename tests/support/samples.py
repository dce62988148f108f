"""Sample records as an agent would ship them, for the sample-store and ingest tests."""

from __future__ import annotations

import ipaddress
import struct

import httpx
import numpy as np

from edgepcap.formats import samples as records
from edgepcap.formats.pcapfile import Reader
from tests.support.api import SIMPLE
from tests.support.packets import udp
from tests.support.servers import MachineHeartbeat


def claim(specs: list[tuple[str, str]], account_id: str, ts_ns: int) -> np.ndarray:
    """Wire records of UDP packets (src, dst) all filed under `account_id`, whatever their
    addresses: what a wrong attribution, or a forging agent, would send."""
    snaps = [udp(src, dst, 1000, 53, b"p" * 200) for src, dst in specs]
    return owned_by(account_id, snaps, [ts_ns] * len(snaps))


def icmp(src: str, dst: str, size: int = 84) -> bytes:
    """An IPv4 ICMP echo request of `size` bytes (no ports: its port groups are "none")."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 1, 0, 64, 1, 0, s.packed, d.packed)
    return header + b"\x08\x00" + b"\0" * (size - 22)


def owned_by(account_id: str, snaps: list[bytes], ts_ns: list[int]) -> np.ndarray:
    """Wire records of packet snapshots, filed under `account_id` as the agent files them."""
    rows = records.parse(snaps, ts_ns, [len(s) for s in snaps])
    wire = np.zeros(len(rows), dtype=records.WIRE)
    for name in records.STORED.names:
        wire[name] = rows[name]
    wire["account"] = np.frombuffer(bytes.fromhex(account_id), dtype=f"V{records.ACCOUNT_BYTES}")[0]
    return wire


def ship(machine: MachineHeartbeat, wire: np.ndarray) -> dict:
    """Post a sample batch as `machine`'s agent does; the control plane's answer."""
    r = machine.http.post(
        "/samples",
        params=machine.me,
        content=wire.tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    return r.json()


def sampled(server, account):
    """The account's sample capture of the last minute: (source, destination) of each packet."""
    auth = {"Authorization": f"Bearer {account['api_token']}"}
    base = f"{server.api}/accounts/{account['id']}/pcaps"
    r = httpx.post(
        base,
        headers=auth,
        json=SIMPLE,
    )
    assert r.status_code == 200, r.text
    pcap = r.json()["result"]
    body = httpx.get(f"{base}/{pcap['id']}/download", headers=auth).content
    out = []
    for packet in Reader([body]):
        v4 = packet.data[0] >> 4 == 4
        src, dst = (
            (packet.data[12:16], packet.data[16:20])
            if v4
            else (
                packet.data[8:24],
                packet.data[24:40],
            )
        )
        out.append((str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst))))
    assert pcap["packets_captured"] == len(out)
    return out
