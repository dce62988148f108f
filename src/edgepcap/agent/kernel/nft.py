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
# A capture's tables, one per IP family; `inet`, a table for both, is only ever removed
# (an older agent's).
FAMILIES = ((4, "ip"), (6, "ip6"))
REMOVED_FAMILIES = ("ip", "ip6", "inet")
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


def _chain(family: str, table: str, name: str, hook: str | None = None) -> dict[str, Any]:
    chain: dict[str, Any] = {"family": family, "table": table, "name": name}
    if hook is not None:
        chain |= {"type": "filter", "hook": hook, "prio": PRIORITY_RAW, "policy": "accept"}
    return {"add": {"chain": chain}}


def _rule(family: str, table: str, chain: str, exprs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"add": {"rule": {"family": family, "table": table, "chain": chain, "expr": exprs}}}


def ruleset(rule: CaptureRule) -> dict[str, Any]:
    """The nftables JSON document that creates the capture's tables with their chains, sets
    and rules: one `ip` table and one `ip6` table of the same name (the second without
    chains when the capture has nothing to match in IPv6).

    Every packet of the machine walks these tables, so they are laid out for the packets
    they do not want (measured in BENCHMARKS.md, forwarding). A table of one IP family
    hooks only that family's packets, and its address matches need no test of the family
    first, which an `inet` table repeats before every one. The base chains test the
    account's prefixes first, because most of a machine's traffic is other accounts': a
    few prefixes as compares, which cost a fraction of a set lookup, more of them as an
    interval set; a packet in them jumps to the chain that tests the filter and logs.
    """
    table = rule.table
    cmds: list[dict[str, Any]] = []
    tail: list[dict[str, Any]] = [{"counter": None}]
    log: dict[str, Any] = {"group": rule.group}
    if rule.snaplen:
        log["snaplen"] = rule.snaplen
    tail += [{"log": log}, {"accept": None}]
    for version, family in FAMILIES:
        cmds.append({"add": {"table": {"family": family, "name": table}}})
        # Collapsed: an interval set refuses overlapping elements, and fewer rules.
        nets = list(ipaddress.collapse_addresses(n for n in rule.prefixes if n.version == version))
        alternatives = _filter_exprs(rule.filter, version)
        if not nets or alternatives is None:
            continue
        proto, settype = ("ip", "ipv4_addr") if version == 4 else ("ip6", "ipv6_addr")
        cmds += [_chain(family, table, "pre", "prerouting"), _chain(family, table, "out", "output")]
        # No filter: the prefix rules log. Else they jump to the filter's chain, which
        # exists before the jumps to it.
        unfiltered = alternatives == [[]]
        if not unfiltered:
            cmds.append(_chain(family, table, "filter"))
        # A packet the machine sends to itself passes `output`, then `prerouting` from
        # loopback: it is logged (or drawn) there, once. Tested on `output`, not on
        # `prerouting`, where every forwarded packet would pay for the test.
        cmds.append(
            _rule(
                family,
                table,
                "out",
                [_match({"meta": {"key": "oiftype"}}, "loopback"), {"accept": None}],
            )
        )
        if len(nets) <= INLINE_PREFIXES:
            matches: list[Any] = [_prefix_elem(n) for n in nets]
        else:
            setname = f"pfx{version}"
            cmds.append(
                {
                    "add": {
                        "set": {
                            "family": family,
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
        # A packet in the prefixes whose filter does not match returns and tries the next
        # prefix rule (a packet between two of the account's addresses jumps twice); one
        # that matches the filter is logged once and accepted there. `accept` ends only
        # this table's walk: other tables' chains and the rest of the hook still see it.
        then = tail if unfiltered else [{"jump": {"target": "filter"}}]
        body = [
            [_match(_payload(proto, field_name), right), *then]
            for field_name in ("daddr", "saddr")
            for right in matches
        ]
        bases = ("pre", "out")
        if rule.sample_mod:
            # Drawn first, once per packet: the packets not drawn (N-1 in N) skip the
            # prefixes and the filter, and each of the account's packets has the same
            # 1-in-N chance whichever of its rules would match it.
            cmds.append(_chain(family, table, "prefixes"))
            numgen = {"numgen": {"mode": "random", "mod": rule.sample_mod}}
            for chain in bases:
                draw = [_match(numgen, 0), {"jump": {"target": "prefixes"}}]
                cmds.append(_rule(family, table, chain, draw))
            bases = ("prefixes",)
        for chain in bases:
            cmds += [_rule(family, table, chain, exprs) for exprs in body]
        if not unfiltered:
            cmds += [_rule(family, table, "filter", [*exprs, *tail]) for exprs in alternatives]
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


def _drop(table: str) -> list[dict[str, Any]]:
    """Commands that delete the capture's tables of every family, whether they exist or
    not (adding a table that exists is no error; deleting one that does not is)."""
    cmds: list[dict[str, Any]] = []
    for family in REMOVED_FAMILIES:
        ident = {"family": family, "name": table}
        cmds += [{"add": {"table": ident}}, {"delete": {"table": ident}}]
    return cmds


def install(rule: CaptureRule, ns: str | None = None) -> None:
    """Create the tables (replacing stale ones of the same name) in one transaction."""
    replace(rule, ns)


def replace(rule: CaptureRule, ns: str | None = None) -> None:
    """Create or replace the tables in one transaction: no moment without them."""
    meta, *cmds = ruleset(rule)["nftables"]
    _nft(ns, {"nftables": [meta, *_drop(rule.table), *cmds]})


def remove(table: str, ns: str | None = None) -> bool:
    """Delete the capture's tables if they exist; True when one existed."""
    existed = table in list_tables(ns)
    if existed:
        _nft(ns, {"nftables": _drop(table)})
    return existed


def list_tables(ns: str | None = None) -> list[str]:
    """Names of the `edgepcap_*` tables, each once whatever its families."""
    data = json.loads(_nft(ns, None, "list", "tables") or '{"nftables": []}')
    names = [
        item["table"]["name"]
        for item in data.get("nftables", [])
        if "table" in item
        and item["table"].get("family") in REMOVED_FAMILIES
        and item["table"]["name"].startswith(TABLE_PREFIX)
    ]
    return list(dict.fromkeys(names))


def remove_stale(ns: str | None = None, keep: set[str] | None = None) -> list[str]:
    """Delete every `edgepcap_*` table not in `keep` (left behind by a crash)."""
    removed = []
    for table in list_tables(ns):
        if table not in (keep or set()):
            remove(table, ns)
            removed.append(table)
    return removed


def counters(table: str, ns: str | None = None) -> tuple[int, int]:
    """Packets and bytes the tables' rules matched (before NFLOG could drop any)."""
    packets = bytes_ = 0
    for _version, family in FAMILIES:
        data = json.loads(_nft(ns, None, "list", "table", family, table))
        for item in data.get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr and isinstance(expr["counter"], dict):
                    packets += expr["counter"].get("packets", 0)
                    bytes_ += expr["counter"].get("bytes", 0)
    return packets, bytes_
