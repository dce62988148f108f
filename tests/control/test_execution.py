"""A full capture's budget leases across machines, in process (control/execution.py).

A capture is admitted through `captures.create` on a real SQLite database, assigned to
2-3 live machines, and driven with the reports agents send (`execution.report`). Checked
with what a user reads back: the unleased budget (`packets_left`, `bytes_left`), what each
machine was granted, the answer (stop and why, release, grants), and how a limit or a stop
ends the capture (`status`, `end_reason`, `packets_captured`; what its parts' outcomes make
of it is test_completion.py's). Also `assign` without a live machine, and a seeded random
walk of honest agents that must never overdraw either limit.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest

from edgepcap.control import captures, execution, fleet, polls
from edgepcap.control.accounts import create_account
from edgepcap.control.db import Database
from edgepcap.control.models import Account, Machine, Pcap, utcnow
from edgepcap.control.settings import Limits
from edgepcap.formats import protocol
from edgepcap.formats.protocol import Answer
from tests.support.control import (
    BOOT,
    OTHER_BOOT,
    THREE,
    TWO,
    FullRequest,
    done,
    full_capture,
    proven_bucket,
    read,
    report,
)


def granted(pcap: Pcap) -> dict[str, int]:
    return {m.machine: m.granted_packets for m in pcap.machines}


def test_grants_never_exceed_the_limits_in_total(db, root):
    pid = full_capture(db, root, THREE, packet_limit=100, byte_limit=10_000)
    assert read(db, pid).packets_left == 100
    answers = [report(db, m, pid, want_packets=64, want_bytes=4096) for m in THREE]
    assert [(a.grant_packets, a.grant_bytes) for a in answers] == [
        (64, 4096),
        (36, 4096),
        (0, 1808),
    ]
    # A machine that only wants more (needs nothing now) is neither stopped nor asked.
    assert not any(a.stop or a.release for a in answers)
    pcap = read(db, pid)
    assert pcap.status == "running"
    assert (pcap.packets_left, pcap.bytes_left) == (0, 0)
    assert granted(pcap) == {"ord01": 64, "ord02": 36, "ord03": 0}
    assert sum(m.granted_bytes for m in pcap.machines) == 10_000
    # Nothing more to give, however often it is asked for.
    assert report(db, "ord03", pid, want_packets=64).grant_packets == 0
    assert read(db, pid).packets_left == 0


def test_a_capture_without_limits_grants_nothing_and_never_stops(db, root):
    pid = full_capture(db, root, TWO)
    answer = report(db, "ord01", pid, packets=10**6, need_packets=1, want_packets=64)
    assert answer == Answer()
    pcap = read(db, pid)
    assert (pcap.packets_left, pcap.bytes_left, pcap.end_reason) == (None, None, None)


def test_an_end_report_gives_back_what_was_not_used(db, root):
    pid = full_capture(db, root, TWO, packet_limit=100, byte_limit=10_000)
    report(db, "ord01", pid, want_packets=64, want_bytes=6000)
    assert (read(db, pid).packets_left, read(db, pid).bytes_left) == (36, 4000)
    answer = report(db, "ord01", pid, **done("ord01", pid, packets=10, bytes=900))
    assert answer.stop
    pcap = read(db, pid)
    assert (pcap.packets_left, pcap.bytes_left) == (90, 9100)
    assert granted(pcap)["ord01"] == 10  # what it wrote stays spent
    assert pcap.status == "running"  # ord02 has not ended
    # The other machine can now have all of it.
    assert report(db, "ord02", pid, want_packets=500).grant_packets == 90


def test_a_packet_with_nothing_left_anywhere_ends_the_capture_by_packet_limit(db, root):
    pid = full_capture(db, root, TWO, packet_limit=10)
    assert report(db, "ord01", pid, want_packets=64).grant_packets == 10
    report(db, "ord02", pid)
    answer = report(db, "ord01", pid, packets=10, need_packets=1, want_packets=64)
    assert (answer.stop, answer.reason, answer.release) == (True, protocol.PACKET_LIMIT, False)
    assert answer.grant_packets == 0
    assert read(db, pid).end_reason == protocol.PACKET_LIMIT
    # The others are told too, on their next report and in the long poll's stops.
    assert report(db, "ord02", pid).reason == protocol.PACKET_LIMIT
    with db.session() as s:
        assert polls.stops(s.connection(), "ord02", [pid]) == [(pid, protocol.PACKET_LIMIT)]
    report(db, "ord01", pid, **done("ord01", pid, packets=10, end_reason=protocol.PACKET_LIMIT))
    report(db, "ord02", pid, **done("ord02", pid))
    pcap = read(db, pid)
    assert (pcap.status, pcap.end_reason, pcap.packets_captured) == (
        "success",
        protocol.PACKET_LIMIT,
        10,
    )


def test_a_packet_larger_than_what_is_left_ends_the_capture_by_byte_limit(db, root):
    pid = full_capture(db, root, TWO, byte_limit=1000)
    assert report(db, "ord01", pid, want_bytes=600).grant_bytes == 600
    report(db, "ord02", pid)
    # 400 bytes are left unleased and ord01 used its 600: a 500-byte packet never fits.
    answer = report(db, "ord01", pid, packets=4, bytes=600, need_bytes=500, want_bytes=500)
    assert (answer.stop, answer.reason) == (True, protocol.BYTE_LIMIT)
    pcap = read(db, pid)
    assert pcap.end_reason == protocol.BYTE_LIMIT
    assert pcap.packets_left is None  # no packet limit: none was ever counted
    assert pcap.bytes_left + sum(m.granted_bytes for m in pcap.machines) == 1000


def test_budget_held_elsewhere_is_reclaimed_and_released(db, root):
    pid = full_capture(db, root, TWO, packet_limit=100)
    assert report(db, "ord01", pid, want_packets=100).grant_packets == 100
    # ord02 has a packet to write; ord01 holds all 100 unused: no end, a reclaim.
    answer = report(db, "ord02", pid, need_packets=1, want_packets=64)
    assert (answer.stop, answer.release, answer.grant_packets) == (False, True, 0)
    pcap = read(db, pid)
    assert (pcap.reclaim, pcap.end_reason) == (True, None)
    # The holder is asked to give back on its next report, and its release returns it.
    assert report(db, "ord01", pid, packets=30).release
    report(db, "ord01", pid, packets=30, release_packets=70)
    pcap = read(db, pid)
    assert pcap.packets_left == 70
    assert granted(pcap) == {"ord01": 30, "ord02": 0}
    # Now the waiting machine is served and nobody is asked to release any more.
    answer = report(db, "ord02", pid, need_packets=1, want_packets=64)
    assert (answer.stop, answer.release, answer.grant_packets) == (False, False, 64)
    assert not read(db, pid).reclaim
    assert not report(db, "ord01", pid, packets=30).release


def test_a_release_returns_only_what_was_granted(db, root):
    pid = full_capture(db, root, TWO, packet_limit=100, byte_limit=5000)
    report(db, "ord01", pid, want_packets=40, want_bytes=2000)
    report(db, "ord01", pid, packets=5, bytes=500, release_packets=15, release_bytes=500)
    pcap = read(db, pid)
    assert (pcap.packets_left, pcap.bytes_left) == (75, 3500)
    # A release larger than the grant gives back the grant, not more.
    report(db, "ord02", pid, want_packets=10)
    report(db, "ord02", pid, release_packets=1000)
    pcap = read(db, pid)
    assert pcap.packets_left == 75
    assert pcap.packets_left + sum(granted(pcap).values()) == 100


def test_a_release_cannot_return_packets_already_written(db, root):
    pid = full_capture(db, root, TWO, packet_limit=100)
    report(db, "ord01", pid, want_packets=100)
    report(db, "ord01", pid, packets=60, release_packets=100)
    report(db, "ord02", pid, want_packets=100)
    pcap = read(db, pid)
    written = sum(m.packets for m in pcap.machines)
    assert written + (pcap.packets_left or 0) + granted(pcap)["ord02"] <= 100


def test_a_report_of_another_run_or_an_ended_part_is_told_to_stop(db, root):
    pid = full_capture(db, root, TWO, packet_limit=100)
    report(db, "ord01", pid, packets=1)
    stale = report(db, "ord01", pid, boot=OTHER_BOOT, packets=50, want_packets=64)
    assert stale.stop and stale.grant_packets == 0
    assert stale.reason == "this part of the capture has ended"
    pcap = read(db, pid)
    assert (pcap.packets_left, pcap.packets_captured) == (100, 1)  # nothing recorded
    report(db, "ord01", pid, **done("ord01", pid, packets=1))
    late = report(db, "ord01", pid, packets=2, want_packets=64)
    assert late.stop and late.grant_packets == 0
    assert read(db, pid).packets_left == 100
    unknown = report(db, "ord02", "0" * 32)
    assert (unknown.stop, unknown.reason) == (True, "unknown capture")


def test_a_stop_request_stops_every_machine(db, root):
    pid = full_capture(db, root, THREE, packet_limit=100)
    report(db, "ord01", pid, want_packets=10)
    report(db, "ord02", pid)
    with db.session() as s:
        captures.stop(s, read(db, pid).account_id, pid)
    pcap = read(db, pid)
    # ord03 never started: done at once; the running ones stop on their next report.
    assert {m.machine: m.state for m in pcap.machines} == {
        "ord01": "running",
        "ord02": "running",
        "ord03": "done",
    }
    answer = report(db, "ord01", pid, packets=3, want_packets=64)
    assert (answer.stop, answer.reason, answer.grant_packets) == (True, protocol.STOP, 0)
    assert read(db, pid).packets_left == 90
    with db.session() as s:
        assert polls.stops(s.connection(), "ord02", [pid]) == [(pid, protocol.STOP)]
    report(db, "ord01", pid, **done("ord01", pid, packets=3, end_reason=protocol.STOP))
    assert read(db, pid).status == "running"
    report(db, "ord02", pid, **done("ord02", pid, end_reason=protocol.STOP))
    pcap = read(db, pid)
    assert (pcap.status, pcap.end_reason, pcap.packets_captured) == ("success", "stop", 3)
    assert pcap.packets_left == 97


def test_the_time_limit_stops_a_machine(db, root):
    pid = full_capture(db, root, TWO, packet_limit=100, time_limit=30)
    report(db, "ord01", pid)
    assert not report(db, "ord01", pid, want_packets=10).stop
    with db.session() as s:  # 31 s later
        s.get_one(Pcap, pid).started -= dt.timedelta(seconds=31)
    answer = report(db, "ord01", pid, want_packets=10)
    assert (answer.stop, answer.reason, answer.grant_packets) == (True, protocol.TIME_LIMIT, 0)
    assert read(db, pid).packets_left == 90


def test_assign_fails_a_capture_without_a_live_machine(db, root):
    with db.session() as s:
        account, _ = create_account(s, "silent", ["198.51.100.0/24"])
        account_id = account.id
        for m in TWO:
            fleet.register(s, "ORD", m, BOOT).last_seen = utcnow() - dt.timedelta(minutes=1)
    conf = proven_bucket(db, account_id, root, "silent")
    with db.session() as s:
        account = s.get_one(Account, account_id)
        pcap = captures.create(s, account, FullRequest("ORD", conf, packet_limit=5), Limits())
        assert (pcap.status, pcap.end_reason) == ("failed", protocol.ERROR)
        assert "ord01, ord02 sent no heartbeat" in pcap.error_message
        assert pcap.machines == []
        # One live machine is enough, and only it is assigned.
        s.get_one(Machine, "ord02").last_seen = utcnow()
        live = Pcap(packet_limit=5)
        execution.assign(s, live, [s.get_one(Machine, m) for m in TWO])
        assert [m.machine for m in live.machines] == ["ord02"]
        assert live.packets_left == 5


class HonestAgent:
    """One machine as the agent runs it: packets arrive, are written only under a lease,
    and the report says what it needs, wants and gives back (agent/budget.py's rules)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: list[int] = []  # sizes of packets waiting for a lease
        self.held = [0, 0]  # packets, bytes leased and not yet used
        self.written = [0, 0]
        self.release_now = False
        self.ended = False

    def turn(self, rng: random.Random, db: Database, pcap_id: str) -> dict:
        self.pending += [rng.randint(60, 1500) for _ in range(rng.randint(0, 6))]
        while self.pending and self.held[0] >= 1 and self.held[1] >= self.pending[0]:
            size = self.pending.pop(0)
            self.held = [self.held[0] - 1, self.held[1] - size]
            self.written = [self.written[0] + 1, self.written[1] + size]
        rep = {"packets": self.written[0], "bytes": self.written[1]}
        if rng.random() < 0.02:
            rep.update(done(self.name, pcap_id))
        else:
            if self.release_now:
                rep["release_packets"], rep["release_bytes"] = self.held
                self.held, self.release_now = [0, 0], False
            if self.pending:
                rep.update(need_packets=1, need_bytes=self.pending[0])
                # About a batch ahead, as the agent asks (at least 16 packets, 16 kB).
                rep["want_packets"] = max(0, max(16, len(self.pending)) - self.held[0])
                rep["want_bytes"] = max(0, max(16_000, sum(self.pending)) - self.held[1])
        answer = report(db, self.name, pcap_id, **rep)
        self.held = [self.held[0] + answer.grant_packets, self.held[1] + answer.grant_bytes]
        self.release_now = answer.release
        if answer.stop and rep.get("state") != "done":
            end = {"packets": self.written[0], "bytes": self.written[1]}
            report(db, self.name, pcap_id, **done(self.name, pcap_id, **end))
        self.ended = answer.stop
        return rep


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    ("limits", "reached"),
    [((100, 10**6), protocol.PACKET_LIMIT), ((10**4, 60_000), protocol.BYTE_LIMIT)],
)
def test_honest_agents_never_overdraw_either_limit(db, root, seed, limits, reached):
    rng = random.Random(seed)
    pid = full_capture(db, root, THREE, packet_limit=limits[0], byte_limit=limits[1])
    agents = [HonestAgent(m) for m in THREE]
    released = 0
    for _step in range(300):
        running = [a for a in agents if not a.ended]
        if not running:
            break
        rep = rng.choice(running).turn(rng, db, pid)
        released += rep.get("release_packets", 0) + rep.get("release_bytes", 0)
        pcap = read(db, pid)
        # Leased and unleased budget add up to the limit; written never exceeds it.
        assert pcap.packets_left + sum(m.granted_packets for m in pcap.machines) == limits[0]
        assert pcap.bytes_left + sum(m.granted_bytes for m in pcap.machines) == limits[1]
        assert min(pcap.packets_left, pcap.bytes_left) >= 0
        assert sum(a.written[0] for a in agents) <= limits[0]
        assert sum(a.written[1] for a in agents) <= limits[1]
    pcap = read(db, pid)
    assert pcap.status == "success", [(m.machine, m.state) for m in pcap.machines]
    assert pcap.packets_captured == sum(a.written[0] for a in agents)
    assert pcap.bytes_captured == sum(a.written[1] for a in agents)
    # The walk reached what it is about: budget moved between machines, and the limit,
    # used up to less than the packet (at most 1500 bytes) that no longer fitted.
    assert released > 0
    assert pcap.end_reason == reached
    if reached == protocol.PACKET_LIMIT:
        assert pcap.packets_captured == limits[0]
    else:
        assert limits[1] - 1500 < pcap.bytes_captured <= limits[1]
