"""`bench/run [--quick]`: every figure of edgepcap against its baseline, in one run.

Prints one line per figure: figure, edgepcap value, baseline value, ratio, target, PASS/FAIL
(and the measure it is judged on, when not that ratio);
writes bench/results.json (a quick run: bench/results-quick.json, not in git), whose figures
BENCHMARKS.md quotes. Needs root (namespaces, nftables).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time

import httpx

from bench import (
    capture,
    clickhouse_samples,
    fleet_figure,
    forwarding,
    live,
    sample_memory,
    samples,
    triggers,
)
from bench.api import Api, fig_api
from bench.figures import ROOT, Figure, percentile
from edgepcap.control.accounts import create_account
from edgepcap.control.fleet import create_agent_key

STEPS = (
    "capture",
    "max_rate",
    "forwarding",
    "api",
    "samples",
    "memory",
    "live",
    "triggers",
    "fleet",
    "sample_memory",
    "clickhouse",
)


def fig_capture(quick: bool) -> list[Figure]:
    """Sustained full captures at trafgen's top rate: every packet kept in every run."""
    out = []
    for payload, count, reps, against in (
        (1400, 200_000 if quick else 5_000_000, 1 if quick else 5, True),
        (64, 300_000 if quick else 10_000_000, 1 if quick else 3, False),
    ):
        r = capture.capture_ratio(count, payload, reps)
        kept = [x["written"] / max(1, x["offered"]) for x in r["ours"]]
        theirs = [x["written"] / max(1, x["offered"]) for x in r["tcpdump"]]
        counted = all(x["offered"] == x["written"] + x["dropped"] for x in r["ours"])
        every = all(x["dropped"] == 0 and x["written"] == x["offered"] > 0 for x in r["ours"])
        ok = every and counted and (not against or min(kept) >= max(theirs))
        rates = [x["offered"] / x["gen_wall"] for x in r["ours"] if x["gen_wall"]]
        target = f"every packet kept in each of {reps} runs, drops counted"
        if against:
            target += ", >= tcpdump's kept share"
        out.append(
            Figure(
                f"full capture {payload} B sustained, {count / 1e6:g} M packets at top rate, "
                "least kept share of the runs",
                min(kept),
                min(theirs),
                target,
                ok,
                "kept",
                f"offered at {min(rates) / 1e3:.0f}-{max(rates) / 1e3:.0f} k pps; tcpdump "
                f"kept {', '.join(f'{t:.4f}' for t in theirs)}; the generator and the "
                "reader share 2 cores",
                r,
            )
        )
    return out


def fig_max_rate(quick: bool) -> Figure:
    r = capture.max_lossless_rate(1 if quick else 3, 64, 2 if quick else 6, 50_000, 450_000)
    return Figure(
        "max rate with 0 drops (64 B, trafgen -b: line-rate bursts each second)",
        r["ours"],
        r["tcpdump"],
        ">= 0.95x tcpdump",
        r["ours"] >= 0.95 * r["tcpdump"],
        "pps",
        "binary search on trafgen -b, which sends each second's packets as one burst",
        r,
    )


def fig_samples(quick: bool) -> list[Figure]:
    api = Api(env={"EDGEPCAP_SAMPLE_INTERVAL": "0"})
    try:
        tokens, ids = {}, []
        with api.db.session() as s:
            for i in range(samples.ACCOUNTS):
                account, creds = create_account(s, f"z{i}", [str(samples.account_net(i))])
                ids.append(account.id)
                tokens[account.id] = creds.api_token
            _row, key = create_agent_key(s, "BEN", "bench01", "bench")
        machine = {"machine": "bench01", "boot_id": "c" * 32}
        httpx.post(
            f"{api.url}/agent/v1/register",
            json={"colo": "BEN", **machine},
            headers={"Authorization": f"Bearer {key}"},
        )
        n, hours = (500_000, 1.0) if quick else (50_000_000, 24.0)
        wire, now, sealing = samples.fill(api.dir / "samples", n, hours, ids)
        hour_pcap = api.dir / "hour.pcap"
        samples.write_hour_pcap(wire, now, hour_pcap)
        del wire
        lat = samples.query_latency(api.url, tokens, ids, hour_pcap, 20 if quick else 100)
        ours, theirs = lat["ours_ms"], lat["tcpdump_ms"]
        p50, p99 = percentile(ours, 50), percentile(ours, 99)
        b50 = percentile(theirs, 50)
        query = Figure(
            f"sample capture create+download, {n / 1e6:g} M samples / {hours:g} h",
            p50,
            b50,
            "p50 < 50 ms, p99 < 200 ms, faster than tcpdump -r",
            p50 < 50 and p99 < 200 and p50 < b50,
            "ms p50",
            f"p99 {p99:.1f} ms; tcpdump -r reads the whole hour",
            lat,
        )
        tr = samples.traffic_latency(api.dir / "samples", ids, hours, 2 if quick else 5)
        tr["seal_seconds"] = sealing
        every = tr["plain_ms"] + tr["filtered_ms"]
        p99 = {k: percentile(tr[f"{k}_ms"], 99) for k in ("plain", "filtered")}
        view = Figure(
            f"traffic view, {hours:g} h queries of the busiest accounts, {n / 1e6:g} M samples",
            percentile(every, 99),
            None,
            "p99 < 200 ms",
            percentile(every, 99) < 200,
            "ms p99",
            f"unfiltered p50 {percentile(tr['plain_ms'], 50):.1f} ms, p99 {p99['plain']:.1f} ms; "
            f"filtered p50 {percentile(tr['filtered_ms'], 50):.1f} ms, p99 "
            f"{p99['filtered']:.1f} ms; store-level (no HTTP); sealing the fill took "
            f"{tr['seal_seconds']:.0f} s",
            tr,
        )
        ing = samples.ingest_rate(api.url, key, machine, ids, 30_000, 2 if quick else 20)
        ingest = Figure(
            "sampler ingest, sustained",
            ing["kept_per_s"],
            None,
            ">= 30000 samples/s, 0 loss",
            ing["kept"] == ing["offered"] and ing["kept_per_s"] >= 29_000,
            "samples/s",
            f"largest batch {ing['max_batch_ms']:.0f} ms",
            ing,
        )
        return [query, view, ingest]
    finally:
        api.close()


