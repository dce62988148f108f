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

from edgepcap.agent.kernel import netns
from edgepcap.formats.filters import PORT_PROTOCOLS, FilterV1

TABLE_PREFIX = "edgepcap_"
PRIORITY_RAW = -300
# Up to this many prefixes of one IP version are tested as compares, one rule per prefix
# and direction; more as an interval set: a compare costs a small fraction of a set
# lookup, and past this many the compares no longer clearly win (BENCHMARKS.md, "Capture
# tables and the packets they do not want").
INLINE_PREFIXES = 4
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


def _filter_exprs(f: FilterV1, version: int) -> list[list[dict[str, Any]]] | None:
    """Matches for `f` in one IP version, as alternatives (a packet matches when it matches
    every expression of one of them), or None when `f` cannot match that version. The
    fields that match either direction (`address`, `port`) make two alternatives each."""
    proto = "ip" if version == 4 else "ip6"
    exprs: list[dict[str, Any]] = []
    for addr, name in ((f.source, "saddr"), (f.destination, "daddr"), (f.either, None)):
        if addr is not None and addr.version != version:
            return None
        if addr is not None and name is not None:
            exprs.append(_match(_payload(proto, name), str(addr)))
    l4 = {"meta": {"key": "l4proto"}}
    if f.protocol is not None:
        exprs.append(_match(l4, f.protocol))
    if f.has_ports:
        if f.protocol is None:
            exprs.append(_match(l4, {"set": list(PORT_PROTOCOLS)}))
        elif f.protocol not in PORT_PROTOCOLS:
            return None
        if f.source_port is not None:
            exprs.append(_match(_payload("th", "sport"), f.source_port))
        if f.destination_port is not None:
            exprs.append(_match(_payload("th", "dport"), f.destination_port))
    alternatives = [exprs]
    for value, fields, payload in (
        (f.address, ("saddr", "daddr"), proto),
        (f.port, ("sport", "dport"), "th"),
    ):
        if value is not None:
            alternatives = [
                [*alt, _match(_payload(payload, name), value)]
                for alt in alternatives
                for name in fields
            ]
    return alternatives


def _chain(table: str, name: str, hook: str | None = None) -> dict[str, Any]:
    chain: dict[str, Any] = {"family": "inet", "table": table, "name": name}
    if hook is not None:
        chain |= {"type": "filter", "hook": hook, "prio": PRIORITY_RAW, "policy": "accept"}
    return {"add": {"chain": chain}}


def _rule(table: str, chain: str, exprs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"add": {"rule": {"family": "inet", "table": table, "chain": chain, "expr": exprs}}}


def ruleset(rule: CaptureRule) -> dict[str, Any]:
    """The nftables JSON document that creates the table with its chains, sets and rules.

    Every packet of the machine walks this table, so it is laid out for the packets it
    does not want (measured in BENCHMARKS.md, forwarding): a base chain's rule tests the
    IP version, the sample draw and the filter, then jumps to that version's chain, which
    tests the account's prefixes; a few prefixes as compares, which cost a fraction of a
    set lookup, more of them as an interval set.
    """
    table = rule.table
    cmds: list[dict[str, Any]] = [{"add": {"table": {"family": "inet", "name": table}}}]
    hooks = {"pre": "prerouting", "out": "output"}
    cmds += [_chain(table, name, hook) for name, hook in hooks.items()]
    tail: list[dict[str, Any]] = [{"counter": None}]
    log: dict[str, Any] = {"group": rule.group}
    if rule.snaplen:
        log["snaplen"] = rule.snaplen
    tail += [{"log": log}, {"accept": None}]
    for version in (4, 6):
        # Collapsed: an interval set refuses overlapping elements, and fewer rules.
        nets = list(ipaddress.collapse_addresses(n for n in rule.prefixes if n.version == version))
        alternatives = _filter_exprs(rule.filter, version)
        if not nets or alternatives is None:
            continue
        proto, settype, name = (
            ("ip", "ipv4_addr", "v4") if version == 4 else ("ip6", "ipv6_addr", "v6")
        )
        family = _match({"meta": {"key": "nfproto"}}, "ipv4" if version == 4 else "ipv6")
        # A packet the machine sends to itself passed `output` already: on `prerouting`,
        # from loopback, it would be logged (or drawn) a second time.
        from_lo = _match({"meta": {"key": "iiftype"}}, "loopback", "!=")
        heads = {"out": [family], "pre": [family, from_lo]}
        draw: list[dict[str, Any]] = []
        if rule.sample_mod:
            # Drawn first, once per packet: the packets not drawn (N-1 in N) skip the
            # filter and the prefixes, and each of the account's packets has the same
            # 1-in-N chance whichever of its rules would match it.
            numgen = {"numgen": {"mode": "random", "mod": rule.sample_mod}}
            if len(alternatives) == 1:
                draw = [_match(numgen, 0)]
            else:  # one draw for all the alternatives: the undrawn leave the table here
                for chain, head in heads.items():
                    cmds.append(
                        _rule(table, chain, [*head, _match(numgen, 0, "!="), {"accept": None}])
                    )
        cmds.append(_chain(table, name))  # before the jumps to it
        # A packet that matches an alternative but none of the prefixes returns and tries
        # the next; one that matches the prefixes is logged once and accepted there.
        for exprs in alternatives:
            for chain, head in heads.items():
                cmds.append(_rule(table, chain, [*head, *draw, *exprs, {"jump": {"target": name}}]))
        if len(nets) <= INLINE_PREFIXES:
            matches: list[Any] = [_prefix_elem(n) for n in nets]
        else:
            setname = f"pfx{version}"
            cmds.append(
                {
                    "add": {
                        "set": {
                            "family": "inet",
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
            matches = ["@" + setname]
        # Each rule ends in `accept`, so a packet between two of the account's addresses
        # is logged once (the "to" rules come first, so theirs is the counter it adds to).
        # `accept` ends only this table's walk; other tables' chains and the rest of the
        # hook still see the packet.
        for field_name in ("daddr", "saddr"):
            for right in matches:
                cmds.append(_rule(table, name, [_match(_payload(proto, field_name), right), *tail]))
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
