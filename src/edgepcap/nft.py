"""nftables tables for captures and sampling, built as JSON from typed values.

User input never becomes nft text: every address, port and number below is a typed
Python value placed in the JSON document that `nft -j -f -` reads.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

from edgepcap import netns
from edgepcap.filters import FilterV1

TABLE_PREFIX = "edgepcap_"
PRIORITY_RAW = -300
PORT_PROTOCOLS = (6, 17, 33, 132, 136)  # tcp, udp, dccp, sctp, udplite: have th ports
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NftError(RuntimeError):
    pass


@dataclass(frozen=True)
class CaptureRule:
    """What one table matches: the account's prefixes AND the filter, logged to a group."""

    table: str
    prefixes: list[Network]
    filter: FilterV1 = field(default_factory=FilterV1)
    group: int = 0
    snaplen: int | None = None
    sample_mod: int | None = None  # log 1 in `sample_mod` packets (numgen random)

    def __post_init__(self) -> None:
        if not self.table.startswith(TABLE_PREFIX) or not self.table.replace("_", "").isalnum():
            raise ValueError(f"bad table name {self.table!r}")


def _payload(proto: str, name: str) -> dict[str, Any]:
    return {"payload": {"protocol": proto, "field": name}}


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _prefix_elem(net: Network) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _filter_exprs(f: FilterV1, version: int) -> list[dict[str, Any]] | None:
    """Matches for `f` in one IP version, or None when `f` cannot match that version."""
    proto = "ip" if version == 4 else "ip6"
    exprs: list[dict[str, Any]] = []
    for addr, name in ((f.source, "saddr"), (f.destination, "daddr")):
        if addr is not None:
            if addr.version != version:
                return None
            exprs.append(_match(_payload(proto, name), str(addr)))
    l4 = {"meta": {"key": "l4proto"}}
    if f.protocol is not None:
        exprs.append(_match(l4, f.protocol))
    if f.source_port is not None or f.destination_port is not None:
        if f.protocol is None:
            exprs.append(_match(l4, {"set": list(PORT_PROTOCOLS)}))
        elif f.protocol not in PORT_PROTOCOLS:
            return None
        if f.source_port is not None:
            exprs.append(_match(_payload("th", "sport"), f.source_port))
        if f.destination_port is not None:
            exprs.append(_match(_payload("th", "dport"), f.destination_port))
    return exprs


def ruleset(rule: CaptureRule) -> dict[str, Any]:
    """The nftables JSON document that creates the table with its chains, sets and rules."""
    fam = "inet"
    table = rule.table
    cmds: list[dict[str, Any]] = [{"add": {"table": {"family": fam, "name": table}}}]
    chains = {"pre": "prerouting", "out": "output"}
    for name, hook in chains.items():
        cmds.append(
            {
                "add": {
                    "chain": {
                        "family": fam,
                        "table": table,
                        "name": name,
                        "type": "filter",
                        "hook": hook,
                        "prio": PRIORITY_RAW,
                        "policy": "accept",
                    }
                }
            }
        )
    tail: list[dict[str, Any]] = []
    if rule.sample_mod:
        tail.append(_match({"numgen": {"mode": "random", "mod": rule.sample_mod}}, 0))
    tail.append({"counter": None})
    log: dict[str, Any] = {"group": rule.group}
    if rule.snaplen:
        log["snaplen"] = rule.snaplen
    tail.append({"log": log})
    for version in (4, 6):
        nets = [n for n in rule.prefixes if n.version == version]
        exprs = _filter_exprs(rule.filter, version)
        if not nets or exprs is None:
            continue
        proto, settype, setname = (
            ("ip", "ipv4_addr", "pfx4") if version == 4 else ("ip6", "ipv6_addr", "pfx6")
        )
        cmds.append(
            {
                "add": {
                    "set": {
                        "family": fam,
                        "table": table,
                        "name": setname,
                        "type": settype,
                        "flags": ["interval"],
                        "auto-merge": True,
                        "elem": [_prefix_elem(n) for n in nets],
                    }
                }
            }
        )
        ref = "@" + setname
        # A packet between two of the account's own addresses matches the first rule
        # only, so it is logged once (and sampled by one draw).
        to_prefix = [_match(_payload(proto, "daddr"), ref)]
        from_prefix = [
            _match(_payload(proto, "saddr"), ref),
            _match(_payload(proto, "daddr"), ref, "!="),
        ]
        for chain in chains:
            for direction in (to_prefix, from_prefix):
                # The filter's compares go before the set lookups: they are cheaper and
                # reject most packets. `accept` ends only this table's chain, so a logged
                # packet skips the second rule's lookups; other tables' chains and the
                # rest of the hook still see it (BENCHMARKS.md, forwarding).
                cmds.append(
                    {
                        "add": {
                            "rule": {
                                "family": fam,
                                "table": table,
                                "chain": chain,
                                "expr": [*exprs, *direction, *tail, {"accept": None}],
                            }
                        }
                    }
                )
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *cmds]}


def _nft(ns: str | None, document: dict[str, Any] | None, *args: str) -> str:
    command = netns.argv(ns, ["nft", "-j", *args])
    if document is not None:
        command += ["-f", "-"]
    out = subprocess.run(
        command,
        input=json.dumps(document) if document else None,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        raise NftError(f"nft {' '.join(args) or '-f -'} failed: {out.stderr.strip()[:500]}")
    return out.stdout


def apply(ns: str | None, document: dict[str, Any]) -> None:
    """Apply an nftables JSON document in namespace `ns`."""
    _nft(ns, document)


def install(rule: CaptureRule, ns: str | None = None) -> None:
    """Create the table (replacing a stale one of the same name) in one transaction."""
    replace(rule, ns)


def replace(rule: CaptureRule, ns: str | None = None) -> None:
    """Create or replace the table in one transaction: no moment without it."""
    document = ruleset(rule)
    ident = {"family": "inet", "name": rule.table}
    head = [{"add": {"table": ident}}, {"delete": {"table": ident}}]
    _nft(ns, {"nftables": [document["nftables"][0], *head, *document["nftables"][1:]]})


def remove(table: str, ns: str | None = None) -> bool:
    """Delete the table if it exists; True when it existed."""
    try:
        _nft(ns, {"nftables": [{"delete": {"table": {"family": "inet", "name": table}}}]})
    except NftError as exc:
        if "No such file or directory" in str(exc):
            return False
        raise
    return True


def list_tables(ns: str | None = None) -> list[str]:
    data = json.loads(_nft(ns, None, "list", "tables") or '{"nftables": []}')
    return [
        item["table"]["name"]
        for item in data.get("nftables", [])
        if "table" in item
        and item["table"].get("family") == "inet"
        and item["table"]["name"].startswith(TABLE_PREFIX)
    ]


def remove_stale(ns: str | None = None, keep: set[str] | None = None) -> list[str]:
    """Delete every `edgepcap_*` table not in `keep` (left behind by a crash)."""
    removed = []
    for table in list_tables(ns):
        if table not in (keep or set()):
            remove(table, ns)
            removed.append(table)
    return removed


def counters(table: str, ns: str | None = None) -> tuple[int, int]:
    """Packets and bytes the table's rules matched (before NFLOG could drop any)."""
    data = json.loads(_nft(ns, None, "list", "table", "inet", table))
    packets = bytes_ = 0
    for item in data.get("nftables", []):
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr and isinstance(expr["counter"], dict):
                packets += expr["counter"].get("packets", 0)
                bytes_ += expr["counter"].get("bytes", 0)
    return packets, bytes_
