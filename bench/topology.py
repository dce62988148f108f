"""Benchmark namespaces: a generator and a receiver (and a router), always removed after."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgepcap.agent.kernel import netns, nft
from edgepcap.lab.topology import link

GEN_MAC, RX_MAC, RT_IN_MAC, RT_OUT_MAC = (
    "02:00:00:00:00:01",
    "02:00:00:00:00:02",
    "02:00:00:00:00:03",
    "02:00:00:00:00:04",
)
DST = "203.0.113.77"
OTHER_DST = "203.0.113.78"  # in no capture's prefixes: traffic a capture rule lets pass
SINK = "bench_sink"  # the receiver's table: counts what arrives, then drops it


@dataclass
class Topology:
    gen: str
    rx: str
    router: str | None
    dev: str  # the generator's device
    next_mac: str  # where the generator's frames go
    others: int = 0  # packets to OTHER_DST (no capture's) sent after each one to DST
    wrap: tuple[str, ...] = ()  # a command trafgen runs under (perf, to clock its CPU)

    def trafgen(
        self, count: int, payload: int, seconds: float = 60, rate: str | None = None
    ) -> float:
        """Send `count` UDP packets as fast as one core can; returns the seconds it took.
        With `others`, each packet to DST is followed by that many to OTHER_DST."""
        frames = "".join(
            "{\n"
            f"  eth(da={self.next_mac}, sa={GEN_MAC}, type=0x0800),\n"
            f"  ipv4(saddr=198.18.200.1, daddr={daddr}, ttl=64, proto=17),\n"
            "  udp(sp=4000, dp=5000),\n"
            f"  fill(0xab, {payload})\n"
            "}\n"
            for daddr in [DST] + [OTHER_DST] * self.others
        )
        conf = Path(tempfile.mkstemp(suffix=".cfg")[1])
        conf.write_text(frames)
        try:
            argv = netns.argv(
                self.gen,
                [
                    "trafgen",
                    "--dev",
                    self.dev,
                    "--conf",
                    str(conf),
                    "-n",
                    str(count),
                    "--cpus",
                    "1",
                    "-q",
                    *(["-b", rate] if rate else []),
                ],
            )
            out = subprocess.run(
                [*self.wrap, *argv],
                capture_output=True,
                text=True,
                timeout=seconds,
                check=True,
            )
        finally:
            conf.unlink(missing_ok=True)
        for line in out.stdout.splitlines():
            if "usec on CPU" in line:
                sec, usec = line.split()[0], line.split()[2]
                return int(sec) + int(usec) / 1e6
        return 0.0

    def at_router(self) -> Topology:
        """The same generator with the router as the receiver: where captures run when
        forwarding is measured."""
        assert self.router is not None, "only a routed() topology has a router"
        return dataclasses.replace(self, rx=self.router, router=None)

    def counter(self, ns: str, table: str) -> int:
        data = json.loads(
            subprocess.run(
                netns.argv(ns, ["nft", "-j", "list", "table", "inet", table]),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        return sum(
            e["counter"]["packets"]
            for item in data["nftables"]
            for e in item.get("rule", {}).get("expr", [])
            if "counter" in e
        )


def sink_table(ns: str) -> None:
    """The SINK table in `ns`: counts the benchmark's UDP in prerouting and drops it, after
    any capture's table has seen it (their priority is nft.PRIORITY_RAW)."""
    count_and_drop = [
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "udp", "field": "dport"}},
                "right": 5000,
            }
        },
        {"counter": None},
        {"drop": None},
    ]
    nft.apply(
        ns,
        {
            "nftables": [
                {"add": {"table": {"family": "inet", "name": SINK}}},
                {
                    "add": {
                        "chain": {
                            "family": "inet",
                            "table": SINK,
                            "name": "c",
                            "type": "filter",
                            "hook": "prerouting",
                            "prio": -300,
                            "policy": "accept",
                        }
                    }
                },
                {
                    "add": {
                        "rule": {
                            "family": "inet",
                            "table": SINK,
                            "chain": "c",
                            "expr": count_and_drop,
                        }
                    }
                },
            ]
        },
    )


@contextlib.contextmanager
def pair() -> Iterator[Topology]:
    """gen ──veth── rx: every frame the generator sends arrives in rx's prerouting, where
    captures run; then rx's SINK counts and drops it.

    veth runs rx's stack on the generator's core. Without the drop, each packet (to an
    address rx does not have) took rx's routing error path there, ~0.6 µs that slowed
    the generator: the "top rate" the captures were measured at was ~15 % under it."""
    tag = secrets.token_hex(3)
    gen, rx = f"epbench{tag}-gen", f"epbench{tag}-rx"
    try:
        for n in (gen, rx):
            netns.add(n)
            netns.ip(n, "link", "set", "lo", "up")
        link(gen, "g0", rx, "r0")
        netns.ip(gen, "link", "set", "g0", "address", GEN_MAC)
        netns.ip(rx, "link", "set", "r0", "address", RX_MAC)
        sink_table(rx)
        yield Topology(gen=gen, rx=rx, router=None, dev="g0", next_mac=RX_MAC)
    finally:
        for n in (gen, rx):
            netns.delete(n)


@contextlib.contextmanager
def routed() -> Iterator[Topology]:
    """gen ── router ── rx: the router forwards to rx, whose SINK counts and drops arrivals.

    veth runs every namespace's stack on the generator's core, the router's core too.
    Without the drop, each packet took rx's routing error path there (a route built and
    freed, `ip_error`): ~0.6 µs of the receiver's work that padded the no-rule figure
    forwarding is measured against (BENCHMARKS.md)."""
    tag = secrets.token_hex(3)
    gen, router, rx = f"epbench{tag}-gen", f"epbench{tag}-rt", f"epbench{tag}-rx"
    try:
        for n in (gen, router, rx):
            netns.add(n)
            netns.ip(n, "link", "set", "lo", "up")
        link(gen, "g0", router, "i0")
        link(router, "o0", rx, "r0")
        netns.ip(gen, "link", "set", "g0", "address", GEN_MAC)
        netns.ip(router, "link", "set", "i0", "address", RT_IN_MAC)
        netns.ip(router, "link", "set", "o0", "address", RT_OUT_MAC)
        netns.ip(rx, "link", "set", "r0", "address", RX_MAC)
        netns.ip(router, "addr", "add", "198.18.200.2/30", "dev", "i0")
        netns.ip(router, "addr", "add", "198.18.201.1/30", "dev", "o0")
        netns.ip(rx, "addr", "add", "198.18.201.2/30", "dev", "r0")
        netns.ip(router, "route", "add", "203.0.113.0/24", "via", "198.18.201.2")
        netns.ip(router, "neigh", "add", "198.18.201.2", "lladdr", RX_MAC, "dev", "o0")
        subprocess.run(netns.argv(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]), check=True)
        for n in (router, rx):
            subprocess.run(
                netns.argv(n, ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]), check=True
            )
        sink_table(rx)
        yield Topology(gen=gen, rx=rx, router=router, dev="g0", next_mac=RT_IN_MAC)
    finally:
        for n in (gen, router, rx):
            netns.delete(n)
