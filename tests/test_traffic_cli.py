"""`edgepcap traffic` and `edgepcap triggers …` against a real server (samples shipped as an
agent ships them), and the traffic table as a terminal shows it."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import time

from rich.console import Console

from edgepcap.cli.traffic import render, sparkline
from tests.support.packets import udp
from tests.support.processes import EDGEPCAP
from tests.support.samples import icmp, owned_by, ship

SERVER_ENV = {"EDGEPCAP_SAMPLE_INTERVAL": "0"}


def run(stack, account, *args):
    # As a script runs it: output to a pipe, no COLUMNS.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env |= {
        "EDGEPCAP_API": stack.server.url,
        "EDGEPCAP_ACCOUNT": account.id,
        "EDGEPCAP_TOKEN": account.api_token,
    }
    return subprocess.run([EDGEPCAP, *args], capture_output=True, text=True, env=env, timeout=60)


def rows(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    """The piped table: its header and its rows by key, split on whitespace."""
    header, *lines = stdout.splitlines()
    return header.split(), {line.split()[0]: line.split()[1:] for line in lines}


def test_traffic_prints_estimates_per_group_for_scripts_and_as_json(stack):
    acct = stack.account()
    step = 10
    base = (time.time_ns() // 10**9 - 30) // step * step
    # In one step: 300 DNS datagrams and 100 pings, to the account's addresses.
    dns = [udp("198.51.100.7", acct.host(1), 40000 + i, 53) for i in range(300)]
    pings = [icmp("198.51.100.8", acct.host(2)) for _ in range(100)]
    stamps = [base * 10**9 + 1000 * i for i in range(300)]
    assert ship(stack.machine, owned_by(acct.id, dns, stamps))["kept"] == 300
    assert ship(stack.machine, owned_by(acct.id, pings, [base * 10**9] * 100))["kept"] == 100
    since, until = base - 60, base + 60  # 12 steps, the traffic in the 7th
    window = ("--since", str(since), "--until", str(until), "--step", str(step))

    out = run(stack, acct, "traffic", "--group-by", "destination_port", *window)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout  # no colour for a script
    header, got = rows(out.stdout)
    assert header == ["destination_port", "pkt_s", "packets", "packets_error_95", "bit_s", "trend"]
    assert set(got) == {"53", "none"}  # ICMP has no ports
    # 300 samples at 1 in 100: 30 000 packets, ± 1.96 * 100 * sqrt(300 * 0.99); over 120 s.
    assert got["53"][:4] == ["250.0", "30000", "3378", f"{300 * len(dns[0]) * 8 * 100 / 120:.0f}"]
    assert got["none"][:3] == ["83.3", "10000", "1951"]  # the bound rounds up
    assert got["53"][4] == "▁" * 6 + "█" + "▁" * 5

    # --json is the API's answer as it is.
    out = run(stack, acct, "traffic", "--group-by", "destination_port", *window, "--json")
    assert out.returncode == 0, out.stderr
    params = {"group_by": "destination_port", "since": since, "until": until, "step": step}
    with stack.client(acct) as c:
        assert json.loads(out.stdout) == c.get("/traffic", params=params).json()["result"]

    # The filter options, in their long and short names, and the other groups.
    out = run(stack, acct, "traffic", "--group-by", "source_address", "--protocol", "1", *window)
    assert out.returncode == 0, out.stderr
    assert set(rows(out.stdout)[1]) == {"198.51.100.8"}
    out = run(stack, acct, "traffic", "--dport", "53", "--json", *window)
    result = json.loads(out.stdout)
    assert result["filter_v1"] == {"destination_port": 53}
    assert [(s["key"], s["packets"]) for s in result["series"]] == [("17", 30_000)]
    out = run(stack, acct, "traffic", "--group-by", "colo", "--limit", "1", *window)
    assert rows(out.stdout)[1]["ORD"][1] == "40000"

    # A time ago is made absolute before the request.
    before = int(time.time())
    out = run(stack, acct, "traffic", "--since", "15m", "--step", "10", "--json")
    after = int(time.time())
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    start = int(dt.datetime.fromisoformat(result["since"].replace("Z", "+00:00")).timestamp())
    assert before - 900 - step < start <= after - 900  # rounded down to the step
    assert {s["key"]: s["packets"] for s in result["series"]} == {"17": 30_000, "1": 10_000}


def test_traffic_prints_the_apis_refusals(stack):
    acct = stack.account()
    for args, message in (
        (("--group-by", "flows"), "`group_by` must be one of protocol"),
        (("--step", "15"), "`step` must be a multiple of 10 seconds"),
        (("--since", "yesterday"), "`since` must be RFC 3339"),
        (("--since", "2d"), "more than 24 h ago"),
        (("--source-address", "10.0.0.0/8"), "`source_address`"),
    ):
        out = run(stack, acct, "traffic", *args)
        assert out.returncode == 1, (args, out.stdout)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    # Nothing sampled: the header alone, for a script.
    out = run(stack, acct, "traffic")
    assert out.returncode == 0, out.stderr
    assert rows(out.stdout) == (["protocol", "pkt_s", "packets", "packets_error_95", "bit_s",
                                 "trend"], {})  # fmt: skip


def datagrams(account, n: int, dport: int = 5555):
    """`n` sampled UDP datagrams to the account's first address, stamped now."""
    now = time.time_ns()
    snaps = [udp("198.51.100.7", account.host(1), 40000 + i % 1000, dport) for i in range(n)]
    return owned_by(account.id, snaps, [now - 1000 * i for i in range(n)])


