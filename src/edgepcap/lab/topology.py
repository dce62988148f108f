"""Builds and removes the lab's namespaces, links, addresses and routes.

client ──198.18.i.0/30── machine i ──198.18.(64+i).0/30── customer (account A, 203.0.113.0/25)
                                   └─198.18.(128+i).0/30── other    (account B, 203.0.113.128/25)

Machines are counted across colos in the order given, at most 8 in all: `--colo ORD
--colo AMS --machines 2` makes ord01 ord02 ams01 ams02, machines 1 to 4. Every machine
links the one client to both customers, whatever its colo; colos differ only in whom
the agents register with. Traffic to customer host i crosses machine i (spread by
destination), both ways: host i's colo is machine i's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepcap.agent.kernel import netns, nft

CLIENT4, CLIENT6 = "198.51.100.10", "2001:db8:c::10"
TENANTS = {
    "customer": ("203.0.113.0/25", "2001:db8:a::/48", 0),
    "other": ("203.0.113.128/25", "2001:db8:b::/48", 128),
}
MAX_MACHINES = 8  # in all colos: link i is 198.18.i.0/30, host i is 203.0.113.(10·i)


def tag_of(data_dir: Path) -> str:
    """What the lab's namespace names carry: labs in different data dirs never collide."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Layout:
    """The lab's names: its tag, and its machines colo by colo (in the order given)."""

    tag: str
    colos: dict[str, list[str]]

    @classmethod
    def create(cls, data_dir: Path, colos: str | Sequence[str], count: int) -> Layout:
        """`count` machines in each colo: ORD's are ord01, ord02, …"""
        names = [colos] if isinstance(colos, str) else list(colos)
        return cls(
            tag=tag_of(data_dir),
            colos={c.upper(): [f"{c.lower()}{i:02d}" for i in range(1, count + 1)] for c in names},
        )

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Layout:
        """From `lab-state.json` (one written before colos were kept: its one colo)."""
        return cls(tag=state["tag"], colos=state.get("colos") or {state["colo"]: state["machines"]})

    @property
    def colo(self) -> str:
        """The first colo."""
        return next(iter(self.colos))

    @property
    def machines(self) -> list[str]:
        """Every machine, colo by colo: machine i (from 1) is `machines[i - 1]`."""
        return [m for members in self.colos.values() for m in members]

    def colo_of(self, machine: str) -> str:
        return next(c for c, members in self.colos.items() if machine in members)

    def ns(self, role: str) -> str:
        return f"ep{self.tag}-{role}"

    @property
    def all_namespaces(self) -> list[str]:
        return [
            self.ns("client"),
            *(self.ns(t) for t in TENANTS),
            *(self.ns(m) for m in self.machines),
        ]

    def hosts(self, tenant: str) -> list[tuple[str, str]]:
        """Host i of a tenant (v4, v6) is reached through machine i."""
        v4, v6, _base = TENANTS[tenant]
        net4 = ipaddress.ip_network(v4)
        net6 = ipaddress.ip_network(v6)
        return [(str(net4[10 * i]), str(net6[0x10 * i])) for i in range(1, len(self.machines) + 1)]


def _sysctl(ns: str, *settings: str) -> None:
    for setting in settings:
        subprocess.run(netns.argv(ns, ["sysctl", "-qw", setting]), check=True, capture_output=True)


def link(a_ns: str, a_name: str, b_ns: str, b_name: str) -> None:
    """A veth pair with one end in each namespace, both up."""
    netns.ip(
        None,
        "link",
        "add",
        a_name,
        "netns",
        a_ns,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b_ns,
    )
    netns.ip(a_ns, "link", "set", a_name, "up")
    netns.ip(b_ns, "link", "set", b_name, "up")


def _addr(ns: str, dev: str, cidr: str) -> None:
    extra = ["nodad"] if ":" in cidr else []
    netns.ip(ns, "addr", "add", cidr, "dev", dev, *extra)


