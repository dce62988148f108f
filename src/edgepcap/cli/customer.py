"""`edgepcap pcaps …` and `edgepcap buckets …`: the API from a terminal, for people and scripts.

Each command calls the API through `edgepcap.client` (its settings: flags, else the
EDGEPCAP_* environment); `console` prints the answers.
"""

from __future__ import annotations

import datetime as dt
import enum
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from edgepcap.cli import watch as live
from edgepcap.cli.console import _die, _id_column, _print_json, _show, err, out
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
from edgepcap.client import Client, ClientError


class FileFormat(enum.StrEnum):
    """What `download` writes."""

    pcap = "pcap"
    pcapng = "pcapng"


END = ("success", "failed")


def create(
    type_: Annotated[str, typer.Option("--type", help="simple (sampled history) or full.")],
    time_limit: Annotated[float, typer.Option(help="Seconds (simple 1-300, full 1-86400).")],
    packet_limit: Annotated[float | None, typer.Option(help="Packets (1-10000).")] = None,
    byte_limit: Annotated[float | None, typer.Option(help="Bytes, full only.")] = None,
    colo: Annotated[str | None, typer.Option(help="Full: a colo (ORD) or machine (ord02).")] = None,
    destination: Annotated[
        str | None, typer.Option(help="Full: a validated bucket (destination_conf).")
    ] = None,
    offset_time: Annotated[str | None, typer.Option(help="Simple: RFC 3339 end of window.")] = None,
    source_address: SourceAddress = None,
    destination_address: DestinationAddress = None,
    source_port: SourcePort = None,
    destination_port: DestinationPort = None,
    protocol: Protocol = None,
    address: Address = None,
    port: Port = None,
    wait: Annotated[bool, typer.Option(help="Show progress until the capture ends.")] = False,
    watch: Annotated[
        bool,
        typer.Option(
            help="Full: then write its packets, live, as pcapng to stdout "
            "(`| wireshark -k -i -`) or -o, until it ends.",
        ),
    ] = False,
    output: live.Output = None,
    as_json: Json = False,
    api: Api = None,
    account: AccountId = None,
    token: Token = None,
) -> None:
    """Start a capture; the flags mirror the API's fields."""
    client = _client(api, account, token)
    flt = filter_v1(
        source_address, destination_address, source_port, destination_port, protocol, address, port
    )
    body: dict[str, Any] = {
        "system": "magic-transit",
        "type": type_,
        "time_limit": time_limit,
        "filter_v1": flt,
    }
    for key, value in (
        ("packet_limit", packet_limit),
        ("byte_limit", byte_limit),
        ("colo_name", colo),
        ("destination_conf", destination),
        ("offset_time", offset_time),
    ):
        if value is not None:
            body[key] = value
    if watch and type_ != "full":
        _die("--watch: only full captures stream (a sample capture is answered at once)", 2)
    if watch and wait:
        _die("--watch or --wait: the one streams the packets, the other shows progress", 2)
    if output is not None and not watch:
        _die("-o is where --watch writes the stream: give --watch too", 2)
    if watch and output is None and sys.stdout.isatty():
        _die("--watch writes pcapng: pipe it (`| wireshark -k -i -`) or give -o FILE", 2)
    pcap = _run(client.create, body)
    if watch:
        err.print(f"capture {pcap['id']} is {pcap['status']}; streaming it")
        live.follow(client, pcap["id"], output)
        return
    if wait and pcap["status"] not in END:
        pcap = _watch(client, pcap)
    if as_json:
        _print_json(pcap)
    else:
        _show(pcap)
    if pcap["status"] == "failed":
        raise typer.Exit(1)


