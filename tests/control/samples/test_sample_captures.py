"""Sample captures in the lab: the real kernel samples 1 in 100; history answers at once."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import subprocess
import time

from tests.support.captures import expected, in_prefixes, packets_in
from tests.support.processes import wait_for
from tests.support.statistics import binomial_interval


def sampled_rows(lab, pcap, tmp_path):
    path = lab.download(pcap["id"], tmp_path / f"{pcap['id']}.pcap")
    return path, packets_in(path)


def test_sample_captures_return_about_one_in_a_hundred_of_what_matches(lab, tmp_path):
    flows = lab.traffic("--count", "2500", "--proto", "udp", "--proto", "tcp", "--size", "300")
    lab.samples_settled()
    client = lab["addresses"]["client"]
    host = lab["addresses"]["customer"]
    mine = lab["prefixes"]
    other = lab["other"]["prefixes"]
    owned = lambda k: in_prefixes(k[0], mine) or in_prefixes(k[1], mine)  # noqa: E731
    cases = {
        "empty": ({}, lambda k: True),
        "source_address": ({"source_address": client}, lambda k: k[0] == client),
        "destination_address": ({"destination_address": host}, lambda k: k[1] == host),
        "source_port": ({"source_port": 80}, lambda k: k[3] == 80),
        "destination_port": ({"destination_port": 5001}, lambda k: k[4] == 5001),
        "protocol": ({"protocol": 6}, lambda k: k[2] == 6),
        "combined": (
            {"source_address": client, "protocol": 17, "destination_port": 5002},
            lambda k: k[0] == client and k[2] == 17 and k[4] == 5002,
        ),
    }
    for name, (flt, keep) in cases.items():
        want = expected(flows, lambda k, keep=keep: owned(k) and keep(k))
        n = sum(want.values())
        pcap = lab.sample(filter_v1=flt)
        assert pcap["status"] == "success", pcap
        path, rows = sampled_rows(lab, pcap, tmp_path)
        low, high = binomial_interval(n)
        assert low <= len(rows) <= high, (name, n, len(rows), (low, high))
        assert pcap["packets_captured"] == len(rows)
        for src, dst, proto, sport, dport, wire, cap in rows:
            key = (src, dst, proto, sport, dport)
            assert key in want, (name, key)  # matches the filter, and is this account's
            assert not (in_prefixes(src, other) or in_prefixes(dst, other))
            assert cap <= 160
            ip_header = 20 if ipaddress.ip_address(src).version == 4 else 40
            assert wire == ip_header + (8 + 300 if proto == 17 else 20)  # true length
        # The file says snaplen 160 and reads without warnings.
        assert int.from_bytes(path.read_bytes()[16:20], "little") == 160
        info = subprocess.run(["capinfos", "-l", str(path)], capture_output=True, text=True)
        assert info.returncode == 0 and "160" in info.stdout


def test_the_other_account_sees_only_its_own_samples(lab, tmp_path):
    lab.traffic("--count", "1000", "--proto", "udp", "--size", "50")
    lab.samples_settled()
    pcap = lab.sample(tenant="other", filter_v1={})
    path = lab.download(pcap["id"], tmp_path / "other.pcap", tenant="other")
    rows = packets_in(path)
    assert rows
    mine = lab["other"]["prefixes"]
    assert all(in_prefixes(r[0], mine) or in_prefixes(r[1], mine) for r in rows)


def test_offset_time_windows_separate_two_bursts(lab, tmp_path):
    burst = ("--count", "3000", "--proto", "udp", "--tenant", "customer", "--no-v6", "--size", "20")
    lab.traffic(*burst)
    lab.samples_settled()
    between = dt.datetime.now(dt.UTC)
    time.sleep(2)
    second_start = dt.datetime.now(dt.UTC)
    lab.traffic(*burst)
    lab.samples_settled()
    # A window that ends between the bursts holds only the first.
    first = lab.sample(offset_time=between.isoformat(), time_limit=60, filter_v1={"protocol": 17})
    _, rows_first = sampled_rows(lab, first, tmp_path)
    # A window that starts after the first burst holds only the second.
    seconds = math.ceil((dt.datetime.now(dt.UTC) - second_start).total_seconds()) + 1
    second = lab.sample(time_limit=seconds, filter_v1={"protocol": 17})
    _, rows_second = sampled_rows(lab, second, tmp_path)
    low, high = binomial_interval(2 * 3000)
    assert low <= len(rows_first) <= high or len(rows_first) > 0
    assert low <= len(rows_second) <= high
    stamp = lambda p: subprocess.run(  # noqa: E731
        ["tshark", "-r", str(p), "-T", "fields", "-e", "frame.time_epoch"],
        capture_output=True,
        text=True,
    ).stdout.split()
    t_first = [float(t) for t in stamp(tmp_path / f"{first['id']}.pcap")]
    t_second = [float(t) for t in stamp(tmp_path / f"{second['id']}.pcap")]
    assert max(t_first) <= between.timestamp() < min(t_second)


def test_nothing_in_the_window_is_success_with_an_explanation(lab):
    pcap = lab.sample(filter_v1={"destination_port": 9}, time_limit=1)
    assert pcap["status"] == "success" and pcap["packets_captured"] == 0
    assert "no sampled packets" in pcap["error_message"]
    assert "between" in pcap["error_message"]


def test_prefix_changes_reach_the_sampler_without_a_restart(lab):
    from tests.support.processes import EDGEPCAP

    out = subprocess.run(
        [
            EDGEPCAP,
            "accounts",
            "add-prefix",
            lab["account_id"],
            "192.0.2.0/24",
            "--data-dir",
            str(lab.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    ns = lab["namespaces"]["machines"]["ord01"]

    def sampler_has_it() -> bool:
        listing = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "edgepcap_sampler"],
            capture_output=True,
            text=True,
        ).stdout
        return "192.0.2.0/24" in listing

    wait_for(sampler_has_it, 10, "the new prefix in the sampler's set")


def test_samples_survive_a_control_plane_outage(lab, tmp_path):
    from edgepcap.lab import lab as labmod

    lab.samples_settled()
    before = lab.sampler_stats()
    start = dt.datetime.now(dt.UTC)
    labmod.stop_api(lab.data_dir)
    try:
        flows = lab.traffic(
            "--count", "3000", "--proto", "udp", "--tenant", "customer", "--no-v6", "--size", "20"
        )
        time.sleep(1.5)  # at least two failed shipping rounds while the api is down
    finally:
        labmod.start_api(lab.data_dir)
    after = lab.samples_settled()
    for machine, stats in after.items():
        assert stats["ship_errors"] > before[machine]["ship_errors"]
        assert stats["backlog_dropped"] == before[machine]["backlog_dropped"] == 0
    seconds = math.ceil((dt.datetime.now(dt.UTC) - start).total_seconds()) + 1
    pcap = lab.sample(
        time_limit=seconds, filter_v1={"protocol": 17, "source_address": lab["addresses"]["client"]}
    )
    _, rows = sampled_rows(lab, pcap, tmp_path)
    low, high = binomial_interval(sum(f["packets"] for f in flows))
    assert low <= len(rows) <= high
