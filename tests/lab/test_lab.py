"""`edgepcap lab up|traffic|down`: what it builds, what it reports, and that it leaves nothing."""

from __future__ import annotations

import json
import subprocess

import pytest

from edgepcap.lab import lab as labmod
from edgepcap.lab.topology import stray_namespaces
from tests.support.lab import lab_down
from tests.support.processes import EDGEPCAP, free_port

KEYS = {
    "api",
    "account_id",
    "api_token",
    "email",
    "api_key",
    "destination_conf",
    "colo",
    "namespaces",
    "addresses",
}


@pytest.mark.root  # namespaces, nftables
def test_lab_up_writes_lab_json_and_down_removes_everything(tmp_path):
    data = tmp_path / "lab"
    try:
        out = subprocess.run(
            [
                EDGEPCAP,
                "lab",
                "up",
                "--data-dir",
                str(data),
                "--colo",
                "SJC",
                "--machines",
                "3",
                "--listen",
                f"127.0.0.1:{free_port()}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        info = json.loads((data / "lab.json").read_text())
        assert set(info) >= KEYS and set(info["other"]) >= KEYS
        assert info["colo"] == "SJC"
        assert set(info["namespaces"]["machines"]) == {"sjc01", "sjc02", "sjc03"}
        assert set(info["addresses"]) == {"client", "customer", "client6", "customer6"}
        assert info["account_id"] != info["other"]["account_id"]
        state = json.loads((data / labmod.STATE).read_text())
        assert len(stray_namespaces(state["tag"])) == 6  # client, 2 customers, 3 machines
        pids = state["pids"]
        assert all(labmod._ours(p) for p in pids)
        assert (data / "lab.json").stat().st_mode & 0o777 == 0o600
        # One key per machine, each bound to it.
        listed = subprocess.run(
            [EDGEPCAP, "agents", "list", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        keys = [json.loads(line) for line in listed.splitlines()]
        assert sorted((k["colo"], k["machine"]) for k in keys) == [
            ("SJC", "sjc01"),
            ("SJC", "sjc02"),
            ("SJC", "sjc03"),
        ]
        assert len(set(state["agent_keys"].values())) == 3

        out = subprocess.run(
            [
                EDGEPCAP,
                "lab",
                "traffic",
                "--data-dir",
                str(data),
                "--count",
                "3",
                "--tenant",
                "customer",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        flows = json.loads(out.stdout)["flows"]
        # 3 hosts x (udp, tcp, icmp) x (IPv4, IPv6), each sent 3 times and answered as expected.
        assert len(flows) == 18
        assert {f["machine"] for f in flows} == {"sjc01", "sjc02", "sjc03"}
        assert all(f["packets"] == 3 for f in flows)
        assert all(f["reply_packets"] == 3 for f in flows if f["proto"] == "icmp")
    finally:
        lab_down(data)
    assert stray_namespaces(state["tag"]) == []
    assert not any(labmod._ours(p) for p in pids)
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "edgepcap_" not in tables


def test_traffic_refuses_unbounded_or_absent_labs(tmp_path):
    out = subprocess.run(
        [EDGEPCAP, "lab", "traffic", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "lab up" in out.stderr
