"""`edgepcap lab up|down|traffic`: the lab's commands, over `edgepcap.lab`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgepcap.cli.options import DatabaseUrl, DataDir, _fail, _parse_listen, _private_files


def lab_up(
    data_dir: DataDir = Path("edgepcap-lab"),
    colo: Annotated[
        list[str] | None, typer.Option(help="A colo's name; repeat for several (default ORD).")
    ] = None,
    machines: Annotated[
        int, typer.Option(help="Edge machines in each colo (at most 8 in all).")
    ] = 2,
    listen: Annotated[str, typer.Option(help="HOST:PORT for the api.")] = "127.0.0.1:8080",
    database: DatabaseUrl = None,
) -> None:
    """Build the lab, start the api and one agent per machine; writes DIR/lab.json.

    `--colo ORD --colo AMS --machines 2` builds ord01 ord02 ams01 ams02.
    """
    from edgepcap.lab import lab

    _parse_listen(listen)
    _private_files()
    try:
        info = lab.up(data_dir, colo or ["ORD"], machines, listen, database)
    except lab.LabError as exc:
        _fail(str(exc))
    colos = "; ".join(f"colo {c}, machines {', '.join(ms)}" for c, ms in info["colos"].items())
    typer.echo(f"lab is up: api {info['api']}, {colos}; details in {data_dir}/lab.json")


def lab_down(data_dir: DataDir = Path("edgepcap-lab")) -> None:
    """Stop the lab's processes and remove its namespaces."""
    from edgepcap.lab import lab

    for line in lab.down(data_dir):
        typer.echo(line)


def lab_traffic(
    data_dir: DataDir = Path("edgepcap-lab"),
    count: Annotated[int, typer.Option(help="Packets per flow (1-100000).")] = 100,
    size: Annotated[int, typer.Option(help="Payload bytes per packet (0-1400).")] = 100,
    tenant: Annotated[str, typer.Option(help="customer, other or both.")] = "both",
    proto: Annotated[list[str] | None, typer.Option(help="udp, tcp, icmp (repeat).")] = None,
    v6: Annotated[bool, typer.Option(help="Also send IPv6 flows.")] = True,
    rate: Annotated[
        float | None, typer.Option(help="Packets/s per flow (UDP only; default: at once).")
    ] = None,
) -> None:
    """Send bounded UDP/TCP/ICMP from client to customers; prints each 5-tuple's count (JSON)."""
    from edgepcap.lab import traffic
    from edgepcap.lab.lab import STATE
    from edgepcap.lab.topology import Layout

    state_file = data_dir.resolve() / STATE
    if not state_file.exists():
        _fail(f"no lab in {data_dir}: run `edgepcap lab up` first")
    state = json.loads(state_file.read_text())
    layout = Layout.from_state(state)
    tenants = ["customer", "other"] if tenant == "both" else [tenant]
    if any(t not in ("customer", "other") for t in tenants):
        _fail("--tenant must be customer, other or both")
    protos = tuple(proto or ("udp", "tcp", "icmp"))
    if any(p not in ("udp", "tcp", "icmp") for p in protos):
        _fail("--proto must be udp, tcp or icmp")
    try:
        flows = traffic.send(layout, tenants, count, size, v6, protos, rate=rate)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"flows": [f.as_dict() for f in flows]}))
