"""How a full capture ends once its machines have all ended their parts (control/completion.py):
in process, on a real SQLite database, driven with the end reports agents send. Checked with
what a user reads back: the capture's status, `end_reason`, totals and `error_message` (the
failed parts and kernel drops), and the objects it is made of.
"""

from __future__ import annotations

from edgepcap.control import execution
from edgepcap.formats import protocol
from tests.support.control import TWO, done, full_capture, read, report


def test_the_machines_end_reports_finish_the_capture(db, root):
    pid = full_capture(db, root, TWO, packet_limit=100)
    for m in TWO:
        report(db, m, pid, want_packets=20)
    report(db, "ord01", pid, **done("ord01", pid, packets=5, bytes=300))
    pcap = read(db, pid)
    assert (pcap.status, pcap.finished, pcap.packets_captured) == ("running", None, 5)
    report(db, "ord02", pid, **done("ord02", pid, packets=7, bytes=400, dropped=2))
    pcap = read(db, pid)
    assert pcap.status == "success" and pcap.finished is not None
    assert (pcap.packets_captured, pcap.bytes_captured, pcap.packets_left) == (12, 700, 88)
    assert "ord02 lost 2 packets" in pcap.error_message
    assert execution.reported_objects(pcap) == [
        protocol.object_name("ord01", pid),
        protocol.object_name("ord02", pid),
    ]


def test_a_failed_part_is_told_in_a_capture_that_succeeds(db, root):
    pid = full_capture(db, root, TWO, packet_limit=100)
    report(db, "ord01", pid, **done("ord01", pid, packets=4))
    report(db, "ord02", pid, state="failed", error="disk full")
    pcap = read(db, pid)
    assert (pcap.status, pcap.end_reason) == ("success", None)
    assert pcap.error_message == "ord02: disk full"
    assert execution.reported_objects(pcap) == [protocol.object_name("ord01", pid)]


def test_a_capture_whose_machines_all_failed_fails(db, root):
    pid = full_capture(db, root, TWO, packet_limit=100)
    for m in TWO:
        report(db, m, pid, state="failed", error="no nflog")
    pcap = read(db, pid)
    assert (pcap.status, pcap.end_reason) == ("failed", protocol.ERROR)
    assert pcap.error_message == "ord01: no nflog; ord02: no nflog"