def test_triggers_from_the_command_line(stack):
    acct = stack.account()
    conf = stack.validated_bucket(acct)
    capture = ("--colo", "ORD", "--destination-conf", conf)
    before = dt.datetime.now(dt.UTC)
    out = run(stack, acct, "triggers", "create", "--threshold-pps", "1000", "--protocol", "17",
              "--destination-port", "5555", *capture, "--expires", "2h", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    trigger = json.loads(out.stdout)
    assert trigger["status"] == "armed" and trigger["window"] == 10
    assert trigger["cooldown"] == 300 and trigger["threshold_pps"] == 1000
    assert trigger["filter_v1"] == {"protocol": 17, "destination_port": 5555}
    assert trigger["capture"]["colo_name"] == "ORD" and trigger["capture"]["time_limit"] == 60
    expires = dt.datetime.fromisoformat(trigger["expires"].replace("Z", "+00:00"))
    assert before + dt.timedelta(hours=2) - dt.timedelta(seconds=1) <= expires
    assert expires <= dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)

    listed = run(stack, acct, "triggers", "list")
    assert listed.returncode == 0, listed.stderr
    assert trigger["id"] in listed.stdout and "1000 pkt/s over 10 s" in listed.stdout
    assert "any → any:5555 proto 17" in listed.stdout
    assert [t["id"] for t in json.loads(run(stack, acct, "triggers", "list", "--json").stdout)] == [
        trigger["id"]
    ]
    shown = run(stack, acct, "triggers", "get", trigger["id"])
    assert shown.returncode == 0, shown.stderr
    assert "armed" in shown.stdout and "fired: never" in shown.stdout
    assert "1000 packets/s over 10 s" in shown.stdout and f"ORD → {conf}" in shown.stdout

    # 150 matching samples in the window: 15 000 packets/s estimated, it fires.
    ship(stack.machine, datagrams(acct, 150))
    got = json.loads(run(stack, acct, "triggers", "get", trigger["id"], "--json").stdout)
    [fire] = got["fired"]
    shown = run(stack, acct, "triggers", "get", trigger["id"])
    assert "cooling_down" in shown.stdout and fire["pcap_id"] in shown.stdout
    assert str(fire["estimated_pps"]) in shown.stdout and "fired: never" not in shown.stdout

    # A second one that reaches its threshold while that capture runs: refused, with why.
    out = run(stack, acct, "triggers", "create", "--threshold-pps", "100", "--dport", "5555",
              *capture)  # fmt: skip
    assert out.returncode == 0, out.stderr
    second = json.loads(run(stack, acct, "triggers", "list", "--json").stdout)[1]
    assert second["id"] in out.stdout and "fired: never" in out.stdout
    ship(stack.machine, datagrams(acct, 20))
    shown = run(stack, acct, "triggers", "get", second["id"])
    assert "already has a pending or running full capture" in shown.stdout, shown.stdout

    out = run(stack, acct, "triggers", "delete", second["id"])
    assert out.returncode == 0 and f"deleted trigger {second['id']}" in out.stdout
    out = run(stack, acct, "triggers", "get", second["id"])
    assert out.returncode == 1 and "no trigger" in out.stderr and "Traceback" not in out.stderr
    out = run(stack, acct, "triggers", "create", "--threshold-pps", "10", "--window", "5",
              *capture)  # fmt: skip
    assert out.returncode == 1 and "`window` must be between 10 and 300" in out.stderr
    assert "Traceback" not in out.stderr
    with stack.client(acct) as c:
        c.put(f"/pcaps/{fire['pcap_id']}/stop")


def test_the_traffic_table_for_a_person():
    result = {
        "since": "2026-12-06T14:00:00Z",
        "until": "2026-12-06T14:02:00Z",
        "step": 10,
        "sample_rate": 100,
        "group_by": "protocol",
        "filter_v1": {"destination_port": 53},
        "samples": 400,
        "estimated": True,
        "series": [
            {"key": "17", "samples": 300, "packets": 30_000, "bits": 19_680_000,
             "packets_error_95": 3378, "points": [[0, 0.0, 0.0], [10, 3000.0, 1.9e6]]},
            {"key": "other", "samples": 100, "packets": 10_000, "bits": 0,
             "packets_error_95": 1950, "points": [[0, 500.0, 0.0], [10, 0.0, 0.0]]},
        ],
    }  # fmt: skip
    console = Console(file=io.StringIO(), record=True, width=160, force_terminal=True)
    console.print(render(result, tty=True))
    text = console.export_text(clear=False)
    assert "17 UDP" in text and "250" in text and "30.0k ± 3.38k" in text
    assert "164 kbit/s" in text and "▁█" in text and "█▁" in text
    assert "any → any:53" in text and "1 in 100" in text
    assert "\x1b[" in console.export_text(styles=True)  # coloured on a terminal


def test_a_sparkline_fits_its_width_and_tells_nothing_from_little():
    assert sparkline([0.0, 1.0, 100.0]) == "▁▂█"
    assert sparkline([0.0] * 5) == "▁" * 5
    assert sparkline([]) == ""
    assert sparkline([1.0] * 360) == "█" * 45  # neighbours averaged: 8 steps a bar
