"""`edgepcap traffic` and `edgepcap triggers …`: the account's sampled traffic, and the
full captures that start themselves when it spikes (edgepcap's extensions of the API).

Like the other customer commands they call the API through `edgepcap.client` and print
with `console`; the server checks what is asked (groups, steps, windows, filters) and its
refusals are the error printed. Only relative times (`15m`, `1h`, `24h`) are read here,
turned into absolute ones before the request.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Column, Table
from rich.text import Text

from edgepcap.cli.console import _id_column, _print_json, out
from edgepcap.cli.options import (
    AccountId,
    Address,
    Api,
    DestinationAddress,
    DestinationPort,
    Json,
    Port,
    Protocol,
    SourceAddress,
    SourcePort,
    Token,
    _client,
    _run,
    filter_v1,
)

_RELATIVE = re.compile(r"(\d+)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BARS = "▁▂▃▄▅▆▇█"
# Points drawn per sparkline at most: neighbouring steps are averaged to fit.
SPARK_WIDTH = 48
_STATUS_STYLE = {"armed": "green", "cooling_down": "yellow", "expired": "dim"}

_TIME = "RFC 3339 (2026-12-06T14:00:00Z), Unix seconds, or a time ago: 15m, 1h, 6h, 24h"
Since = Annotated[str | None, typer.Option(help=f"Window start: {_TIME}. Default: 1 h ago.")]
Until = Annotated[str | None, typer.Option(help=f"Window end: {_TIME}. Default: now.")]


def _relative(value: str) -> dt.timedelta | None:
    match = _RELATIVE.fullmatch(value.strip())
    return dt.timedelta(seconds=int(match[1]) * _UNIT[match[2]]) if match else None


def _ago(value: str | None, now: dt.datetime) -> str | None:
    """`15m` (and `30s`, `1h`, `2d`) as the Unix seconds that long before `now`; any other
    value as it is, for the API to read or refuse."""
    if value is None:
        return None
    delta = _relative(value)
    return value if delta is None else str(int((now - delta).timestamp()))


def _ahead(value: str | None, now: dt.datetime) -> str | None:
    """`24h` as RFC 3339 that long after `now`; any other value as it is."""
    if value is None:
        return None
    delta = _relative(value)
    return value if delta is None else (now + delta).isoformat(timespec="seconds")


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """`values` as bars scaled to their peak, averaged by neighbours down to `width`
    bars; a step without traffic is the lowest bar, any traffic at least the second."""
    per = max(1, math.ceil(len(values) / width))
    chunks = [values[i : i + per] for i in range(0, len(values), per)]
    cells = [sum(chunk) / len(chunk) for chunk in chunks]
    top = max(cells, default=0.0)
    if top <= 0:
        return BARS[0] * len(cells)
    return "".join(BARS[0] if v <= 0 else BARS[1 + round(v / top * 6)] for v in cells)


def _si(value: float, unit: str = "") -> str:
    """About 3 significant digits and a k/M/G/T prefix: `30.0k`, `500`, `1.23 Mbit/s`."""
    prefix = ""
    for p, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            value, prefix = value / scale, p
            break
    digits = f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    if value == 0:
        digits = "0"
    return f"{digits} {prefix}{unit}" if unit else f"{digits}{prefix}"


def _parse(rfc3339: str) -> dt.datetime:
    return dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))


def render(result: dict[str, Any], tty: bool) -> RenderableType:
    """The API's traffic answer as a table, one row per group. For a terminal: rounded
    numbers, protocol names, colour, and the window and filter under it; for scripts
    (`tty` False): the table alone, exact numbers, without borders or colour."""
    seconds = max(1.0, (_parse(result["until"]) - _parse(result["since"])).total_seconds())
    group = result["group_by"]
    if tty:
        from edgepcap.formats.filters import summary  # pydantic: only for a person's table
        from edgepcap.formats.packets import PROTOCOLS

        table = Table(
            group,
            Column("pkt/s", justify="right"),
            Column("packets ± 95 %", justify="right"),
            Column("bit/s", justify="right"),
            Column("trend (pkt/s)", no_wrap=True),
        )
        note = Text(
            f"{result['since']} → {result['until']}, step {result['step']} s, "
            f"{summary(result['filter_v1'])}: estimated from 1 in {result['sample_rate']} "
            f"packets ({result['samples']} samples)",
            style="dim",
        )
    else:
        headers = (group, "pkt_s", "packets", "packets_error_95", "bit_s", "trend")
        table = Table(*headers, box=None, pad_edge=False)
    for s in result["series"]:
        trend = sparkline([p[1] for p in s["points"]])
        pps, bps = s["packets"] / seconds, s["bits"] / seconds
        if not tty:
            row = (f"{pps:.1f}", str(s["packets"]), str(s["packets_error_95"]), f"{bps:.0f}")
            table.add_row(s["key"], *row, trend)
            continue
        key = s["key"]
        if group == "protocol" and key.isdigit() and int(key) in PROTOCOLS:
            key = f"{key} {PROTOCOLS[int(key)]}"
        table.add_row(
            Text(key, style="dim" if s["key"] == "other" else "bold"),
            _si(pps),
            f"{_si(s['packets'])} ± {_si(s['packets_error_95'])}",
            _si(bps, "bit/s"),
            Text(trend, style="cyan"),
        )
    return Group(table, note) if tty else table


def traffic(
    group_by: Annotated[
        str | None,
        typer.Option(
            help="protocol (default), source_address, destination_address, source_port, "
            "destination_port, colo or machine."
        ),
    ] = None,
    since: Since = None,
    until: Until = None,
    step: Annotated[
        int | None, typer.Option(help="Seconds per point, a multiple of 10. Default: ~360 points.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Top groups shown (1-50, default 10); the rest: other.")
    ] = None,
    source_address: SourceAddress = None,
    destination_address: DestinationAddress = None,
    source_port: SourcePort = None,
    destination_port: DestinationPort = None,
    protocol: Protocol = None,
    address: Address = None,
    port: Port = None,
    as_json: Json = False,
    api: Api = None,
    account: AccountId = None,
    token: Token = None,
) -> None:
    """The account's sampled traffic per group: packets/s, packets, bits/s, a trend.

    Estimated from the continuous 1-in-100 samples of the last 24 h: the mean rates over
    the window, the packets with their 95 % bound, and a sparkline of packets/s per step.
    Piped, the table is plain numbers in columns, for scripts."""
    client = _client(api, account, token)
    now = dt.datetime.now(dt.UTC)
    params = {
        "since": _ago(since, now),
        "until": _ago(until, now),
        "step": step,
        "group_by": group_by,
        "limit": limit,
        **filter_v1(
            source_address,
            destination_address,
            source_port,
            destination_port,
            protocol,
            address,
            port,
        ),
    }
    result = _run(client.traffic, params)
    if as_json:
        _print_json(result)
        return
    tty = getattr(out.file, "isatty", lambda: False)()
    if tty and not result["series"]:
        out.print(f"no sampled traffic from {result['since']} to {result['until']}")
        return
    out.print(render(result, tty))


def triggers_create(
    threshold_pps: Annotated[
        int, typer.Option(help="Fire at this many estimated packets/s of matching traffic.")
    ],
    colo: Annotated[str, typer.Option(help="The capture's colo (ORD) or machine (ord02).")],
    destination_conf: Annotated[
        str, typer.Option("--destination-conf", "--destination", help="A validated bucket.")
    ],
    window: Annotated[int, typer.Option(help="Seconds the rate is measured over (10-300).")] = 10,
    cooldown: Annotated[int, typer.Option(help="Seconds without firing after a fire.")] = 300,
    expires: Annotated[
        str | None,
        typer.Option(help="RFC 3339, or from now: 24h, 7d (at most 30 days). Default: 24 h."),
    ] = None,
    time_limit: Annotated[float, typer.Option(help="The capture's seconds (1-86400).")] = 60,
    packet_limit: Annotated[float | None, typer.Option(help="The capture's packets.")] = None,
    byte_limit: Annotated[float | None, typer.Option(help="The capture's bytes.")] = None,
    source_address: SourceAddress = None,
    destination_address: DestinationAddress = None,
    source_port: SourcePort = None,
    destination_port: DestinationPort = None,
    protocol: Protocol = None,
    address: Address = None,
    port: Port = None,
    as_json: Json = False,
    api: Api = None,
    account: AccountId = None,
    token: Token = None,
) -> None:
    """Arm a full capture of the traffic matching the filter that starts itself when that
    traffic reaches --threshold-pps over --window seconds (from the sampled traffic)."""
    client = _client(api, account, token)
    capture: dict[str, Any] = {
        "system": "magic-transit",
        "type": "full",
        "colo_name": colo,
        "destination_conf": destination_conf,
        "time_limit": time_limit,
    }
    for key, value in (("packet_limit", packet_limit), ("byte_limit", byte_limit)):
        if value is not None:
            capture[key] = value
    body: dict[str, Any] = {
        "filter_v1": filter_v1(
            source_address,
            destination_address,
            source_port,
            destination_port,
            protocol,
            address,
            port,
        ),
        "threshold_pps": threshold_pps,
        "window": window,
        "cooldown": cooldown,
        "capture": capture,
    }
    if expires is not None:
        body["expires"] = _ahead(expires, dt.datetime.now(dt.UTC))
    trigger = _run(client.create_trigger, body)
    _print_json(trigger) if as_json else _show_trigger(trigger)


def triggers_list(
    as_json: Json = False, api: Api = None, account: AccountId = None, token: Token = None
) -> None:
    """The account's triggers, oldest first, and what each did."""
    triggers = _run(_client(api, account, token).triggers)
    if as_json:
        _print_json(triggers)
        return
    from edgepcap.formats.filters import summary  # pydantic: loaded only for the table

    table = Table(_id_column(), "status", "threshold", "filter", "fired", "refused", "expires")
    for t in triggers:
        table.add_row(
            t["id"],
            Text(t["status"], style=_STATUS_STYLE.get(t["status"], "")),
            f"{t['threshold_pps']} pkt/s over {t['window']} s",
            summary(t["filter_v1"]),
            str(len(t["fired"])),
            str(len(t["refused"])),
            t["expires"],
        )
    out.print(table)


