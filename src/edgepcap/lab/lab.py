"""`edgepcap lab up|down`: the whole system on one host, in namespaces, with real agents."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from edgepcap import client
from edgepcap.agent.kernel import nft
from edgepcap.agent.sampler import TABLE as SAMPLER_TABLE
from edgepcap.control import accounts
from edgepcap.control.credentials import write_secret_file
from edgepcap.control.db import open_database
from edgepcap.control.fleet import FleetError, check_names, create_agent_key, is_live
from edgepcap.control.models import Machine
from edgepcap.lab import topology
from edgepcap.lab.topology import CLIENT4, CLIENT6, MAX_MACHINES, TENANTS, Layout, tag_of

STATE = "lab-state.json"


class LabError(RuntimeError):
    pass


def _edgepcap() -> str:
    here = Path(sys.executable).parent / "edgepcap"
    return str(here) if here.exists() else (shutil.which("edgepcap") or "edgepcap")


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise LabError(f"timed out waiting for {what} ({last})")


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> int:
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            start_new_session=True,
        )
    return proc.pid


def _check(colos: list[str], machines: int) -> None:
    """Refuse what the lab cannot build: names the fleet or the kernel would refuse, a colo
    twice, more machines than its addresses have room for."""
    if not colos:
        raise LabError("name at least one colo (--colo ORD)")
    seen: set[str] = set()
    for colo in colos:
        try:
            name, _ = check_names(colo, f"{colo.lower()}01")
        except FleetError as exc:
            raise LabError(str(exc)) from None
        # Interfaces are `to-<machine>`, and an interface name has at most 15 characters.
        if len(name) > 10:
            raise LabError(f"colo {name!r} is too long for the lab: at most 10 characters")
        if name in seen:
            raise LabError(f"colo {name} is named twice")
        seen.add(name)
    most = MAX_MACHINES // len(colos)
    if not 1 <= machines <= most:
        raise LabError(
            f"--machines must be 1 to {most} with {len(colos)} colo(s): it counts machines "
            f"per colo, and the lab holds at most {MAX_MACHINES} machines in all"
        )


def up(
    data_dir: Path, colos: str | list[str], machines: int, listen: str, database: str | None
) -> dict:
    """Build the lab: `machines` machines in each of `colos` (one name or several)."""
    colos = [colos] if isinstance(colos, str) else list(colos)
    _check(colos, machines)
    if os.geteuid() != 0:
        raise LabError("the lab needs root: it creates network namespaces and nftables rules")
    data_dir = data_dir.resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (data_dir / STATE).exists():
        down(data_dir)
    layout = Layout.create(data_dir, colos, machines)
    logs = data_dir / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    buckets = data_dir / "buckets"
    buckets.mkdir(exist_ok=True)
    state: dict[str, Any] = {
        "tag": layout.tag,
        "colo": layout.colo,
        "colos": layout.colos,
        "machines": layout.machines,
        "pids": [],
    }
    _save(data_dir, state)
    try:
        topology.build(layout)
        host, _, port = listen.rpartition(":")
        api = f"http://{host}:{port}"
        # What the lab's processes are started with, kept so that a restart gets the same.
        inherited = {k: v for k, v in os.environ.items() if k.startswith(("EDGEPCAP_", "AWS_"))}
        metrics_token = secrets.token_urlsafe(32)
        metrics_token_file = data_dir / "metrics-token"
        metrics_token_file.unlink(missing_ok=True)
        write_secret_file(metrics_token_file, metrics_token)
        env = {
            **inherited,
            "EDGEPCAP_BUCKET_ROOT": str(buckets),
            "EDGEPCAP_ACCESS_LOG": "0",
            "EDGEPCAP_METRICS_TOKEN_FILE": str(metrics_token_file),
        }
        argv = [_edgepcap(), "api", "--listen", listen, "--data-dir", str(data_dir)]
        # The database URL may hold a password: in the api's environment, not its argv.
        state["api_argv"] = argv
        state["api_env"] = {"EDGEPCAP_DATABASE": database or ""}
        state["pids"].append(_spawn(argv, logs / "api.log", {**env, **state["api_env"]}))
        _save(data_dir, state)
        _wait(
            lambda: httpx.get(f"{api}/client/v4/health", timeout=1).status_code == 200,
            30,
            "the api (see logs/api.log)",
        )

        db = open_database(data_dir, database)
        try:
            with db.session() as session:
                # One key per machine: each speaks for its own machine, of its colo, only.
                keys = {
                    m: create_agent_key(session, layout.colo_of(m), m, f"lab {layout.tag}")[1]
                    for m in layout.machines
                }
                made = {}
                for tenant, (v4, v6, _base) in TENANTS.items():
                    acct, creds = accounts.create_account(session, f"lab-{tenant}", [v4, v6])
                    made[tenant] = accounts.describe(acct, creds)
            state.update(api=api, agent_keys=keys, buckets=str(buckets), env=env)
            for machine in layout.machines:
                state["pids"].append(_start_agent(data_dir, state, machine))
                _save(data_dir, state)

            def all_live() -> bool:
                with db.session() as session:
                    rows = [session.get(Machine, m) for m in layout.machines]
                    return all(r is not None and is_live(r) for r in rows)

            _wait(all_live, 30, "every agent to register (see logs/<machine>.log)")
            # Registered is not yet sampling: each sampler installs its table once it has
            # fetched the prefixes, and traffic sent before that is in no sample (a test
            # of the 1-in-100 rate that started at once saw 65 of 10 000 packets).
            _wait(
                lambda: all(
                    SAMPLER_TABLE in nft.list_tables(layout.ns(m)) for m in layout.machines
                ),
                30,
                "every machine's sampler table (see logs/<machine>.log)",
            )
        finally:
            db.close()

        info: dict[str, Any] = {}
        for tenant, acct in made.items():
            hosts = layout.hosts(tenant)
            bucket = buckets / tenant
            bucket.mkdir(exist_ok=True)
            conf = _validate_bucket(api, acct, bucket)
            info[tenant] = {
                "api": api,
                "account_id": acct["id"],
                "api_token": acct["api_token"],
                "email": acct["email"],
                "api_key": acct["api_key"],
                "prefixes": acct["prefixes"],
                "destination_conf": conf,
                "colo": layout.colo,
                "colos": layout.colos,
                "namespaces": {
                    "client": layout.ns("client"),
                    "customer": layout.ns(tenant),
                    "machines": {m: layout.ns(m) for m in layout.machines},
                },
                "addresses": {
                    "client": CLIENT4,
                    "customer": hosts[0][0],
                    "client6": CLIENT6,
                    "customer6": hosts[0][1],
                },
                # Host i is reached through machine i, whatever its colo.
                "hosts": [
                    {"v4": h4, "v6": h6, "machine": m, "colo": layout.colo_of(m)}
                    for (h4, h6), m in zip(hosts, layout.machines, strict=True)
                ],
            }
        lab = {
            **info["customer"],
            "other": info["other"],
            "data_dir": str(data_dir),
            "database": database,
            "metrics_token": metrics_token,
        }
        # Credentials: readable by root only from the start, not once written.
        (data_dir / "lab.json").unlink(missing_ok=True)
        write_secret_file(data_dir / "lab.json", json.dumps(lab, indent=2))
        return lab
    except BaseException:
        down(data_dir)
        raise


def _start_agent(
    data_dir: Path, state: dict[str, Any], machine: str, extra_env: dict[str, str] | None = None
) -> int:
    layout = Layout.from_state(state)
    argv = [
        _edgepcap(),
        "agent",
        "--api",
        state["api"],
        "--colo",
        layout.colo_of(machine),
        "--machine",
        machine,
        "--netns",
        layout.ns(machine),
        "--bucket-root",
        state["buckets"],
    ]
    env = {**state["env"], **(extra_env or {}), "EDGEPCAP_AGENT_KEY": state["agent_keys"][machine]}
    env["EDGEPCAP_DATABASE"] = ""  # agents never reach the database: not even its URL
    return _spawn(argv, data_dir / "logs" / f"{machine}.log", env)


def agent_pid(data_dir: Path, machine: str) -> int:
    state = json.loads((data_dir.resolve() / STATE).read_text())
    return int(state["pids"][1 + state["machines"].index(machine)])


def restart_agent(data_dir: Path, machine: str, env: dict[str, str] | None = None) -> int:
    """Start `machine`'s agent again (after it died); returns its new pid.

    `env` adds variables for this start only (e.g. EDGEPCAP_NFLOG_RCVBUF).
    """
    data_dir = data_dir.resolve()
    state = json.loads((data_dir / STATE).read_text())
    index = 1 + state["machines"].index(machine)
    old = state["pids"][index]
    if _ours(old):
        raise LabError(f"the agent of {machine} (pid {old}) is still running")
    state["pids"][index] = _start_agent(data_dir, state, machine, env)
    _save(data_dir, state)
    return state["pids"][index]


def stop_agent(data_dir: Path, machine: str) -> None:
    """Stop `machine`'s agent as an operator would (SIGTERM: it ends its captures)."""
    pid = agent_pid(data_dir, machine)
    if _ours(pid):
        os.kill(pid, signal.SIGTERM)
        _wait(lambda: not _ours(pid), 40, f"the agent of {machine} to stop")


