"""`edgepcap api` and `edgepcap up`: the control plane in the foreground.

`serve` runs uvicorn (one process, or several workers sharing the port); `up` is a single
node: a demo account on first start, an agent key bound to this host, the agent as a child
that dies with it, the API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from edgepcap.cli.options import (
    DatabaseUrl,
    DataDir,
    MetricsTokenFile,
    SampleStoreUrl,
    _fail,
    _open,
    _parse_listen,
    _private_files,
)
from edgepcap.control.credentials import write_secret_file
from edgepcap.formats.protocol import KEEP_ALIVE


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
    from edgepcap.control.db import make_data_dir
    from edgepcap.control.settings import TOKEN_FILE_ENV, SettingError, Settings

    host, port = _parse_listen(listen)
    _private_files()
    make_data_dir(data_dir)
    if metrics_token_file is not None:
        os.environ[TOKEN_FILE_ENV] = str(metrics_token_file.resolve())  # workers read it too
    try:  # checked here, before workers start: they would only die one by one
        settings = Settings.from_environ(data_dir.resolve(), database, sample_store)
    except SettingError as exc:
        _fail(str(exc))
    if settings.metrics_token is None:
        typer.echo("no metrics token (--metrics-token-file): GET /metrics is off", err=True)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": os.environ.get("EDGEPCAP_ACCESS_LOG", "1") == "1",
        # Agents hold long polls open; do not wait for them on shutdown.
        "timeout_graceful_shutdown": 2,
        # Longer than agents keep their idle connections (KEEP_ALIVE).
        "timeout_keep_alive": KEEP_ALIVE + 5,
        # One process on uvloop lets some connections wait far longer than others under
        # load, at the same throughput as asyncio's loop; with several workers uvloop
        # spreads the connections over them better, and is the faster loop
        # (BENCHMARKS.md, "API").
        "loop": "asyncio" if workers == 1 else "auto",
    }
    if tls is not None:
        options["ssl_certfile"], options["ssl_keyfile"] = str(tls[0]), str(tls[1])
    if workers == 1:
        uvicorn.run(open_app(settings), **options)
        return
    # Migrate once here, so that workers starting together do not race on the schema.
    _open(data_dir, settings.database).close()
    # Workers start from an import string: the environment is how their settings reach them.
    os.environ["EDGEPCAP_DATA_DIR"] = str(settings.data_dir)
    os.environ["EDGEPCAP_DATABASE"] = settings.database or ""
    os.environ["EDGEPCAP_SAMPLE_STORE"] = settings.sample_store or ""
    uvicorn.run("edgepcap.api.app:from_environment", factory=True, workers=workers, **options)


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
                write_secret_file(creds_file, demo)
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
            write_secret_file(metrics_token_file, secrets.token_urlsafe(32))
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
    write_secret_file(key_file, create_agent_key(session, colo, machine, "edgepcap up")[1])


def _die_with_parent() -> None:
    # uvicorn re-raises SIGTERM after its shutdown, so `up` may end before any `finally`
    # runs: the kernel then stops the agent (which removes its tables) for us.
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
