"""The filter summary: the CLI's text, which the dashboard's filterSummary copies."""

from edgepcap.formats.filters import summary


def test_summary_of_no_filter_is_all_packets() -> None:
    assert summary({}) == "all packets"


def test_summary_names_each_side_and_the_protocol() -> None:
    f = {"source_address": "192.0.2.1", "source_port": 53, "protocol": 17}
    assert summary(f) == "192.0.2.1:53 → any proto 17"
    assert summary({"destination_port": 443}) == "any → any:443"


def test_summary_of_the_fields_that_match_either_direction() -> None:
    assert summary({"port": 5555, "protocol": 17}) == "port 5555 either way proto 17"
    assert summary({"address": "203.0.113.9", "port": 80}) == "203.0.113.9:80 either way"
    both = {"source_address": "192.0.2.1", "address": "203.0.113.9"}
    assert summary(both) == "192.0.2.1 → any 203.0.113.9 either way"


def test_address_and_port_are_validated_as_the_others() -> None:
    import pytest
    from pydantic import ValidationError

    from edgepcap.formats.filters import FilterV1

    f = FilterV1(address="2001:DB8::1", port=53.0)
    assert f.as_dict() == {"address": "2001:db8::1", "port": 53} and f.has_ports
    for bad in ({"address": "203.0.113.0/24"}, {"port": 70000}, {"address": "::ffff:1.2.3.4"}):
        with pytest.raises(ValidationError):
            FilterV1(**bad)
