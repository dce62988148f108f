"""`edgepcap accounts …` and `edgepcap agents …`: administration, straight in the database.

Accounts and their prefixes and credentials; agent keys, each bound to one machine; the
ClickHouse users that let machines insert their samples themselves. Secrets are printed
once, as JSON, and stored hashed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgepcap.cli.options import DatabaseUrl, DataDir, _fail, _open


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
    from edgepcap.control import accounts as accounts_mod

    db = _open(data_dir, database)
    try:
        with db.session() as session:
            account, creds = accounts_mod.create_account(session, name, prefix, email)
            typer.echo(json.dumps(accounts_mod.describe(account, creds)))
    except accounts_mod.AccountError as exc:
        _fail(str(exc))
    finally:
        db.close()


def accounts_list(data_dir: DataDir = Path("edgepcap-data"), database: DatabaseUrl = None) -> None:
    """List accounts as JSON lines (no secrets: they are stored hashed)."""
    from sqlalchemy import select

    from edgepcap.control import accounts as accounts_mod
    from edgepcap.control.models import Account

    db = _open(data_dir, database)
    with db.session() as session:
        for account in session.scalars(select(Account).order_by(Account.created)):
            typer.echo(json.dumps(accounts_mod.describe(account)))
    db.close()


def accounts_add_prefix(
    account_id: str,
    prefix: str,
    data_dir: DataDir = Path("edgepcap-data"),
    database: DatabaseUrl = None,
) -> None:
    """Give an account another prefix."""
    from edgepcap.control import accounts as accounts_mod

    db = _open(data_dir, database)
    try:
        with db.session() as session:
            account = accounts_mod.add_prefix(session, account_id, prefix)
            typer.echo(json.dumps(accounts_mod.describe(account)))
    except accounts_mod.AccountError as exc:
        _fail(str(exc))
    finally:
        db.close()


def accounts_rotate_token(
    account_id: str, data_dir: DataDir = Path("edgepcap-data"), database: DatabaseUrl = None
) -> None:
    """Replace the account's API token and API key; prints the new ones once."""
    from edgepcap.control import accounts as accounts_mod

    db = _open(data_dir, database)
    try:
        with db.session() as session:
            account, creds = accounts_mod.rotate_credentials(session, account_id)
            typer.echo(json.dumps(accounts_mod.describe(account, creds)))
    except accounts_mod.AccountError as exc:
        _fail(str(exc))
    finally:
        db.close()


def agents_create_key(
    colo: Annotated[str, typer.Option(help="The machine's colo, e.g. ORD.")],
    machine: Annotated[str, typer.Option(help="The one machine the key is for, e.g. ord01.")],
    data_dir: DataDir = Path("edgepcap-data"),
    database: DatabaseUrl = None,
    label: Annotated[str, typer.Option(help="A note on where the key is used.")] = "",
) -> None:
    """Mint a key for one machine; prints {"id", "agent_key", "colo", "machine"} once."""
    from edgepcap.control.fleet import FleetError, create_agent_key

    db = _open(data_dir, database)
    try:
        with db.session() as session:
            row, key = create_agent_key(session, colo, machine, label)
            out = {"id": row.id, "agent_key": key, "colo": row.colo, "machine": row.machine}
            typer.echo(json.dumps(out))
    except FleetError as exc:
        _fail(str(exc))
    finally:
        db.close()


def agents_revoke_key(
    key_id: str, data_dir: DataDir = Path("edgepcap-data"), database: DatabaseUrl = None
) -> None:
    """Revoke an agent key at once: its agent's next request gets 401."""
    from edgepcap.control.fleet import FleetError, describe_key, revoke_agent_key

    db = _open(data_dir, database)
    try:
        with db.session() as session:
            typer.echo(json.dumps(describe_key(revoke_agent_key(session, key_id))))
    except FleetError as exc:
        _fail(str(exc))
    finally:
        db.close()


def agents_list(data_dir: DataDir = Path("edgepcap-data"), database: DatabaseUrl = None) -> None:
    """List agent keys as JSON lines: machine, colo, revoked (unbound keys: machine null)."""
    from sqlalchemy import select

    from edgepcap.control.fleet import describe_key
    from edgepcap.control.models import AgentKey

    db = _open(data_dir, database)
    with db.session() as session:
        for row in session.scalars(select(AgentKey).order_by(AgentKey.created)):
            typer.echo(json.dumps(describe_key(row)))
    db.close()


def agents_clickhouse_users(
    machine: Annotated[
        list[str] | None,
        typer.Option(help="Only this machine (repeat it); default: every machine with a live key."),
    ] = None,
    networks: Annotated[
        str, typer.Option(help="Where the machines' inserts may come from, as CIDR.")
    ] = "::/0",
    data_dir: DataDir = Path("edgepcap-data"),
    database: DatabaseUrl = None,
) -> None:
    """Print the ClickHouse users.d file that lets machines insert their samples directly
    (EDGEPCAP_SAMPLE_INGEST): one insert-only user each, from the api's own settings
    (EDGEPCAP_SAMPLE_STORE, EDGEPCAP_SAMPLE_INGEST_KEY_FILE). Install it as
    /etc/clickhouse-server/users.d/edgepcap-ingest.xml; run it again after minting or
    revoking keys (a revoked machine's user goes with the next file)."""
    from sqlalchemy import select

    from edgepcap.control.models import AgentKey
    from edgepcap.control.samples import direct
    from edgepcap.control.samples.clickhouse import database_of
    from edgepcap.control.settings import SettingError, Settings

    try:
        settings = Settings.from_environ(data_dir)
    except SettingError as exc:
        _fail(str(exc))
    if not settings.sample_ingest_key or not (settings.sample_store or "").startswith(
        "clickhouse:"
    ):
        _fail("set EDGEPCAP_SAMPLE_STORE (clickhouse://…), EDGEPCAP_SAMPLE_INGEST and its key file")
    if not machine:
        db = _open(data_dir, database)
        try:
            with db.session() as session:
                live = select(AgentKey.machine).where(
                    AgentKey.machine.is_not(None), AgentKey.revoked.is_(None)
                )
                machine = sorted(set(session.scalars(live)))
        finally:
            db.close()
    try:
        xml = direct.users_xml(
            database_of(settings.sample_store), settings.sample_ingest_key, machine, networks
        )
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(xml, nl=False)
