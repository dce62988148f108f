"""What the commands share: their common options and small helpers.

The operator's options (`DataDir`, `DatabaseUrl`, `SampleStoreUrl`, `MetricsTokenFile`)
read the same in every command that takes them; the helpers fail with a message, parse
`--listen`, open the database, and create the servers' files private.

The customer's commands share where the API is and as whom (`Api`, `AccountId`, `Token`:
`client` reads these, else the EDGEPCAP_* environment), `--json`, and the `filter_v1`
options of captures, triggers and the traffic view (`filter_v1` puts them together);
`_client` opens the API's client from them, `_run` makes a refusal an error exit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from edgepcap.cli.console import _die
from edgepcap.client import Client, ClientError, Settings

DataDir = Annotated[
    Path, typer.Option("--data-dir", help="Directory for the database, buckets and logs.")
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database",
        envvar="EDGEPCAP_DATABASE",  # a URL with a password: keep it out of `ps`
        help="SQLAlchemy URL; postgresql://… for PostgreSQL. Default: SQLite in the data dir.",
    ),
]


SampleStoreUrl = Annotated[
    str | None,
    typer.Option(
        "--sample-store",
        help="clickhouse://HOST:PORT/DB for ClickHouse. "
        "Default: segment files in DATA_DIR/samples.",
    ),
]


MetricsTokenFile = Annotated[
    Path | None,
    typer.Option(
        envvar="EDGEPCAP_METRICS_TOKEN_FILE",
        help="File holding the operator token that GET /metrics asks for "
        "(or EDGEPCAP_METRICS_TOKEN); without one there is no /metrics.",
    ),
]


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _private_files() -> None:
    # The servers' files (database, logs, keys, samples, customers' captures) are theirs
    # alone from creation; modes given explicitly where they matter most do not depend on it.
    os.umask(0o077)


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        _fail(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _open(data_dir: Path, database: str | None):  # type: ignore[no-untyped-def]
    from edgepcap.control.db import open_database

    return open_database(data_dir, database or os.environ.get("EDGEPCAP_DATABASE"))


Api = Annotated[str | None, typer.Option("--api", help="API URL (EDGEPCAP_API).")]
AccountId = Annotated[str | None, typer.Option("--account", help="Account id (EDGEPCAP_ACCOUNT).")]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="API token; better EDGEPCAP_TOKEN or EDGEPCAP_TOKEN_FILE (ps shows arguments).",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON result.")]

# The filter_v1 fields, named as in the API; the short names are the ones `pcaps create`
# had first.
SourceAddress = Annotated[
    str | None, typer.Option("--source-address", "--src", help="filter_v1.source_address")
]
DestinationAddress = Annotated[
    str | None,
    typer.Option("--destination-address", "--dst", help="filter_v1.destination_address"),
]
SourcePort = Annotated[
    int | None, typer.Option("--source-port", "--sport", help="filter_v1.source_port")
]
DestinationPort = Annotated[
    int | None, typer.Option("--destination-port", "--dport", help="filter_v1.destination_port")
]
Protocol = Annotated[
    int | None,
    typer.Option("--protocol", "--proto", help="filter_v1.protocol (6 tcp, 17 udp …)"),
]
Address = Annotated[
    str | None, typer.Option("--address", help="filter_v1.address: the source or the destination")
]
Port = Annotated[
    int | None,
    typer.Option("--port", help="filter_v1.port: the source or the destination port"),
]


def filter_v1(
    source_address: str | None,
    destination_address: str | None,
    source_port: int | None,
    destination_port: int | None,
    protocol: int | None,
    address: str | None,
    port: int | None,
) -> dict[str, Any]:
    """The filter options given, as the API's `filter_v1` (the server validates them)."""
    return {
        k: v
        for k, v in (
            ("source_address", source_address),
            ("destination_address", destination_address),
            ("source_port", source_port),
            ("destination_port", destination_port),
            ("protocol", protocol),
            ("address", address),
            ("port", port),
        )
        if v is not None
    }


def _client(api: str | None, account: str | None, token: str | None) -> Client:
    try:
        return Client(Settings.resolve(api, account, token))
    except ClientError as exc:
        _die(str(exc), 2)
        raise


def _run(fn: Any, *args: Any) -> Any:
    """`fn(*args)`; a refusal of the API printed as its message, and exit 1."""
    try:
        return fn(*args)
    except ClientError as exc:
        _die(str(exc))
