"""The agent checks every job itself before anything reaches the kernel (defence in depth)."""

from __future__ import annotations

import pytest

from edgepcap.formats.protocol import Job

GOOD = {
    "id": "a" * 32,
    "account_id": "b" * 32,
    "prefixes": ["203.0.113.0/25", "2001:db8:a::/48"],
    "filter_v1": {"protocol": 17, "destination_port": 53},
    "time_limit": 60,
    "packet_limit": 100,
    "byte_limit": None,
    "destination_conf": "file:///srv/buckets/x",
    "object_name": f"ord01/pcap_{'a' * 32}.pcap",
}


def test_a_well_formed_job_is_taken():
    job = Job.parse(GOOD, "ord01")
    assert job.id == "a" * 32 and len(job.prefixes) == 2
    assert job.filter.protocol == 17 and job.object_name.startswith("ord01/")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"id": "../../etc"}, "32 hex"),
        ({"id": "A" * 32}, "32 hex"),
        ({"prefixes": []}, "no account prefixes"),
        ({"prefixes": ["0.0.0.0/0; flush ruleset"]}, "does not appear"),
        ({"prefixes": ["203.0.113.5/24"]}, "host bits"),
        ({"time_limit": 0}, "out of range"),
        ({"time_limit": 10**9}, "out of range"),
        ({"object_name": "ord02/pcap_x.pcap"}, "is not"),
        ({"object_name": f"../ord01/pcap_{'a' * 32}.pcap"}, "is not"),
        ({"filter_v1": {"source_address": "1.2.3.4; drop"}}, "not an IPv4"),
        ({"filter_v1": {"protocol": 300}}, "between 0 and 255"),
        ({"filter_v1": {"extra": 1}}, "Extra inputs"),
    ],
)
def test_malformed_jobs_are_refused(change, needle):
    with pytest.raises(ValueError, match=needle):
        Job.parse({**GOOD, **change}, "ord01")
