"""The agent protocol's one home: what the agent builds is what the API reads."""

from __future__ import annotations

import pytest

from edgepcap.formats import protocol
from edgepcap.formats.pcapfile import Packet
from edgepcap.formats.pcapng import INBOUND, OUTBOUND
from edgepcap.formats.protocol import OUTBOUND_RUNS, Outbound, Report, directions


def test_the_report_the_agent_builds_has_the_fields_the_api_reads():
    # ReportWire types the agent's dicts; Report validates them on the API's side.
    assert list(protocol.ReportWire.__annotations__) == list(protocol.Report.model_fields)


def test_an_answer_takes_what_it_knows_and_defaults_the_rest():
    answer = protocol.Answer.from_wire({"stop": True, "new_field_of_a_later_api": 1})
    assert answer.stop is True
    assert protocol.Answer.from_wire({}) == protocol.Answer()


def test_object_names_are_the_machines_folder_and_cloudflares_file_name():
    assert protocol.object_name("ord01", "a" * 32) == f"ord01/pcap_{'a' * 32}.pcap"


def test_outbound_runs_say_which_packets_the_machine_sent_and_read_back_in_order():
    sent = {1, 2, 3, 7, 9, 10}
    outbound = Outbound()
    for ordinal in range(12):
        if ordinal in sent:
            outbound.add(ordinal)
    assert outbound.runs == [[1, 4], [7, 8], [9, 11]] and outbound.known is None
    direction = directions(outbound.runs, outbound.known)
    ways = [direction(Packet(0, 0, b"")) for _ in range(12)]
    assert ways == [OUTBOUND if i in sent else INBOUND for i in range(12)]


def test_past_its_runs_the_direction_is_unknown_not_guessed():
    outbound = Outbound(limit=2)
    for ordinal in (0, 2, 4, 6):  # four runs of one; room for two
        outbound.add(ordinal)
    assert outbound.runs == [[0, 1], [2, 3]] and outbound.known == 4
    direction = directions(outbound.runs, outbound.known)
    ways = [direction(Packet(0, 0, b"")) for _ in range(7)]
    assert ways == [OUTBOUND, INBOUND, OUTBOUND, INBOUND, None, None, None]
    # The report carries them, bounded: a longer list is refused.
    Report(state="done", outbound=[(0, 1)] * OUTBOUND_RUNS, directions_known=4)
    with pytest.raises(ValueError):
        Report(state="done", outbound=[(0, 1)] * (OUTBOUND_RUNS + 1))


def test_an_end_report_with_all_its_runs_fits_the_apis_body_limit():
    import json

    from edgepcap.api.guard import MAX_BODY

    # The worst case: alternating directions late in a long capture (10-digit ordinals).
    start = 9_000_000_000
    runs = [[start + 2 * i, start + 2 * i + 1] for i in range(OUTBOUND_RUNS)]
    report = {
        "machine": "m" * 64,
        "boot_id": "b" * 32,
        "state": "done",
        "packets": start,
        "outbound": runs,
        "directions_known": start,
        "error": None,
        "object_name": "m" * 64 + "/pcap_" + "a" * 32 + ".pcap",
    }
    assert len(json.dumps(report).encode()) < MAX_BODY // 2


def test_a_live_batch_carries_its_runs_before_its_records():
    body = protocol.live_body(b"RECORDS", [[3, 5], [7, 8]])
    assert protocol.split_live_body(body) == ("3-5,7-8", b"RECORDS")
    assert protocol.parse_runs("3-5,7-8", 3, 5) == [[3, 5], [7, 8]]
    for bad in (b"\x00", b"\x00\x00\x00\x09short"):
        with pytest.raises(ValueError):
            protocol.split_live_body(bad)
    for text in ("5-3", "3-5,4-6", "2-4", "a-b", "7-9"):
        with pytest.raises(ValueError):
            protocol.parse_runs(text, 3, 5)
