"""What the operator's commands share: their common options and small helpers.

The options (`DataDir`, `DatabaseUrl`, `SampleStoreUrl`, `MetricsTokenFile`) read the same
in every command that takes them; the helpers fail with a message, parse `--listen`, open
the database, and create the servers' files private.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

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
