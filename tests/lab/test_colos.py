"""A lab of two colos (`--colo ORD --colo AMS --machines 2`): samples cross both, a full
capture on one colo or one machine runs there only, and lab.json names who is where."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgepcap.lab import lab as labmod
from tests.support.captures import captured, expected, in_prefixes, packets_in
from tests.support.lab import Lab, running_lab
from tests.support.processes import EDGEPCAP, wait_for
from tests.support.statistics import binomial_interval

COLOS = {"ORD": ["ord01", "ord02"], "AMS": ["ams01", "ams02"]}
MACHINES = [m for members in COLOS.values() for m in members]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[Lab]:
    """This module's own lab: two machines of ORD and two of AMS (named `lab`, it gets the
    root marker as the shared one does)."""
    with running_lab(tmp_path_factory.mktemp("colos"), s3_server, colos=tuple(COLOS)) as running:
        yield running


def colo_of_host(lab: Lab) -> dict[str, str]:
    return {h[v]: h["colo"] for h in lab["hosts"] for v in ("v4", "v6")}


def test_a_sample_capture_holds_packets_that_crossed_both_colos(lab, tmp_path):
    # First in the module: the sample's window holds this traffic and nothing else.
    flows = lab.send(3000, size=20)  # one UDP flow to each host, one host per machine
    assert {f["colo"] for f in flows} == {"ORD", "AMS"}
    lab.samples_settled()
    assert set(lab.sampler_stats()) == set(MACHINES)
    pcap = lab.sample(filter_v1={"protocol": 17})
    assert pcap["status"] == "success", pcap
    rows = packets_in(lab.download(pcap["id"], tmp_path / "sample.pcap"))
    want = expected(flows, lambda k: True)
    assert all(r[:5] in want for r in rows)
    low, high = binomial_interval(sum(want.values()))
    assert low <= len(rows) <= high, (len(rows), (low, high))
    # Hosts 1 and 2 are reached through ORD's machines, 3 and 4 through AMS's.
    colos = colo_of_host(lab)
    per_colo = {c: sum(1 for r in rows if colos[r[1]] == c) for c in COLOS}
    assert all(n > 0 for n in per_colo.values()), per_colo


def test_lab_json_names_every_colo_and_the_colo_of_each_host(lab):
    for tenant in (lab.info, lab["other"]):
        assert tenant["colo"] == "ORD"  # the first one
        assert tenant["colos"] == COLOS
        assert list(tenant["namespaces"]["machines"]) == MACHINES
        assert [(h["machine"], h["colo"]) for h in tenant["hosts"]] == [
            ("ord01", "ORD"),
            ("ord02", "ORD"),
            ("ams01", "AMS"),
            ("ams02", "AMS"),
        ]
        assert all(in_prefixes(h["v4"], tenant["prefixes"]) for h in tenant["hosts"])
    assert lab["addresses"]["customer"] == lab["hosts"][0]["v4"]
    state = json.loads((lab.data_dir / labmod.STATE).read_text())
    assert state["colos"] == COLOS and state["machines"] == MACHINES
    # One key per machine, minted for its own colo; every agent registered there.
    listed = subprocess.run(
        [EDGEPCAP, "agents", "list", "--data-dir", str(lab.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    keys = sorted((k["colo"], k["machine"]) for k in map(json.loads, listed.splitlines()))
    assert keys == sorted((c, m) for c, members in COLOS.items() for m in members)
    metrics = lab.metrics()
    for colo, members in COLOS.items():
        for m in members:
            assert f'edgepcap_machine_up{{machine="{m}",colo="{colo}"}} 1' in metrics
    # `lab traffic` reaches every host, through its machine, both ways.
    flows = lab.traffic("--count", "3", "--proto", "icmp", "--tenant", "customer")
    assert {(f["machine"], f["colo"]) for f in flows} == {
        (h["machine"], h["colo"]) for h in lab["hosts"]
    }
    assert all(f["reply_packets"] == 3 for f in flows)


@pytest.mark.parametrize(
    ("colo_name", "machines"), [("AMS", ["ams01", "ams02"]), ("ams02", ["ams02"])]
)
def test_a_full_capture_on_one_colo_or_machine_runs_there_only(lab, colo_name, machines):
    pcap = lab.start_full(colo_name=colo_name, filter_v1={"protocol": 17})
    assert pcap["status"] == "running", pcap
    assert sorted(m["machine"] for m in pcap["machines"]) == machines
    flows = lab.send(20, v6=True)  # to every host: through all four machines
    # While it runs, its table is in its machines' namespaces and nowhere else.
    tables = {m: lab.tables(m) for m in MACHINES}
    assert tables == {m: [f"edgepcap_{pcap['id']}"] if m in machines else [] for m in MACHINES}
    with lab.client() as c:
        assert c.put(f"/pcaps/{pcap['id']}/stop").status_code == 200
    done = lab.wait_end(pcap["id"])
    assert done["status"] == "success", done

    assert set(lab.files(pcap["id"])) == set(machines)
    root = Path(lab["destination_conf"].removeprefix("file://"))
    assert sorted(p.parent.name for p in root.glob(f"*/pcap_{pcap['id']}.pcap")) == machines
    # Exactly the packets to the hosts reached through those machines.
    through = {h[v] for h in lab["hosts"] if h["machine"] in machines for v in ("v4", "v6")}
    want = expected(flows, lambda k: k[1] in through)
    assert sum(want.values()) == 20 * 2 * len(machines)
    assert captured(lab, pcap["id"]) == want
    assert done["packets_captured"] == sum(want.values())
    assert all(lab.tables(m) == [] for m in MACHINES)


def test_an_ams_agent_restarts_into_its_own_colo(lab):
    registered = lab.registrations("ams02")
    labmod.stop_agent(lab.data_dir, "ams02")
    pid = labmod.restart_agent(lab.data_dir, "ams02")
    wait_for(
        lambda: lab.registrations("ams02") > registered and lab.machines_up()["ams02"],
        20,
        "the agent of ams02 to register again",
    )
    assert labmod.agent_pid(lab.data_dir, "ams02") == pid
    assert 'edgepcap_machine_up{machine="ams02",colo="AMS"} 1' in lab.metrics()
    log = (lab.data_dir / "logs" / "ams02.log").read_text(errors="replace")
    assert "registered ams02 in AMS" in log
    again = lab.start_full(colo_name="AMS", time_limit=1)
    done = lab.wait_end(again["id"], timeout=10)
    assert done["status"] == "success", done
    assert set(lab.files(again["id"])) == {"ams01", "ams02"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--colo", "ORD", "--colo", "AMS", "--machines", "5"], "at most 8 machines in all"),
        (["--colo", "ORD", "--machines", "9"], "--machines must be 1 to 8"),
        (["--colo", "ORD", "--colo", "ord"], "colo ORD is named twice"),
        (["--colo", "AMSTERDAM01"], "at most 10 characters"),
        (["--colo", "a-b"], "letters and digits"),
    ],
)
def test_lab_up_refuses_what_it_cannot_build_before_building_anything(tmp_path, args, message):
    data = tmp_path / "lab"
    out = subprocess.run(
        [EDGEPCAP, "lab", "up", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and message in " ".join(out.stderr.split()), out.stderr
    assert not data.exists()
