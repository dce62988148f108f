"""The agent protocol's one home: what the agent builds is what the API reads."""

from __future__ import annotations

from edgepcap.formats import protocol


def test_the_report_the_agent_builds_has_the_fields_the_api_reads():
    # ReportWire types the agent's dicts; Report validates them on the API's side.
    assert list(protocol.ReportWire.__annotations__) == list(protocol.Report.model_fields)


def test_an_answer_takes_what_it_knows_and_defaults_the_rest():
    answer = protocol.Answer.from_wire({"stop": True, "new_field_of_a_later_api": 1})
    assert answer.stop is True
    assert protocol.Answer.from_wire({}) == protocol.Answer()


def test_object_names_are_the_machines_folder_and_cloudflares_file_name():
    assert protocol.object_name("ord01", "a" * 32) == f"ord01/pcap_{'a' * 32}.pcap"
