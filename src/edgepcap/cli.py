"""The `edgepcap` command line: servers, administration and (later) the client."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="edgepcap: on-demand packet captures at the edge.", no_args_is_help=True)
accounts_app = typer.Typer(help="Manage customer accounts (administration).", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
from edgepcap.customer_cli import buckets_app, pcaps_app  # noqa: E402

app.add_typer(pcaps_app, name="pcaps")
app.add_typer(buckets_app, name="buckets")
agents_app = typer.Typer(
    help="Manage edge agent credentials (administration).", no_args_is_help=True
)
app.add_typer(agents_app, name="agents")

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


def serve(
    listen: str,
    data_dir: Path,
    database: str | None,
    sample_store: str | None = None,
    workers: int = 1,
    metrics_token_file: Path | None = None,
    tls: tuple[Path, Path] | None = None,
) -> None:
    import uvicorn

    from edgepcap.api.app import open_app
    from edgepcap.api.metrics import TOKEN_FILE_ENV, operator_token
    from edgepcap.control import full_rate, retention
    from edgepcap.control.db import make_data_dir

    host, port = _parse_listen(listen)
    _private_files()
    make_data_dir(data_dir)
    if metrics_token_file is not None:
        os.environ[TOKEN_FILE_ENV] = str(metrics_token_file.resolve())  # workers read it too
    try:  # checked here, before workers start: they would only die one by one
        full_rate.full_capture_rate()
        retention.capture_retention()
        if operator_token() is None:
            typer.echo("no metrics token (--metrics-token-file): GET /metrics is off", err=True)
    except ValueError as exc:
        _fail(str(exc))
    database = database or os.environ.get("EDGEPCAP_DATABASE")
    sample_store = sample_store or os.environ.get("EDGEPCAP_SAMPLE_STORE")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": os.environ.get("EDGEPCAP_ACCESS_LOG", "1") == "1",
        # Agents hold long polls open; do not wait for them on shutdown.
        "timeout_graceful_shutdown": 2,
        # Measured (BENCHMARKS.md, API figure): one process on uvloop lets some connections
        # wait ten times longer than others under load (p99 ~400 ms against ~35 ms on
        # asyncio's loop, at the same throughput); with several workers uvloop spreads
        # the connections over them better, and is the faster loop.
        "loop": "asyncio" if workers == 1 else "auto",
    }
    if tls is not None:
        options["ssl_certfile"], options["ssl_keyfile"] = str(tls[0]), str(tls[1])
    if workers == 1:
        uvicorn.run(open_app(data_dir, database, sample_store), **options)
        return
    # Migrate once here, so that workers starting together do not race on the schema.
    _open(data_dir, database).close()
    os.environ["EDGEPCAP_DATA_DIR"] = str(data_dir.resolve())
    os.environ["EDGEPCAP_DATABASE"] = database or ""
    os.environ["EDGEPCAP_SAMPLE_STORE"] = sample_store or ""
    uvicorn.run("edgepcap.api.app:from_environment", factory=True, workers=workers, **options)


@app.command()
def api(
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:8080",
    data_dir: DataDir = Path("edgepcap-data"),
    database: DatabaseUrl = None,
    sample_store: SampleStoreUrl = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="API worker processes sharing the port (one per core is a good start).",
        ),
    ] = 1,
    metrics_token_file: MetricsTokenFile = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS with this certificate (PEM, chain first to last)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The certificate's private key (PEM).")
    ] = None,
) -> None:
    """Run the control-plane API in the foreground."""
    tls = None
    if (tls_cert is None) != (tls_key is None):
        _fail("--tls-cert and --tls-key go together")
    if tls_cert is not None and tls_key is not None:
        for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
            if not path.is_file():
                _fail(f"{flag} {path}: no such file")
        tls = (tls_cert.resolve(), tls_key.resolve())
    serve(listen, data_dir, database, sample_store, workers, metrics_token_file, tls)


@app.command()
def up(
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:8080",
    data_dir: DataDir = Path("edgepcap-data"),
    database: DatabaseUrl = None,
    colo: Annotated[str, typer.Option(help="The colo this host belongs to.")] = "LOCAL",
    machine: Annotated[
        str | None, typer.Option(help="This host's machine name (default: from hostname).")
    ] = None,
    agent: Annotated[bool, typer.Option(help="Run an agent on this host too (root).")] = True,
    metrics_token_file: MetricsTokenFile = None,
) -> None:
    """Single node: the API, an agent on this host, a demo account on first start."""
    import re
    import secrets
    import socket
    import subprocess
    import sys

    from edgepcap.control import accounts as accounts_mod
    from edgepcap.control.fleet import FleetError, check_names

    _private_files()
    name = machine or re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower()).strip("-")
    if not re.match(r"^[a-z]", name):
        name = f"m-{name}"
    if agent:
        try:
            colo, name = check_names(colo, name[:63])
        except FleetError as exc:
            _fail(str(exc))
    data_dir = data_dir.resolve()
    db = _open(data_dir, database)
    creds_file = data_dir / "demo-account.json"
    key_file = data_dir / "agent-key"
    try:
        with db.session() as session:
            if not creds_file.exists():
                account, creds = accounts_mod.create_account(session, "demo", ["203.0.113.0/24"])
                demo = json.dumps(accounts_mod.describe(account, creds), indent=2)
                _write_secret(creds_file, demo)
        if agent:
            with db.session() as session:
                _up_agent_key(session, key_file, colo, name)
    except FleetError as exc:
        _fail(str(exc))
    finally:
        db.close()
    if metrics_token_file is None and not os.environ.get("EDGEPCAP_METRICS_TOKEN"):
        metrics_token_file = data_dir / "metrics-token"
        if not metrics_token_file.exists():
            _write_secret(metrics_token_file, secrets.token_urlsafe(32))
    info = json.loads(creds_file.read_text())
    host, port = _parse_listen(listen)
    typer.echo(
        f"edgepcap is up on http://{listen}/client/v4\n"
        f"  demo account {info['id']} (prefix {', '.join(info['prefixes'])})\n"
        f"  credentials in {creds_file} (api_token, or email + api_key)\n"
        + (f"  /metrics token in {metrics_token_file}\n" if metrics_token_file else "")
        + (f"  agent: machine {name} in colo {colo}" if agent else "  no agent")
    )
    child = None
    if agent:
        api_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        argv = [
            str(Path(sys.executable).parent / "edgepcap"),
            "agent",
            "--api",
            f"http://{api_host}:{port}",
            "--colo",
            colo,
            "--machine",
            name,
            "--bucket-root",
            str(data_dir / "buckets"),
        ]
        env = {**os.environ, "EDGEPCAP_AGENT_KEY": key_file.read_text().strip()}
        with (data_dir / "agent.log").open("ab") as log:
            child = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
    try:
        serve(listen, data_dir, database, metrics_token_file=metrics_token_file)
    finally:
        if child is not None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


def _up_agent_key(session: Any, key_file: Path, colo: str, machine: str) -> None:
    """`up`'s agent key, bound to this host's machine: the one in `key_file` while it is
    for this colo and machine and not revoked, else a new one (the old one, `up`'s own,
    is revoked: a key file from before keys were bound, or for another --machine)."""
    from edgepcap.control.fleet import create_agent_key, find_agent_key, revoke_agent_key

    if key_file.exists():
        row = find_agent_key(session, key_file.read_text().strip())
        if row is not None and row.revoked is None and (row.colo, row.machine) == (colo, machine):
            return
        if row is not None:
            revoke_agent_key(session, row.id)
        key_file.unlink()
    _write_secret(key_file, create_agent_key(session, colo, machine, "edgepcap up")[1])


def _die_with_parent() -> None:
    # uvicorn re-raises SIGTERM after its shutdown, so `up` may end before any `finally`
    # runs: the kernel then stops the agent (which removes its tables) for us.
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


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


@accounts_app.command("list")
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


@accounts_app.command("add-prefix")
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


@accounts_app.command("rotate-token")
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


@agents_app.command("create-key")
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


@agents_app.command("revoke-key")
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


@agents_app.command("list")
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


@app.command()
def agent(
    api: Annotated[str, typer.Option(help="Control-plane URL, e.g. http://10.0.0.1:8080")],
    agent_key: Annotated[str, typer.Option(envvar="EDGEPCAP_AGENT_KEY", help="Agent key.")],
    colo: Annotated[str, typer.Option(help="This machine's colo, e.g. ORD.")],
    machine: Annotated[str, typer.Option(help="This machine's name, e.g. ord01.")],
    netns: Annotated[
        str | None, typer.Option(help="Capture in this network namespace (lab use).")
    ] = None,
    bucket_root: Annotated[
        Path | None, typer.Option(help="Where file:// buckets may live (EDGEPCAP_BUCKET_ROOT).")
    ] = None,
    sample_rate: Annotated[
        int, typer.Option(help="Sample 1 in N packets for sample captures (0: no sampler).")
    ] = 100,
    nflog_rcvbuf: Annotated[
        int,
        typer.Option(
            envvar="EDGEPCAP_NFLOG_RCVBUF",
            help="Receive buffer of each capture's NFLOG socket, bytes (the kernel doubles it).",
        ),
    ] = 32 << 20,
    ca_file: Annotated[
        Path | None,
        typer.Option(help="Trust the API's certificate if this CA (PEM) signed it (https)."),
    ] = None,
) -> None:
    """Run one edge machine's agent (as root: it installs nftables rules)."""
    import sys
    from urllib.parse import urlsplit

    from edgepcap.control.fleet import FleetError, check_names

    try:
        colo, machine = check_names(colo, machine)
    except FleetError as exc:
        _fail(str(exc))
    url = urlsplit(api)
    if url.scheme not in ("http", "https") or not url.hostname:
        _fail(f"--api must be http(s)://HOST:PORT, got {api!r}")
    if ca_file is not None and not ca_file.is_file():
        _fail(f"--ca-file {ca_file}: no such file")
    if url.scheme == "http" and url.hostname not in ("127.0.0.1", "::1", "localhost"):
        typer.echo(
            f"warning: {api} is plain HTTP: the agent key and every job's bucket URL cross "
            "the network in clear (serve the API with --tls-cert/--tls-key, use https://)",
            err=True,
        )
    if sample_rate < 0 or sample_rate > 1_000_000:
        _fail("--sample-rate must be 0 (off) to 1000000")
    if not 4096 <= nflog_rcvbuf <= 1 << 30:
        _fail("--nflog-rcvbuf must be 4096 to 1073741824 bytes")
    if bucket_root is not None:
        os.environ["EDGEPCAP_BUCKET_ROOT"] = str(bucket_root.resolve())
    # The agent runs for months: it execs into a process without the CLI's libraries
    # (Typer, Rich, the database models), which were a sixth of its memory. Same pid; the
    # key stays in the environment, out of the command line.
    os.environ["EDGEPCAP_AGENT_KEY"] = agent_key
    config = {
        "api": api,
        "colo": colo,
        "machine": machine,
        "netns": netns,
        "sample_rate": sample_rate,
        "nflog_rcvbuf": nflog_rcvbuf,
        "bucket_root": os.environ.get("EDGEPCAP_BUCKET_ROOT"),
        "ca_file": str(ca_file.resolve()) if ca_file else None,
    }
    sys.stdout.flush()
    sys.stderr.flush()
    # -P: the working directory is not on the path (the agent runs as root).
    argv = [sys.executable, "-P", "-m", "edgepcap.agent", json.dumps(config)]
    os.execv(sys.executable, argv)  # noqa: S606 - an argv list, no shell


