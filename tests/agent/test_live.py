"""The agent's live copies: a bounded queue that drops whole batches and counts them,
sends of contiguous batches joined, big batches cut at record boundaries (the sending
thread itself runs in the lab tests)."""

from __future__ import annotations

from edgepcap.agent import live
from edgepcap.agent.live import LiveSender, Offer
from edgepcap.formats import protocol
from edgepcap.formats.pcapfile import Packet, record


def test_offers_beyond_the_queue_are_dropped_whole_and_counted(monkeypatch):
    monkeypatch.setattr(live, "QUEUE_BYTES", 100)
    sender = LiveSender(None, "a" * 32)  # type: ignore[arg-type]
    outbound = protocol.Outbound()
    outbound.add(1)
    sender.offer(b"x" * 60, 0, 3, outbound)
    sender.offer(b"y" * 60, 3, 2, outbound)  # would make 120 bytes: dropped
    sender.offer(b"z" * 40, 5, 1, outbound)
    assert sender.dropped == 2 and sender.queued == 100
    # One send takes the contiguous batches; a gap (3..4 dropped) starts the next send.
    assert sender._take() == Offer(b"x" * 60, 0, 3, [[1, 2]], None)
    assert sender._take() == Offer(b"z" * 40, 5, 1, [], None)
    assert sender.queued == 0


def test_contiguous_offers_go_in_one_send_up_to_the_piece_size(monkeypatch):
    monkeypatch.setattr(live, "PIECE", 100)
    sender = LiveSender(None, "a" * 32)  # type: ignore[arg-type]
    outbound = protocol.Outbound()
    for i in range(3):
        sender.offer(b"r" * 40, 2 * i, 2, outbound)
    assert sender._take() == Offer(b"r" * 80, 0, 4, [], None)
    assert sender._take() == Offer(b"r" * 40, 4, 2, [], None)


def test_a_big_offer_is_cut_at_record_boundaries_and_says_what_is_unknown(monkeypatch):
    monkeypatch.setattr(live, "PIECE", 200)
    sender = LiveSender(None, "a" * 32)  # type: ignore[arg-type]
    outbound = protocol.Outbound(limit=1)
    outbound.add(10)
    outbound.add(12)  # past the one run it keeps: unknown from packet 12 on
    one = record(Packet(1, 60, b"p" * 60))  # 76 bytes
    sender.offer(one * 5, 10, 5, outbound)
    pieces = list(sender.queue)
    assert [(p.first, p.count, len(p.records)) for p in pieces] == [
        (10, 2, 152),
        (12, 2, 152),
        (14, 1, 76),
    ]
    assert pieces[0].runs == [[10, 11]] and all(p.known == 12 for p in pieces)
