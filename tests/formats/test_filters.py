"""The filter summary: the CLI's text, which the dashboard's filterSummary copies."""

from edgepcap.formats.filters import summary


def test_summary_of_no_filter_is_all_packets() -> None:
    assert summary({}) == "all packets"


def test_summary_names_each_side_and_the_protocol() -> None:
    f = {"source_address": "192.0.2.1", "source_port": 53, "protocol": 17}
    assert summary(f) == "192.0.2.1:53 → any proto 17"
    assert summary({"destination_port": 443}) == "any → any:443"