lab_app = typer.Typer(
    help="The lab: edge machines and customers in network namespaces.", no_args_is_help=True
)
app.add_typer(lab_app, name="lab")


@lab_app.command("up")
def lab_up(
    data_dir: DataDir = Path("edgepcap-lab"),
    colo: Annotated[str, typer.Option(help="The colo's name.")] = "ORD",
    machines: Annotated[int, typer.Option(help="Edge machines (1-8).")] = 2,
    listen: Annotated[str, typer.Option(help="HOST:PORT for the api.")] = "127.0.0.1:8080",
    database: DatabaseUrl = None,
) -> None:
    """Build the lab, start the api and one agent per machine; writes DIR/lab.json."""
    from edgepcap.lab import lab

    _parse_listen(listen)
    _private_files()
    try:
        info = lab.up(data_dir, colo, machines, listen, database)
    except lab.LabError as exc:
        _fail(str(exc))
    typer.echo(
        f"lab is up: api {info['api']}, colo {info['colo']}, machines "
        f"{', '.join(info['namespaces']['machines'])}; details in {data_dir}/lab.json"
    )


@lab_app.command("down")
def lab_down(data_dir: DataDir = Path("edgepcap-lab")) -> None:
    """Stop the lab's processes and remove its namespaces."""
    from edgepcap.lab import lab

    for line in lab.down(data_dir):
        typer.echo(line)