def fig_memory(quick: bool) -> Figure:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "agent_memory.py"),
            "--gigabytes",
            "0.1" if quick else "1.0",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    peak = max(r["rss_peak_mib"].values())
    return Figure(
        f"agent peak RSS, {r['captured_bytes'] / 1e9:.2f} GB full capture",
        peak,
        None,
        "< 100 MiB",
        peak < 100,
        "MiB",
        "interpreter + libraries ~50 MiB",
        r,
    )


def fig_live(quick: bool) -> Figure:
    r = live.measure(3 if quick else 10)
    ms = r["latency_ms"]
    p50, p99 = (percentile(ms, p) for p in (50, 99)) if ms else (math.inf, math.inf)
    complete = r["received"] == r["sent"]

    def spread(xs: list[float]) -> dict[str, float] | None:
        return {f"p{p}": round(percentile(xs, p), 3) for p in (0, 50, 90, 99, 100)} if xs else None

    lists = ("latency_ms", "kernel_after_send_ms", "gap_between_chunks_ms")
    detail = {
        **r,
        **{k: spread(r[k]) for k in lists},
        "per_machine_ms": {m: spread(xs) for m, xs in r["per_machine_ms"].items()},
    }
    return Figure(
        "live stream latency: packet in the kernel → bytes at the viewer",
        p50,
        None,  # the bucket's way (download once the capture ends and merges) is not cheap
        "p50 < 300 ms, p99 < 1 s, none lost",
        p50 < 300 and p99 < 1000 and complete,
        "ms p50",
        f"p99 {p99:.0f} ms, {r['received']}/{r['sent']} packets at {r['rate_pps']} pps; "
        "NFLOG's flush timer, then the agent's sender waits for the next read (<= 50 ms)",
        detail,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small runs, under a minute")
    parser.add_argument(
        "--only",
        action="append",
        choices=STEPS,
        help="run this step only (repeatable); bench/results.json is then left as it is",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/run needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    started = time.monotonic()
    figures: list[Figure] = []
    steps = {
        "capture": lambda: fig_capture(args.quick),
        "max_rate": lambda: [fig_max_rate(args.quick)],
        "forwarding": lambda: forwarding.figure(args.quick),
        # The API before the sample store: after the store's ~10 GB are written and freed,
        # 1-worker API runs showed p99 spikes (100-250 ms) that runs before it never did.
        "api": lambda: fig_api(args.quick),
        "samples": lambda: fig_samples(args.quick),
        "memory": lambda: [fig_memory(args.quick)],
        "live": lambda: [fig_live(args.quick)],
        "triggers": lambda: [triggers.figure(args.quick)],
        "fleet": lambda: fleet_figure.figure(args.quick),
        "sample_memory": lambda: [sample_memory.figure(args.quick)],
        "clickhouse": lambda: clickhouse_samples.figure(args.quick),
    }
    assert list(steps) == list(STEPS)
    failed = False
    for name, step in steps.items():
        if args.only and name not in args.only:
            continue
        began = time.monotonic()
        try:
            # The figure before may leave gigabytes to write back (the sample store): they
            # would take the cores from this one.
            capture.settle()
            for f in step():
                figures.append(f)
                print(f.line(), flush=True)
        except Exception as exc:  # a figure that could not be measured
            failed = True
            print(f"could not measure: {exc!r}", file=sys.stderr, flush=True)
        print(f"({time.monotonic() - began:.1f} s)", file=sys.stderr, flush=True)
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": f"{os.cpu_count()} CPU, {platform.machine()}, Linux {platform.release()}",
        "seconds": round(time.monotonic() - started, 1),
        "figures": [
            {
                "figure": f.name,
                "edgepcap": f.ours,
                "baseline": f.baseline,
                "ratio": f.ratio,
                "unit": f.unit,
                "target": f.target,
                "pass": f.ok,
                "judged_on": f.judged_on,
                "limits": f.limits,
                "detail": f.detail,
            }
            for f in figures
        ],
    }
    # Only a whole full run replaces the record BENCHMARKS.md quotes; a quick or partial run
    # keeps its own file beside it (not in git), with every figure's limits and detail.
    name = "results.json"
    if args.only:
        name = "results-only.json"
    elif args.quick:
        name = "results-quick.json"
    (ROOT / "bench" / name).write_text(json.dumps(record, indent=2, default=str))
    return 1 if failed or not figures else 0


if __name__ == "__main__":
    raise SystemExit(main())