def _watch(client: Client, pcap: dict[str, Any]) -> dict[str, Any]:
    limit = pcap.get("packet_limit")
    with Progress(
        TextColumn("{task.fields[status]:>8}", markup=False),
        BarColumn(),
        TextColumn("{task.completed:.0f} packets"),
        TextColumn("{task.fields[left]}", markup=False),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task("capture", total=limit, status=pcap["status"], left="")
        while pcap["status"] not in END:
            time.sleep(0.5)
            pcap = _run(client.get, pcap["id"])
            left = ""
            if pcap["status"] == "running":
                started = dt.datetime.fromisoformat(pcap["submitted"].replace("Z", "+00:00"))
                remaining = pcap["time_limit"] - (dt.datetime.now(dt.UTC) - started).total_seconds()
                left = f"≤ {max(0, remaining):.0f} s left"
            bar.update(task, completed=pcap["packets_captured"], status=pcap["status"], left=left)
    return pcap


def watch(
    pcap_id: str,
    output: live.Output = None,
    api: Api = None,
    account: AccountId = None,
    token: Token = None,
) -> None:
    """A pending or running full capture's packets, live, as pcapng (one interface per
    machine) to stdout (`| wireshark -k -i -`) or -o FILE, until it ends; Ctrl-C stops
    watching."""
    live.follow(_client(api, account, token), pcap_id, output)


def list_(
    as_json: Json = False, api: Api = None, account: AccountId = None, token: Token = None
) -> None:
    """The 50 newest captures, newest first."""
    pcaps = _run(_client(api, account, token).list)
    if as_json:
        _print_json(pcaps)
        return
    from edgepcap.formats.filters import summary  # pydantic: loaded only for the table

    table = Table(_id_column(), "type", "colo", "filter", "submitted", "status", "packets")
    for p in pcaps:
        style = {"success": "green", "failed": "red", "running": "yellow"}.get(p["status"], "")
        table.add_row(
            p["id"],
            p["type"],
            p.get("colo_name") or "-",
            summary(p.get("filter_v1") or {}),
            p["submitted"],
            Text(p["status"], style=style),
            str(p["packets_captured"]),
        )
    out.print(table)


def get(
    pcap_id: str,
    as_json: Json = False,
    api: Api = None,
    account: AccountId = None,
    token: Token = None,
) -> None:
    """One capture, with each machine's progress for full captures."""
    pcap = _run(_client(api, account, token).get, pcap_id)
    _print_json(pcap) if as_json else _show(pcap)


def stop(
    pcap_id: str,
    as_json: Json = False,
    api: Api = None,
    account: AccountId = None,
    token: Token = None,
) -> None:
    """Stop a running full capture."""
    pcap = _run(_client(api, account, token).stop, pcap_id)
    _print_json(pcap) if as_json else _show(pcap)


def download(
    pcap_id: str,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the file.")],
    format: Annotated[
        FileFormat,
        typer.Option(
            "--format",
            help="pcap, or pcapng: one interface per machine, named after it, packets "
            "marked inbound or outbound, and a comment naming the capture.",
        ),
    ] = FileFormat.pcap,
    api: Api = None,
    account: AccountId = None,
    token: Token = None,
) -> None:
    """Download a capture (full captures: all machines merged by time)."""
    client = _client(api, account, token)
    partial = output.with_name(f".{output.name}.part")
    written = 0
    try:
        with (
            partial.open("wb") as fh,
            Progress(
                TextColumn("download"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=err,
            ) as bar,
        ):
            task = bar.add_task("download", total=None)
            for total, chunk in client.download(pcap_id, format.value):
                fh.write(chunk)
                written += len(chunk)
                bar.update(task, completed=written, total=total)
        partial.replace(output)  # never leave a half file under the name asked for
    except ClientError as exc:
        partial.unlink(missing_ok=True)
        _die(str(exc))
    err.print(f"wrote {written} bytes to {output}")


def summary(file: Path, as_json: Json = False) -> None:
    """Top talkers, protocols and time span of a PCAP file (no Wireshark needed)."""
    from edgepcap.formats.packets import summarise
    from edgepcap.formats.pcapfile import PcapError, Reader

    def chunks() -> Any:
        with file.open("rb") as fh:
            while block := fh.read(1 << 20):
                yield block

    if not file.is_file():
        _die(f"{file}: no such file")
    try:
        reader = Reader(chunks(), str(file))
        result = summarise(reader, reader.header.linktype)
    except PcapError as exc:
        _die(str(exc))
    if as_json:
        _print_json(result)
        return
    span = ""
    if result["packets"]:
        first = dt.datetime.fromtimestamp(result["first_ns"] / 1e9, dt.UTC)
        span = f" from {first:%Y-%m-%d %H:%M:%S.%f} UTC over {result['seconds']:.3f} s"
    out.print(
        Text.assemble(
            (str(file), "bold"), f": {result['packets']} packets, {result['bytes']} bytes{span}"
        )
    )
    protocols = Table("protocol", "packets", "bytes", title="protocols")
    for p in result["protocols"]:
        protocols.add_row(p["protocol"], str(p["packets"]), str(p["bytes"]))
    talkers = Table("source", "bytes", title="top talkers")
    for t in result["top_sources"]:
        talkers.add_row(t["source"], str(t["bytes"]))
    conversations = Table("source", "destination", "packets", title="top conversations")
    for c in result["top_conversations"]:
        conversations.add_row(c["source"], c["destination"], str(c["packets"]))
    out.print(protocols, talkers, conversations)


def bucket_add(
    destination: str,
    as_json: Json = False,
    api: Api = None,
    account: AccountId = None,
    token: Token = None,
) -> None:
    """Register a bucket: a challenge file is written into it."""
    bucket = _run(_client(api, account, token).add_bucket, destination)
    if as_json:
        _print_json(bucket)
        return
    if bucket["status"] == "success":
        out.print(f"bucket {bucket['id']} is already validated: captures can use it")
        return
    out.print(
        Text.assemble(
            f"bucket {bucket['id']} is {bucket['status']}: read ",
            (bucket["filename"], "bold"),
            f" in {destination} and run\n  edgepcap buckets validate {destination} "
            "--challenge <its contents>",
        )
    )


def bucket_validate(
    destination: str,
    challenge: Annotated[str | None, typer.Option(help="The challenge file's contents.")] = None,
    challenge_file: Annotated[
        Path | None, typer.Option(help="Read the challenge from this file.")
    ] = None,
    as_json: Json = False,
    api: Api = None,
    account: AccountId = None,
    token: Token = None,
) -> None:
    """Prove you own the bucket by sending back the challenge."""
    if challenge_file is not None:
        challenge = challenge_file.read_text().strip()
    if not challenge:
        _die("give --challenge or --challenge-file", 2)
    bucket = _run(_client(api, account, token).validate_bucket, destination, challenge)
    _print_json(bucket) if as_json else out.print(f"bucket {bucket['id']} is {bucket['status']}")


def bucket_list(
    as_json: Json = False, api: Api = None, account: AccountId = None, token: Token = None
) -> None:
    """Buckets of the account and their ownership status."""
    buckets = _run(_client(api, account, token).buckets)
    if as_json:
        _print_json(buckets)
        return
    table = Table(_id_column(), "destination", "status", "challenge file", "validated")
    for b in buckets:
        table.add_row(
            b["id"], b["destination_conf"], b["status"], b["filename"], b.get("validated") or "-"
        )
    out.print(table)


def bucket_delete(
    bucket_id: str, api: Api = None, account: AccountId = None, token: Token = None
) -> None:
    """Remove a bucket."""
    _run(_client(api, account, token).delete_bucket, bucket_id)
    out.print(f"deleted bucket {bucket_id}")