@lab_app.command("traffic")
def lab_traffic(
    data_dir: DataDir = Path("edgepcap-lab"),
    count: Annotated[int, typer.Option(help="Packets per flow (1-100000).")] = 100,
    size: Annotated[int, typer.Option(help="Payload bytes per packet (0-1400).")] = 100,
    tenant: Annotated[str, typer.Option(help="customer, other or both.")] = "both",
    proto: Annotated[list[str] | None, typer.Option(help="udp, tcp, icmp (repeat).")] = None,
    v6: Annotated[bool, typer.Option(help="Also send IPv6 flows.")] = True,
) -> None:
    """Send bounded UDP/TCP/ICMP from client to customers; prints each 5-tuple's count (JSON)."""
    from edgepcap.lab import traffic
    from edgepcap.lab.lab import STATE
    from edgepcap.lab.topology import Layout

    state_file = data_dir.resolve() / STATE
    if not state_file.exists():
        _fail(f"no lab in {data_dir}: run `edgepcap lab up` first")
    state = json.loads(state_file.read_text())
    layout = Layout(tag=state["tag"], colo=state["colo"], machines=state["machines"])
    tenants = ["customer", "other"] if tenant == "both" else [tenant]
    if any(t not in ("customer", "other") for t in tenants):
        _fail("--tenant must be customer, other or both")
    protos = tuple(proto or ("udp", "tcp", "icmp"))
    if any(p not in ("udp", "tcp", "icmp") for p in protos):
        _fail("--proto must be udp, tcp or icmp")
    try:
        flows = traffic.send(layout, tenants, count, size, v6, protos)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"flows": [f.as_dict() for f in flows]}))


def main() -> None:
    app()
