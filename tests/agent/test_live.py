"""The agent's live copies: a bounded queue that drops whole batches and counts them,
sends of contiguous batches joined (the sending thread itself runs in the lab tests)."""

from __future__ import annotations

from edgepcap.agent import live
from edgepcap.agent.live import LiveSender
from edgepcap.formats import protocol


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
    assert sender._take() == (b"x" * 60, 0, 3, [[1, 2]])
    assert sender._take() == (b"z" * 40, 5, 1, [])
    assert sender.queued == 0


def test_contiguous_offers_go_in_one_send_up_to_the_batch_limit(monkeypatch):
    monkeypatch.setattr(protocol, "LIVE_MAX_BYTES", 100)
    sender = LiveSender(None, "a" * 32)  # type: ignore[arg-type]
    outbound = protocol.Outbound()
    for i in range(3):
        sender.offer(b"r" * 40, 2 * i, 2, outbound)
    assert sender._take() == (b"r" * 80, 0, 4, [])
    assert sender._take() == (b"r" * 40, 4, 2, [])