def triggers_get(
    trigger_id: str,
    as_json: Json = False,
    api: Api = None,
    account: AccountId = None,
    token: Token = None,
) -> None:
    """One trigger: its threshold and filter, the captures it started, its refusals."""
    trigger = _run(_client(api, account, token).trigger, trigger_id)
    _print_json(trigger) if as_json else _show_trigger(trigger)


def triggers_delete(
    trigger_id: str, api: Api = None, account: AccountId = None, token: Token = None
) -> None:
    """Disarm and remove a trigger (the captures it started stay)."""
    _run(_client(api, account, token).delete_trigger, trigger_id)
    out.print(f"deleted trigger {trigger_id}")


def _show_trigger(t: dict[str, Any]) -> None:
    from edgepcap.formats.filters import summary  # pydantic: loaded by the commands that show

    capture = t["capture"]
    limits = [f"{capture['time_limit']:g} s"]
    for key, unit in (("packet_limit", "packets"), ("byte_limit", "bytes")):
        if capture.get(key) is not None:
            limits.append(f"{capture[key]:g} {unit}")
    what = summary(capture["filter_v1"]) if capture.get("filter_v1") else "the trigger's filter"
    table = Table(show_header=False, box=None)
    for key, value in (
        ("id", t["id"]),
        ("status", Text(t["status"], style=_STATUS_STYLE.get(t["status"], ""))),
        ("threshold", f"{t['threshold_pps']} packets/s over {t['window']} s"),
        ("filter", summary(t["filter_v1"])),
        ("cooldown", f"{t['cooldown']} s"),
        ("expires", t["expires"]),
        ("created", t["created"]),
        (
            "capture",
            f"full, {capture.get('colo_name')} → {capture.get('destination_conf')}, "
            f"{', '.join(limits)}, {what}",
        ),
    ):
        table.add_row(Text(key, style="bold"), value)
    out.print(table)
    if t["fired"]:
        fired = Table("fired at", Column("est. pkt/s", justify="right"), "capture", title="fired")
        for f in t["fired"]:
            fired.add_row(f["at"], str(f["estimated_pps"]), f["pcap_id"])
        out.print(fired)
    else:
        out.print("fired: never")
    if t["refused"]:
        refused = Table("at", Column("est. pkt/s", justify="right"), "why", title="refused")
        for r in t["refused"]:
            refused.add_row(r["at"], str(r["estimated_pps"]), r["message"])
        out.print(refused)
