"""Forwarding figures: a router's forwarded rate with capture tables, against its baseline.

Runs alternate in rounds (the runs a row compares next to each other, their order reversed
every other round), so each row has a ratio per round beside the ratio of the medians; on
this shared VM the per-round ratios swing less with other work. The tables' rows also
measure CPU per forwarded packet on the forwarding core (perf cpu-clock samples of trafgen
and ksoftirqd), which other processes' load does not enter at all.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

from bench.capture import FILTER, MIXED_SHARE, PREFIX, run_afpacket, run_ours, run_tcpdump, settle
from bench.figures import Figure, median
from bench.nflog_floor import with_floor
from bench.topology import SINK, Topology, routed
from edgepcap.agent import sampler
from edgepcap.agent.kernel import nft

# The runs of each group run next to each other. A capture's runs read NFLOG on the other
# core, so they are compared by rate; the tables' runs (nobody reading) by CPU per packet.
CAPTURES = ("mixed_plain", "mixed_captured", "captured", "tcpdump", "floor")
TABLES = ("plain", "sampler", "sampler_inc", "miss_plain", "miss")
PARTS = ("hook", "rules", "unread")  # the capture's table cut down (full runs only)
# Rounds of every mode: `--only forwarding` in ~3-4 minutes, `--quick` in ~1. The tables'
# rows get more rounds: their CPU figures are shorter runs, and lie near their targets.
ROUNDS, CLOCKED_ROUNDS, QUICK_ROUNDS = 5, 9, 3
# perf samples this often (Hz): ~5 000 samples of a 1 s run, so ~1.4 % sampling error.
PERF_HZ = 5000
# Whose CPU time is the forwarding: veth runs the router's and the receiver's stacks in
# the sender's context, or in ksoftirqd when the softirq is deferred.
FORWARDING_COMMS = ("trafgen", "ksoftirqd/")


def perf_unavailable() -> str | None:
    """Why perf cannot clock the runs here, or None when it can."""
    if shutil.which("perf") is None:
        return "perf is not installed"
    fd, path = tempfile.mkstemp(suffix=".perf")
    os.close(fd)
    try:
        out = subprocess.run(
            ["perf", "record", "-q", "-a", "-e", "cpu-clock", "-o", path, "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return None if out.returncode == 0 else f"perf record failed: {out.stderr.strip()[:200]}"
    finally:
        os.unlink(path)


class CpuClock:
    """One run's CPU time on the forwarding: trafgen runs under `perf record -a` (counting
    starts before it and ends with it, no waiting), then the samples are summed by comm."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(suffix=".perf")
        os.close(fd)

    def wrap(self) -> tuple[str, ...]:
        return (
            "perf",
            "record",
            "-q",
            "-a",
            "-e",
            "cpu-clock",
            "-F",
            str(PERF_HZ),
            "-o",
            self.path,
            "--",
        )

    def nanoseconds(self) -> int:
        """Nanoseconds sampled in the forwarding's comms (cpu-clock's period is in ns)."""
        try:
            report = ["perf", "report", "-q", "-i", self.path, "--stdio", "--sort", "comm"]
            out = subprocess.run(
                [*report, "-F", "period,comm"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        finally:
            os.unlink(self.path)
        total = 0
        for line in out.splitlines():
            period, _, comm = line.strip().partition(" ")
            if period.isdigit() and comm.strip().startswith(FORWARDING_COMMS):
                total += int(period)
        return total


def capture_table(ns: str, part: str) -> str:
    """The capture's own table (the agent's rules) with no reader, up to `part`: "hook"
    (its chains, no rules), "rules" (without `log`) or "unread" (all of it); or, for
    "sampler", the agent's always-on sampling table over the same prefixes, and for
    "sampler_inc" that table drawing every 100th packet (`numgen inc`), not at random: a
    bench-only variant, to measure what the random draw costs."""
    table = f"{nft.TABLE_PREFIX}bench"
    if part.startswith("sampler"):
        rule = nft.CaptureRule(
            table=table, prefixes=PREFIX, group=sampler.GROUP, snaplen=160, sample_mod=100
        )
    else:
        rule = nft.CaptureRule(table=table, prefixes=PREFIX, filter=FILTER, group=1502)
    commands = []
    for command in nft.ruleset(rule)["nftables"]:
        r = command.get("add", {}).get("rule")
        if r is not None and part == "hook":
            continue
        if r is not None and part == "rules":
            r["expr"] = [e for e in r["expr"] if "log" not in e]
        if r is not None and part == "sampler_inc":
            for e in r["expr"]:
                if "numgen" in e.get("match", {}).get("left", {}):
                    e["match"]["left"]["numgen"]["mode"] = "inc"
        commands.append(command)
    nft.apply(ns, {"nftables": commands})
    return table


def _run(topo: Topology, mode: str, count: int, payload: int, clock: CpuClock | None) -> float:
    """One run of `mode`: trafgen's seconds (its CPU clocked by `clock` when given)."""
    assert topo.router is not None
    wrapped = dataclasses.replace(topo, wrap=clock.wrap() if clock else ())
    mixed = dataclasses.replace(wrapped, others=MIXED_SHARE - 1)
    missed = dataclasses.replace(wrapped, others=99)  # 1 packet in 100 the capture's
    if mode == "captured":
        return run_ours(wrapped.at_router(), count, payload)["gen_seconds"]
    if mode == "mixed_captured":
        return run_ours(mixed.at_router(), count, payload)["gen_seconds"]
    if mode == "tcpdump":
        return run_tcpdump(wrapped.at_router(), count, payload)["gen_seconds"]
    if mode == "afpacket":
        return run_afpacket(wrapped.at_router(), "i0", count, payload)["gen_seconds"]
    settle()  # every run from the same memory state (the runs above settle)
    if mode == "floor":
        rule = nft.CaptureRule(
            table=f"{nft.TABLE_PREFIX}floor", prefixes=PREFIX, filter=FILTER, group=1503
        )
        return with_floor(topo.router, rule, lambda: wrapped.trafgen(count, payload))
    sender = {"mixed_plain": mixed, "miss_plain": missed, "miss": missed}.get(mode, wrapped)
    if mode.endswith("plain"):
        return sender.trafgen(count, payload)
    table = capture_table(topo.router, "unread" if mode == "miss" else mode)
    try:
        return sender.trafgen(count, payload)
    finally:
        nft.remove(table, topo.router)


def forwarding(
    count: int,
    payload: int,
    rounds: int,
    parts: bool = True,
    clocked: int | None = None,
    clocked_rounds: int = 0,
) -> dict[str, Any]:
    """Forwarded pps through a router, `rounds` rounds of every mode: with no rule; with
    an active capture (its reader on the other core); with tcpdump reading the same rule;
    with a reader that only receives and discards (the kernel floor, `nflog_floor`); on
    traffic of which the capture matches one packet in MIXED_SHARE, with no rule and with
    the capture; the capture's table (unread) on traffic of which it wants one packet in
    100 ("miss"), and no rule on that traffic; the sampler's table, with nobody bound to
    its group, and its `numgen inc` variant. With `parts`, also the capture's table cut
    down (the hook alone; its rules without `log`; the `log` with no reader bound, where
    the kernel stops at the group lookup) and tcpdump on the router's ingress device
    (AF_PACKET, no nftables). The tables' runs also give CPU nanoseconds per forwarded
    packet (None without perf), from runs of `clocked` packets (default `count`); the
    tables' rows (not the parts) run in `clocked_rounds` rounds when that is more."""
    captures, tables = (
        CAPTURES + (("afpacket",) if parts else ()),
        TABLES + (PARTS if parts else ()),
    )
    pps: dict[str, list[float]] = {m: [] for m in captures + tables}
    unclocked = perf_unavailable()
    ns: dict[str, list[float]] = {m: [] for m in tables}
    with routed() as topo:
        for i in range(max(rounds, clocked_rounds)):
            clocked_group = (tables if i < rounds else TABLES, clocked or count)
            for group, n in [(captures, count), clocked_group] if i < rounds else [clocked_group]:
                for mode in group if i % 2 == 0 else group[::-1]:
                    before = topo.counter(topo.rx, SINK)
                    clock = CpuClock() if mode in ns and unclocked is None else None
                    seconds = _run(topo, mode, n, payload, clock)
                    time.sleep(0.3)  # the last packets through the receiver's sink
                    forwarded = topo.counter(topo.rx, SINK) - before
                    pps[mode].append(forwarded / seconds)
                    if clock is not None:
                        ns[mode].append(clock.nanoseconds() / forwarded)
    return {"pps": pps, "cpu_ns": None if unclocked else ns, "perf": unclocked or "cpu-clock"}


def spread(xs: list[float], digits: int = 3) -> str:
    """median [min-max]"""
    return f"{median(xs):.{digits}f} [{min(xs):.{digits}f}-{max(xs):.{digits}f}]"


def per_round(r: dict[str, Any], ours: str, base: str) -> dict[str, list[float]]:
    """A row's ratios, one per round: rate (ours / base), and with perf CPU per packet
    (base's / ours: the rate the CPU would allow) and the nanoseconds ours adds."""
    pps, ns = r["pps"], r["cpu_ns"]
    out = {"rate": [a / b for a, b in zip(pps[ours], pps[base], strict=True)]}
    if ns and ours in ns and base in ns:
        out["cpu"] = [b / a for a, b in zip(ns[ours], ns[base], strict=True)]
        out["added_ns"] = [a - b for a, b in zip(ns[ours], ns[base], strict=True)]
    return out


def figure(quick: bool) -> list[Figure]:
    """The forwarding rows, each against its baseline in the same run."""
    if quick:
        return rows(forwarding(200_000, 64, QUICK_ROUNDS, parts=False))
    # The clocked runs need fewer packets: their figure is CPU time per packet, ~0.5 s of
    # samples each, and trafgen's start (~4 ms of CPU) is <1 % of that.
    return rows(forwarding(1_000_000, 64, ROUNDS, True, 500_000, CLOCKED_ROUNDS))


def rows(r: dict[str, Any]) -> list[Figure]:
    """Each row's figures: the medians' rates and ratio, the per-round ratios, and for the
    tables' rows CPU per packet, on which the row is judged (the rates' ratio without perf);
    a capture's rows are judged on the per-round ratio of rates."""
    pps = {m: median(v) for m, v in r["pps"].items()}
    ns = {m: median(v) for m, v in (r["cpu_ns"] or {}).items() if v}
    nflog = "the kernel's NFLOG message per packet on the forwarding core"
    # The capture group's runs against its own no-rule run (same packets, not clocked);
    # the tables' parts against theirs.
    plain = pps["mixed_plain"]
    parts = ""
    if "hook" in pps:
        parts = "; in parts, of no rule: " + ", ".join(
            f"{what} {pps[m] / pps['plain']:.2f}x"
            + (f" (+{ns[m] - ns['plain']:.0f} ns CPU per packet)" if m in ns else "")
            for what, m in (
                ("the table's hook alone", "hook"),
                ("its rules without log", "rules"),
                ("the log rule with no reader bound", "unread"),
            )
        )
    if "afpacket" in pps:
        parts += f"; tcpdump on the ingress device (AF_PACKET) {pps['afpacket'] / plain:.2f}x"
    inc = per_round(r, "sampler_inc", "plain")
    drawn = (
        f"; drawing every 100th packet (`numgen inc`, a bench-only variant) instead: CPU per "
        f"packet {spread(inc['cpu'])}, +{median(inc['added_ns']):.0f} ns"
        if "cpu" in inc
        else f"; drawing every 100th packet (`numgen inc`, bench-only): {spread(inc['rate'])}"
    )
    specs = (
        (
            f"forwarding, 1 packet in {MIXED_SHARE} the capture's, against no rule",
            "mixed_captured",
            "mixed_plain",
            0.88,
            f"{nflog}, for the capture's share of the traffic",
        ),
        (
            "forwarding, every packet the capture's, against tcpdump reading the same rule",
            "captured",
            "tcpdump",
            1.10,
            f"no rule: {plain / 1e3:.0f} k pps; capture {pps['captured'] / plain:.2f}x of it"
            f"{parts}",
        ),
        (
            "forwarding, every packet the capture's, against the kernel floor (a reader "
            "that only receives)",
            "captured",
            "floor",
            0.95,
            f"{nflog}: the floor is {pps['floor'] / plain:.2f}x of no rule",
        ),
        (
            "forwarding, an active capture's table on packets it does not want (1 in 100 "
            "its), against no rule",
            "miss",
            "miss_plain",
            0.93,
            "the table's lookups: prefixes, then the filter",
        ),
        (
            "forwarding, the sampler's table (always there), against no rule",
            "sampler",
            "plain",
            0.95,
            f"the table's hook and its 1-in-100 random draw{drawn}",
        ),
    )
    out = []
    for name, ours, base, need, limits in specs:
        per = per_round(r, ours, base)
        n = len(per["rate"])
        alternating = f"alternating runs, {n} rounds: {spread(per['rate'])}"
        if "cpu" in per:
            judged = median(per["cpu"])
            how = (
                f"judged on CPU per forwarded packet, {n} rounds: {spread(per['cpu'])}, "
                f"+{median(per['added_ns']):.0f} ns on {ns[base]:.0f} ns with no rule; "
                f"{alternating}"
            )
        else:
            judged = median(per["rate"])
            how = f"judged on {alternating}"
            if ours in ("miss", "sampler"):
                how += f" (no CPU per packet: {r['perf']})"
        out.append(
            Figure(
                name,
                pps[ours],
                pps[base],
                f">= {need:.2f}x",
                judged >= need,
                "pps",
                f"{limits}; {how}",
                {"per_round": per} | ({"runs": r} if base == "tcpdump" else {}),
                judged_on=how,
            )
        )
    return out