def stop_api(data_dir: Path) -> None:
    """Stop the lab's api (agents keep running); `start_api` brings it back."""
    state = json.loads((data_dir.resolve() / STATE).read_text())
    pid = state["pids"][0]
    if _ours(pid):
        os.kill(pid, signal.SIGTERM)
        _wait(lambda: not _ours(pid), 15, "the api to stop")


def start_api(data_dir: Path) -> None:
    data_dir = data_dir.resolve()
    state = json.loads((data_dir / STATE).read_text())
    if _ours(state["pids"][0]):
        raise LabError("the api is still running")
    env = {**state["env"], **state.get("api_env", {})}
    state["pids"][0] = _spawn(state["api_argv"], data_dir / "logs" / "api.log", env)
    _save(data_dir, state)
    _wait(
        lambda: httpx.get(f"{state['api']}/client/v4/health", timeout=1).status_code == 200,
        30,
        "the api (see logs/api.log)",
    )


def _validate_bucket(api: str, acct: dict[str, Any], bucket: Path) -> str:
    conf = f"file://{bucket}"
    settings = client.Settings(api=f"{api}/client/v4", account=acct["id"], token=acct["api_token"])
    try:
        with client.Client(settings) as c:
            c.prove_bucket(conf, lambda name: (bucket / name).read_text())
    except client.ClientError as exc:
        raise LabError(f"proving bucket {conf}: {exc}") from None
    return conf


def _save(data_dir: Path, state: dict[str, Any]) -> None:
    # It holds the agent keys: readable by root only.
    path = data_dir / STATE
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(json.dumps(state))


def _ours(pid: int) -> bool:
    try:
        return b"edgepcap" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def down(data_dir: Path) -> list[str]:
    """Stop the lab's processes and remove every namespace it made; returns what it did."""
    data_dir = data_dir.resolve()
    done: list[str] = []
    path = data_dir / STATE
    state = json.loads(path.read_text()) if path.exists() else {}
    pids = [p for p in state.get("pids", []) if _ours(p)]
    # Agents first, so that they can finish files and report while the api still runs.
    for group in (pids[1:], pids[:1]):
        for pid in group:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for pid in group:
            while _ours(pid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
            if _ours(pid):
                os.kill(pid, signal.SIGKILL)
            done.append(f"stopped process {pid}")
    tag = state.get("tag") or tag_of(data_dir)
    for name in topology.stray_namespaces(tag):
        from edgepcap.agent.kernel import netns

        netns.delete(name)
        done.append(f"removed namespace {name}")
    path.unlink(missing_ok=True)
    return done
