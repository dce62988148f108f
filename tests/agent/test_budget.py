"""A limited capture's budget on one machine, in process: a packet is written only whole and
only inside a lease, and each report asks for what the waiting packets need."""

from __future__ import annotations

from edgepcap.agent import budget
from edgepcap.agent.budget import Leases
from edgepcap.formats.pcapfile import RECORD_HEADER, Packet
from edgepcap.formats.protocol import Answer, Outbound


def packets(n: int, size: int = 100) -> list[Packet]:
    return [Packet(ts_ns=i * 1000, orig_len=size, data=bytes(size)) for i in range(n)]


def report(sent_packets: int = 0, sent_bytes: int = 0) -> dict:
    return {"state": "running", "packets": sent_packets, "bytes": sent_bytes}


def test_nothing_is_written_before_a_lease_and_then_exactly_what_it_covers():
    leases = Leases(packet_limit=10, byte_limit=None)
    batch = bytearray()
    assert leases.admit(packets(5), batch, Outbound(), 0) == (0, 0) and batch == b""
    leases.take(Answer(grant_packets=3))
    assert leases.admit([], batch, Outbound(), 0) == (3, 300)
    assert len(batch) == 3 * (RECORD_HEADER.size + 100)
    assert len(leases.pending) == 2


def test_a_byte_lease_writes_a_packet_only_whole():
    leases = Leases(packet_limit=None, byte_limit=1000)
    leases.take(Answer(grant_bytes=250))
    batch = bytearray()
    # The third would need 100 more.
    assert leases.admit(packets(3), batch, Outbound(), 0) == (2, 200)
    wire = report()
    leases.ask(wire, now=1.0, min_span=1.0)
    assert wire["need_bytes"] == 100 and wire["need_packets"] == 0
    # At least 64 KiB (no rate yet), less the 50 bytes still leased.
    assert wire["want_bytes"] == (64 << 10) - 50


def test_an_unlimited_capture_writes_everything_at_once():
    leases = Leases(packet_limit=None, byte_limit=None)
    batch = bytearray()
    assert leases.admit(packets(4), batch, Outbound(), 0) == (4, 400)
    wire = report()
    leases.ask(wire, now=1.0, min_span=1.0)
    assert "want_packets" not in wire and "need_packets" not in wire


def test_a_release_gives_back_every_lease_in_the_next_report():
    leases = Leases(packet_limit=100, byte_limit=None)
    leases.take(Answer(grant_packets=40))
    leases.take(Answer(release=True))
    wire = report()
    leases.ask(wire, now=1.0, min_span=1.0)
    assert wire["release_packets"] == 40 and leases.budget.packets == 0
    batch = bytearray()
    assert leases.admit(packets(1), batch, Outbound(), 0) == (0, 0)  # nothing left to write with


def test_too_many_waiting_packets_are_dropped_and_counted():
    most = budget.PENDING_MAX_PACKETS
    leases = Leases(packet_limit=10, byte_limit=None)
    assert leases.admit(packets(most + 2, size=1), bytearray(), Outbound(), 0) == (0, 0)
    assert len(leases.pending) == most and leases.dropped == 2
    assert leases.discard() == most and leases.pending_bytes == 0
