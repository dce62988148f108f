"""A capture table in the real kernel: which packets it logs, how often, and their stamps."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time

import pytest

from edgepcap.agent.kernel import netns, nft
from edgepcap.agent.kernel.nflog import NflogSocket
from edgepcap.formats.filters import FilterV1
from edgepcap.formats.pcapfile import Packet
from tests.support.kernel import OUTSIDE, send, wire
from tests.support.statistics import binomial_interval

pytestmark = pytest.mark.root  # namespaces, nftables, NFLOG sockets

GROUP = 2901
PREFIX = "203.0.113.0/24"


def addresses(p: Packet) -> tuple[str, str, int]:
    if p.data[0] >> 4 == 6:
        src, dst = ipaddress.ip_address(p.data[8:24]), ipaddress.ip_address(p.data[24:40])
        return str(src), str(dst), int.from_bytes(p.data[42:44], "big")
    src, dst = ipaddress.ip_address(p.data[12:16]), ipaddress.ip_address(p.data[16:20])
    return str(src), str(dst), int.from_bytes(p.data[22:24], "big")


def read(sock: NflogSocket, count: int, timeout: float = 5.0) -> list[Packet]:
    got: list[Packet] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += sock.receive(0.1)
    return got


# Prefixes beside PREFIX and PREFIX6. With three of each the table tests the account's
# four prefixes per IP version as compares, one rule each; with all four (more than
# nft.INLINE_PREFIXES), as a set.
PREFIX6, OUTSIDE6 = "2001:db8:1::/48", "2001:db8:ff::1"
MORE = ["192.0.2.64/26", "198.51.100.64/26", "198.51.100.128/26", "192.0.2.128/26"]
# Not adjacent: the table collapses prefixes that are, which would leave fewer.
MORE6 = ["2001:db8:2::/48", "2001:db8:4::/48", "2001:db8:6::/48", "2001:db8:8::/48"]
PREFIXES = {
    "one": [PREFIX, PREFIX6],
    "compares": [PREFIX, *MORE[:3], PREFIX6, *MORE6[:3]],
    "set": [PREFIX, *MORE, PREFIX6, *MORE6],
}


@pytest.fixture(params=list(PREFIXES))
def capture(request):
    prefixes = PREFIXES[request.param]
    assert (len(prefixes) > 2 * nft.INLINE_PREFIXES) == (request.param == "set")
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
            listing = "".join(
                subprocess.run(
                    netns.argv(ns, ["nft", "list", "table", family, rule.table]),
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                for family in ("ip", "ip6")
            )
            for setname in ("@pfx4", "@pfx6"):
                assert (setname in listing) == (request.param == "set"), listing
            yield sender, sock, ns, rule.table, request.param
        finally:
            sock.close()


ALL, MANY, SET = {"one", "compares", "set"}, {"compares", "set"}, {"set"}


def test_each_packet_of_the_prefixes_is_logged_once_in_either_direction(capture):
    sender, sock, ns, table, layout = capture
    # (source, destination, port, the layouts whose prefixes make it logged)
    cases = [
        (OUTSIDE, "203.0.113.5", 5000, ALL),  # to the prefix
        ("203.0.113.6", OUTSIDE, 5000, ALL),  # from it
        ("203.0.113.7", "203.0.113.8", 5000, ALL),  # between two of its addresses: once
        (OUTSIDE, "192.0.2.1", 5000, set()),  # neither: never
        (OUTSIDE, "203.0.113.5", 5001, set()),  # the filter's port does not match
        ("203.0.113.9", "203.0.113.10", 5000, ALL),
        (OUTSIDE, "192.0.2.70", 5000, MANY),  # to the second prefix
        ("203.0.113.11", "192.0.2.71", 5000, ALL),  # from the first to the second: once
        ("192.0.2.72", "198.51.100.200", 5000, MANY),  # from the second, to none of them
        (OUTSIDE, "198.51.100.150", 5000, MANY),  # the fourth
        (OUTSIDE, "192.0.2.150", 5000, SET),  # the fifth
        (OUTSIDE6, "2001:db8:1::5", 5000, ALL),  # IPv6: to, from, between
        ("2001:db8:1::6", OUTSIDE6, 5000, ALL),
        ("2001:db8:1::7", "2001:db8:2::7", 5000, ALL),
        (OUTSIDE6, "2001:db8:4::8", 5000, MANY),
        ("2001:db8:8::9", OUTSIDE6, 5000, SET),
        (OUTSIDE6, "2001:db8:9::1", 5000, set()),
        (OUTSIDE6, "2001:db8:1::5", 5001, set()),
    ]
    for src, dst, port, _ in cases:
        send(sender, src, dst, port)
    want = [c[:3] for c in cases if layout in c[3]]
    got = read(sock, len(want) + 1, timeout=1.0)  # one more than expected: none may come
    assert [addresses(p) for p in got] == want
    assert nft.counters(table, ns)[0] == len(want)


def test_logged_packets_carry_the_time_they_arrived(capture):
    sender, sock, _ns, _table, _layout = capture
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
    sender, sock, ns, _table, _layout = capture
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


def test_a_packet_the_machine_sends_itself_is_logged_once(capture):
    # It passes `output`, then comes back through loopback to `prerouting`: logged on
    # the second only, so a capture holds it once and the sampler draws once for it.
    _sender, sock, ns, table, _layout = capture
    netns.ip(ns, "addr", "add", "203.0.113.50/32", "dev", "lo")
    netns.ip(ns, "link", "set", "lo", "up")
    local = netns.run_in(ns, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        local.sendto(b"x" * 32, ("203.0.113.50", 5000))
        got = read(sock, 2, timeout=1.0)
    finally:
        local.close()
    assert [addresses(p)[1:] for p in got] == [("203.0.113.50", 5000)]
    assert nft.counters(table, ns)[0] == 1


@pytest.mark.parametrize("layout", ["compares", "set"])
def test_the_sample_draw_gives_each_packet_one_chance(layout):
    # 1 in 10, so that a second draw for some packets would show: a packet between two
    # of the account's prefixes has a rule for each, and one chance all the same.
    prefixes = [ipaddress.ip_network(p) for p in PREFIXES[layout]]
    rule = nft.CaptureRule(
        table="edgepcap_nftsample", prefixes=prefixes, group=GROUP, sample_mod=10
    )
    kinds = {
        "to": (OUTSIDE, "203.0.113.5"),
        "from": ("203.0.113.6", OUTSIDE),
        "between": ("203.0.113.7", "198.51.100.70"),
        "between6": ("2001:db8:1::7", "2001:db8:2::7"),
    }
    n = 2000
    with wire() as (sender, ns):
        sock = netns.run_in(ns, NflogSocket, GROUP)
        try:
            nft.install(rule, ns)
            for src, dst in kinds.values():
                for _ in range(n):
                    send(sender, src, dst)
            got: list[Packet] = []
            while packets := sock.receive(0.5):
                got += packets
            counted = nft.counters(rule.table, ns)[0]
        finally:
            sock.close()
    low, high = binomial_interval(n, p=0.1)
    for kind, (src, dst) in kinds.items():
        logged = sum(1 for p in got if addresses(p)[:2] == (src, dst))
        assert low <= logged <= high, (kind, logged, (low, high))
    assert counted == len(got)


def ports(p: Packet) -> tuple[int, int]:
    at = 40 if p.data[0] >> 4 == 6 else 20
    return int.from_bytes(p.data[at : at + 2], "big"), int.from_bytes(
        p.data[at + 2 : at + 4], "big"
    )


@pytest.mark.parametrize("layout", ["one", "set"])
def test_address_and_port_match_either_direction_each_packet_once(layout):
    rule = nft.CaptureRule(
        table="edgepcap_nfteither",
        prefixes=[ipaddress.ip_network(p) for p in PREFIXES[layout]],
        filter=FilterV1(protocol=17, address="203.0.113.5", port=5000),
        group=GROUP,
    )
    # (source, destination, source port, destination port, logged)
    cases = [
        (OUTSIDE, "203.0.113.5", 4000, 5000, True),  # to the address, to the port
        ("203.0.113.5", OUTSIDE, 5000, 4000, True),  # the reply: from both
        ("203.0.113.5", OUTSIDE, 4000, 5000, True),  # from the address, to the port
        (OUTSIDE, "203.0.113.5", 5000, 5000, True),  # both ports: logged once
        ("203.0.113.5", "203.0.113.5", 5000, 5000, True),  # every alternative: once
        (OUTSIDE, "203.0.113.6", 4000, 5000, False),  # another address
        (OUTSIDE, "203.0.113.5", 4000, 4001, False),  # another port
        (OUTSIDE6, "2001:db8:1::5", 4000, 5000, False),  # the address is IPv4
    ]
    with wire() as (sender, ns):
        sock = netns.run_in(ns, NflogSocket, GROUP)
        try:
            nft.install(rule, ns)
            for src, dst, sport, dport, _ in cases:
                send(sender, src, dst, dport, sport)
            want = [(src, dst, sport, dport) for src, dst, sport, dport, logged in cases if logged]
            got = read(sock, len(want) + 1, timeout=1.0)
            assert [(*addresses(p)[:2], *ports(p)) for p in got] == want
            assert nft.counters(rule.table, ns)[0] == len(want)
        finally:
            sock.close()


def test_one_draw_per_packet_when_a_filter_matches_either_direction():
    # A packet from port 5000 to port 5000 matches both of the filter's alternatives: a
    # draw in each would log it 1 - 0.9² = 19 % of the time, not 10 %.
    rule = nft.CaptureRule(
        table="edgepcap_nfteitherdraw",
        prefixes=[ipaddress.ip_network(PREFIX)],
        filter=FilterV1(port=5000),
        group=GROUP,
        sample_mod=10,
    )
    n = 2000
    with wire() as (sender, ns):
        sock = netns.run_in(ns, NflogSocket, GROUP)
        try:
            nft.install(rule, ns)
            for _ in range(n):
                send(sender, OUTSIDE, "203.0.113.5", 5000, 5000)
            got: list[Packet] = []
            while packets := sock.receive(0.5):
                got += packets
        finally:
            sock.close()
    low, high = binomial_interval(n, p=0.1)
    assert low <= len(got) <= high, (len(got), (low, high))
