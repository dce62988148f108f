"""Overdue full captures: failed after their grace, counted from when agents could be heard."""

from __future__ import annotations

import datetime as dt

from edgepcap.control import captures
from edgepcap.control.accounts import create_account
from edgepcap.control.db import open_database
from edgepcap.control.models import CaptureMachine, Pcap, utcnow


def test_an_outage_gives_a_capture_its_grace_again(tmp_path):
    db = open_database(tmp_path, None)
    now = utcnow()
    with db.session() as s:
        account, _ = create_account(s, "late", ["203.0.113.0/24"])
        pcap = Pcap(
            id="f" * 32,
            account_id=account.id,
            type="full",
            system="magic-transit",
            status="running",
            time_limit=10,
            colo_name="ORD",
            submitted=now - dt.timedelta(minutes=5),  # ended 4 min 50 s ago
        )
        pcap.machines = [CaptureMachine(machine="ord01", state="running")]
        s.add(pcap)
    # The database was unreachable until 10 s ago: the end report may still come.
    with db.session() as s:
        captures.expire_overdue(s, now - dt.timedelta(seconds=10))
    with db.session() as s:
        assert s.get(Pcap, "f" * 32).status == "running"
    # Heard all along: long overdue, failed, saying why.
    with db.session() as s:
        captures.expire_overdue(s, now - dt.timedelta(hours=1))
    with db.session() as s:
        late = s.get(Pcap, "f" * 32)
        assert late.status == "failed"
        assert "did not report the capture finished within 10 s" in late.error_message
    db.close()
