"""A capture table in the real kernel: which packets it logs, how often, and their stamps."""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from edgepcap import netns, nft
from edgepcap.filters import FilterV1
from edgepcap.lab.topology import link
from edgepcap.nflog import NflogSocket
from edgepcap.pcap import Packet
from tests.packets import udp

A_MAC, B_MAC = "02:00:00:00:10:01", "02:00:00:00:10:02"
GROUP = 2901
PREFIX = "203.0.113.0/24"
OUTSIDE = "198.51.100.1"


@contextlib.contextmanager
def wire() -> Iterator[tuple[socket.socket, str]]:
    """A sender's raw socket on a veth whose other end is in namespace `b` (yielded)."""
    tag = secrets.token_hex(3)
    a, b = f"epnft{tag}-a", f"epnft{tag}-b"
    sender = None
    try:
        for n in (a, b):
            netns.add(n)
        link(a, "a0", b, "b0")
        netns.ip(a, "link", "set", "a0", "address", A_MAC)
        netns.ip(b, "link", "set", "b0", "address", B_MAC)
        netns.ip(b, "addr", "add", "198.18.210.2/30", "dev", "b0")
        sender = netns.run_in(a, socket.socket, socket.AF_PACKET, socket.SOCK_RAW)
        sender.bind(("a0", 0))
        yield sender, b
    finally:
        if sender is not None:
            sender.close()
        for n in (a, b):
            netns.delete(n)


def send(sender: socket.socket, src: str, dst: str, dport: int = 5000) -> None:
    frame = bytes.fromhex(B_MAC.replace(":", "") + A_MAC.replace(":", "")) + b"\x08\x00"
    sender.send(frame + udp(src, dst, 4000, dport))


def addresses(p: Packet) -> tuple[str, str, int]:
    src, dst = ipaddress.ip_address(p.data[12:16]), ipaddress.ip_address(p.data[16:20])
    return str(src), str(dst), int.from_bytes(p.data[22:24], "big")


def read(sock: NflogSocket, count: int, timeout: float = 5.0) -> list[Packet]:
    got: list[Packet] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += sock.receive(0.1)
    return got


# Prefixes beside PREFIX. With three of them the table tests the account's four prefixes
# as compares, one rule each; with all four (more than nft.INLINE_PREFIXES), as a set.
MORE = ["192.0.2.64/26", "198.51.100.64/26", "198.51.100.128/26", "192.0.2.128/26"]
PREFIXES = {"one": [PREFIX], "compares": [PREFIX, *MORE[:3]], "set": [PREFIX, *MORE]}


@pytest.fixture(params=list(PREFIXES))
def capture(request):
    prefixes = PREFIXES[request.param]
    assert (len(prefixes) > nft.INLINE_PREFIXES) == (request.param == "set")
    with wire() as (sender, ns):
        rule = nft.CaptureRule(
            table="edgepcap_nfttest",
            prefixes=[ipaddress.ip_network(p) for p in prefixes],
            filter=FilterV1(protocol=17, destination_port=5000),
            group=GROUP,
        )
        sock = netns.run_in(ns, NflogSocket, GROUP)
        try:
            nft.install(rule, ns)
            listing = subprocess.run(
                netns.argv(ns, ["nft", "list", "table", "inet", rule.table]),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert ("@pfx4" in listing) == (request.param == "set"), listing
            yield sender, sock, ns, rule.table, rule.prefixes
        finally:
            sock.close()


def test_each_packet_of_the_prefixes_is_logged_once_in_either_direction(capture):
    sender, sock, ns, table, prefixes = capture
    cases = [
        (OUTSIDE, "203.0.113.5", 5000),  # to the prefix
        ("203.0.113.6", OUTSIDE, 5000),  # from it
        ("203.0.113.7", "203.0.113.8", 5000),  # between two of its addresses: once
        (OUTSIDE, "192.0.2.1", 5000),  # neither: never
        (OUTSIDE, "203.0.113.5", 5001),  # the filter's port does not match
        ("203.0.113.9", "203.0.113.10", 5000),
        (OUTSIDE, "192.0.2.70", 5000),  # to the second prefix, where there is one
        ("203.0.113.11", "192.0.2.71", 5000),  # from the first to the second: once
        ("192.0.2.72", "198.51.100.200", 5000),  # from the second, to none of them
    ]
    for src, dst, port in cases:
        send(sender, src, dst, port)
    ours = lambda a: any(ipaddress.ip_address(a) in net for net in prefixes)  # noqa: E731
    want = [c for c in cases if c[2] == 5000 and (ours(c[0]) or ours(c[1]))]
    assert len(want) == {1: 5, 4: 7, 5: 7}[len(prefixes)]
    got = read(sock, len(want) + 1, timeout=1.0)  # one more than expected: none may come
    assert [addresses(p) for p in got] == want
    assert nft.counters(table, ns)[0] == len(want)


def test_logged_packets_carry_the_time_they_arrived(capture):
    sender, sock, _ns, _table, _prefixes = capture
    send(sender, OUTSIDE, "203.0.113.5")
    assert len(read(sock, 1)) == 1  # on kernels before 6.6 this turns stamping on
    windows = []
    for i in range(3):
        before = time.time_ns()
        send(sender, OUTSIDE, f"203.0.113.{20 + i}")
        windows.append((before, time.time_ns()))
        time.sleep(0.05)
    got = read(sock, 3)
    assert len(got) == 3
    for p, (before, after) in zip(got, windows, strict=True):
        # Microsecond stamps: allow the rounding. The reader's own clock would put every
        # packet after the last send.
        assert before - 1000 <= p.ts_ns <= after + 1000, (p.ts_ns, before, after)


def test_a_second_capture_of_the_same_traffic_gets_every_packet_too(capture):
    # Each capture's chain ends its own walk with `accept`; another table on the same
    # hook still sees the packet, so two captures never steal packets from each other.
    sender, sock, ns, _table, _prefixes = capture
    second = nft.CaptureRule(
        table="edgepcap_nfttest2",
        prefixes=[ipaddress.ip_network("203.0.113.0/25")],
        filter=FilterV1(protocol=17),
        group=GROUP + 1,
    )
    other = netns.run_in(ns, NflogSocket, GROUP + 1)
    try:
        nft.install(second, ns)
        for i in range(4):
            send(sender, OUTSIDE, f"203.0.113.{100 + 10 * i}", 5000)  # .100 .110 .120 .130
        first_got = read(sock, 5, timeout=1.0)
        second_got = read(other, 4, timeout=1.0)
        assert [addresses(p)[1] for p in first_got] == [
            f"203.0.113.{100 + 10 * i}" for i in range(4)
        ]
        assert [addresses(p)[1] for p in second_got] == [
            "203.0.113.100",
            "203.0.113.110",
            "203.0.113.120",
        ]
    finally:
        other.close()
