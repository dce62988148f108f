"""The `edgepcap` command line: servers, administration and (later) the client."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from edgepcap import accounts as accounts_mod

app = typer.Typer(help="edgepcap: on-demand packet captures at the edge.", no_args_is_help=True)
accounts_app = typer.Typer(help="Manage customer accounts (administration).", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")

DataDir = Annotated[
    Path, typer.Option("--data-dir", help="Directory for the database, buckets and logs.")
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="SQLAlchemy URL; postgresql://… for PostgreSQL. Default: SQLite in the data dir.",
    ),
]


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        _fail(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _open(data_dir: Path, database: str | None):  # type: ignore[no-untyped-def]
    from edgepcap.db import open_database

    return open_database(data_dir, database or os.environ.get("EDGEPCAP_DATABASE"))


def serve(listen: str, data_dir: Path, database: str | None, workers: int = 1) -> None:
    import uvicorn

    from edgepcap.api.app import create_app
    from edgepcap.destinations import StoreSettings

    host, port = _parse_listen(listen)
    db = _open(data_dir, database)
    stores = StoreSettings.from_env(data_dir)
    stores.bucket_root.mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        create_app(db, stores),
        host=host,
        port=port,
        log_level="info",
        access_log=os.environ.get("EDGEPCAP_ACCESS_LOG", "1") == "1",
    )


@app.command()
def api(
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:8080",
    data_dir: DataDir = Path("edgepcap-data"),
    database: DatabaseUrl = None,
) -> None:
    """Run the control-plane API in the foreground."""
    serve(listen, data_dir, database)


@app.command()
def up(
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:8080",
    data_dir: DataDir = Path("edgepcap-data"),
    database: DatabaseUrl = None,
) -> None:
    """Single node: the API with embedded storage, and a demo account on first start."""
    db = _open(data_dir, database)
    creds_file = data_dir / "demo-account.json"
    if not creds_file.exists():
        with db.session() as session:
            account, creds = accounts_mod.create_account(session, "demo", ["203.0.113.0/24"])
            info = accounts_mod.describe(account, creds)
        fd = os.open(creds_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh, indent=2)
    db.close()
    info = json.loads(creds_file.read_text())
    typer.echo(
        f"edgepcap is up on http://{listen}/client/v4\n"
        f"  demo account {info['id']} (prefix {', '.join(info['prefixes'])})\n"
        f"  credentials in {creds_file} (api_token, or email + api_key)"
    )
    serve(listen, data_dir, database)


@accounts_app.command("create")
def accounts_create(
    name: str,
    prefix: Annotated[
        list[str], typer.Option("--prefix", help="A prefix the account owns (repeat).")
    ],
    data_dir: DataDir = Path("edgepcap-data"),
    database: DatabaseUrl = None,
    email: Annotated[
        str | None, typer.Option(help="Email for X-Auth-Email (default: generated).")
    ] = None,
) -> None:
    """Create an account; prints its id, prefixes and credentials once, as JSON."""
    db = _open(data_dir, database)
    try:
        with db.session() as session:
            account, creds = accounts_mod.create_account(session, name, prefix, email)
            typer.echo(json.dumps(accounts_mod.describe(account, creds)))
    except accounts_mod.AccountError as exc:
        _fail(str(exc))
    finally:
        db.close()


@accounts_app.command("list")
def accounts_list(data_dir: DataDir = Path("edgepcap-data"), database: DatabaseUrl = None) -> None:
    """List accounts as JSON lines (no secrets: they are stored hashed)."""
    from sqlalchemy import select

    from edgepcap.models import Account

    db = _open(data_dir, database)
    with db.session() as session:
        for account in session.scalars(select(Account).order_by(Account.created)):
            typer.echo(json.dumps(accounts_mod.describe(account)))
    db.close()


@accounts_app.command("add-prefix")
def accounts_add_prefix(
    account_id: str,
    prefix: str,
    data_dir: DataDir = Path("edgepcap-data"),
    database: DatabaseUrl = None,
) -> None:
    """Give an account another prefix."""
    db = _open(data_dir, database)
    try:
        with db.session() as session:
            account = accounts_mod.add_prefix(session, account_id, prefix)
            typer.echo(json.dumps(accounts_mod.describe(account)))
    except accounts_mod.AccountError as exc:
        _fail(str(exc))
    finally:
        db.close()


@accounts_app.command("rotate-token")
def accounts_rotate_token(
    account_id: str, data_dir: DataDir = Path("edgepcap-data"), database: DatabaseUrl = None
) -> None:
    """Replace the account's API token and API key; prints the new ones once."""
    db = _open(data_dir, database)
    try:
        with db.session() as session:
            account, creds = accounts_mod.rotate_credentials(session, account_id)
            typer.echo(json.dumps(accounts_mod.describe(account, creds)))
    except accounts_mod.AccountError as exc:
        _fail(str(exc))
    finally:
        db.close()


def main() -> None:
    app()