def build(layout: Layout) -> None:
    teardown(layout)
    for name in layout.all_namespaces:
        netns.add(name)
        netns.ip(name, "link", "set", "lo", "up")
        _sysctl(
            name,
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        )
    client = layout.ns("client")
    _addr(client, "lo", f"{CLIENT4}/32")
    _addr(client, "lo", f"{CLIENT6}/128")
    for tenant in TENANTS:
        tns = layout.ns(tenant)
        for v4, v6 in layout.hosts(tenant):
            _addr(tns, "lo", f"{v4}/32")
            _addr(tns, "lo", f"{v6}/128")
        # The lab's sink: customers swallow UDP quietly, so that the only replies are
        # the deterministic ones (TCP RST to a SYN, ICMP echo reply).
        sink = {"family": "inet", "table": "lab_sink", "name": "input"}
        udp = {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": 17}}
        nft.apply(
            tns,
            {
                "nftables": [
                    {"add": {"table": {"family": "inet", "name": "lab_sink"}}},
                    {
                        "add": {
                            "chain": {
                                **sink,
                                "type": "filter",
                                "hook": "input",
                                "prio": 0,
                                "policy": "accept",
                            }
                        }
                    },
                    {
                        "add": {
                            "rule": {
                                "family": "inet",
                                "table": "lab_sink",
                                "chain": "input",
                                "expr": [udp, {"drop": None}],
                            }
                        }
                    },
                ]
            },
        )
    for i, machine in enumerate(layout.machines, start=1):
        mns = layout.ns(machine)
        _sysctl(mns, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        link(client, f"to-{machine}", mns, "client")
        _addr(client, f"to-{machine}", f"198.18.{i}.1/30")
        _addr(mns, "client", f"198.18.{i}.2/30")
        _addr(client, f"to-{machine}", f"2001:db8:ff:{i:x}::1/64")
        _addr(mns, "client", f"2001:db8:ff:{i:x}::2/64")
        netns.ip(mns, "route", "add", "198.51.100.0/24", "via", f"198.18.{i}.1")
        netns.ip(mns, "-6", "route", "add", "2001:db8:c::/48", "via", f"2001:db8:ff:{i:x}::1")
        for tenant, (_v4, _v6, base) in TENANTS.items():
            tns = layout.ns(tenant)
            o = 64 + i if base == 0 else 128 + i
            link(mns, tenant, tns, f"to-{machine}")
            _addr(mns, tenant, f"198.18.{o}.1/30")
            _addr(tns, f"to-{machine}", f"198.18.{o}.2/30")
            _addr(mns, tenant, f"2001:db8:ff:{o:x}::1/64")
            _addr(tns, f"to-{machine}", f"2001:db8:ff:{o:x}::2/64")
            for j, (h4, h6) in enumerate(layout.hosts(tenant), start=1):
                netns.ip(mns, "route", "add", f"{h4}/32", "via", f"198.18.{o}.2")
                netns.ip(mns, "-6", "route", "add", f"{h6}/128", "via", f"2001:db8:ff:{o:x}::2")
                if j == i:
                    # Client → host j through machine j; host j answers through machine j.
                    netns.ip(client, "route", "add", f"{h4}/32", "via", f"198.18.{i}.2")
                    netns.ip(
                        client, "-6", "route", "add", f"{h6}/128", "via", f"2001:db8:ff:{i:x}::2"
                    )
                    table = str(100 + i)
                    netns.ip(tns, "rule", "add", "from", f"{h4}/32", "table", table)
                    netns.ip(tns, "-6", "rule", "add", "from", f"{h6}/128", "table", table)
                    netns.ip(tns, "route", "add", "default", "via", f"198.18.{o}.1", "table", table)
                    netns.ip(
                        tns,
                        "-6",
                        "route",
                        "add",
                        "default",
                        "via",
                        f"2001:db8:ff:{o:x}::1",
                        "table",
                        table,
                    )


def teardown(layout: Layout) -> None:
    for name in layout.all_namespaces:
        netns.delete(name)


def stray_namespaces(tag: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith(f"ep{tag}-")]
