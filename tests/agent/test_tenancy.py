"""Two accounts capturing at once in the lab, both with traffic: for every filter, not one
packet of the other account in files, downloads or previews."""

from __future__ import annotations

import pytest

from edgepcap.formats.pcapfile import Reader
from tests.support.captures import in_prefixes, packets_in

FILTERS = [
    {},
    {"protocol": 17},
    {"protocol": 6, "destination_port": 80},
]


@pytest.mark.parametrize("filter_v1", FILTERS, ids=["empty", "udp", "tcp-80"])
def test_concurrent_captures_of_two_accounts_never_mix(lab, tmp_path, filter_v1):
    tenants = ("customer", "other")
    prefixes = {"customer": lab["prefixes"], "other": lab["other"]["prefixes"]}
    pcaps = {t: lab.start_full(t, filter_v1=filter_v1) for t in tenants}
    lab.traffic("--count", "15")  # both tenants' hosts, every protocol, both families
    for t in tenants:
        with lab.client(t) as c:
            assert c.put(f"/pcaps/{pcaps[t]['id']}/stop").status_code == 200
    for t in tenants:
        done = lab.wait_end(pcaps[t]["id"], tenant=t)
        assert done["status"] == "success", done
        mine, theirs = prefixes[t], prefixes["other" if t == "customer" else "customer"]

        def own(src: str, dst: str, mine=mine, theirs=theirs) -> bool:
            return (in_prefixes(src, mine) or in_prefixes(dst, mine)) and not (
                in_prefixes(src, theirs) or in_prefixes(dst, theirs)
            )

        in_files = [
            row for path in lab.files(pcaps[t]["id"], t).values() for row in packets_in(path)
        ]
        assert in_files, f"{t} captured nothing: the check below would prove nothing"
        assert all(own(src, dst) for src, dst, *_ in in_files)

        download = lab.download(pcaps[t]["id"], tmp_path / f"{t}.pcap", t)
        merged = packets_in(download)
        assert sorted(merged) == sorted(in_files)
        assert sum(1 for _ in Reader([download.read_bytes()])) == done["packets_captured"]

        with lab.client(t) as c:
            r = c.get(f"/pcaps/{pcaps[t]['id']}/preview", params={"count": 100})
        assert r.status_code == 200, r.text
        rows = r.json()["result"]["packets"]
        assert rows and all(own(row["source"], row["destination"]) for row in rows)
