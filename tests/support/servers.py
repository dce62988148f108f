"""`edgepcap api` processes, accounts in their database, a machine kept live, moto's S3 server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgepcap.control.accounts import create_account, describe
from edgepcap.control.db import open_database
from tests.support.processes import BIN, EDGEPCAP, METRICS_TOKEN, free_port, wait_for


@dataclass
class Server:
    url: str
    data_dir: Path
    database: str | None
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return self.url + "/client/v4"

    def metrics(self, verify: Any = True) -> str:
        """`/metrics`, with the operator token start_server gave the server."""
        token = self.env.get("EDGEPCAP_METRICS_TOKEN", METRICS_TOKEN)
        r = httpx.get(
            self.url + "/metrics",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            verify=verify,
        )
        r.raise_for_status()
        return r.text

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


class MachineHeartbeat:
    """Keeps a machine registered and live through the real agent protocol.

    The control-plane tests need a live colo to accept full captures; they do not
    capture packets (the lab tests run real agents for that), so this speaks only the
    registration and heartbeat part of `/agent/v1`.
    """

    def __init__(self, api_root: str, key: str, colo: str, machine: str) -> None:
        self.http = httpx.Client(
            base_url=api_root + "/agent/v1", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        self.me = {"machine": machine, "boot_id": os.urandom(16).hex()}
        r = self.http.post("/register", json={"colo": colo, **self.me})
        assert r.status_code == 200, r.text
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(httpx.HTTPError):
                self.http.post("/heartbeat", json=self.me)

    def finish(
        self,
        pcap_id: str,
        done: bool = True,
        error: str = "failed on purpose",
        outbound: list[list[int]] | None = None,
        known: int | None = 1 << 40,
    ) -> None:
        """Report this machine's part of a capture done, its file written where it was
        told, the packets it sent itself `outbound` and how many packets those runs speak
        for (`known`; None: say nothing, as agents from before directions) — or failed
        with `error`, no file."""
        report: dict[str, Any] = {"state": "failed", "error": error}
        if done:
            report = {"state": "done", "object_name": f"{self.me['machine']}/pcap_{pcap_id}.pcap"}
            report["outbound"] = outbound or []
            if known is not None:
                report["directions_known"] = known
        r = self.http.post(f"/captures/{pcap_id}/report", json={**self.me, **report})
        assert r.status_code == 200, r.text

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.http.close()


def register_machine(server: Server, colo: str = "ORD", machine: str = "ord01"):
    out = subprocess.run(
        [
            EDGEPCAP,
            "agents",
            "create-key",
            "--colo",
            colo,
            "--machine",
            machine,
            "--data-dir",
            str(server.data_dir),
            *(["--database", server.database] if server.database else []),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return MachineHeartbeat(server.url, json.loads(out.stdout)["agent_key"], colo, machine)


def start_server(
    data_dir: Path,
    database: str | None,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    verify: Any = True,
) -> Server:
    """`edgepcap api` on a free port; with `--tls-cert` in `args` on https, checked with
    `verify` (an ssl.SSLContext trusting the test's CA)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir / f"api-{port}.log"
    cmd = [EDGEPCAP, "api", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir), *args]
    if database:
        cmd += ["--database", database]
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "EDGEPCAP_METRICS_TOKEN": METRICS_TOKEN, **(env or {})},
        )
    scheme = "https" if "--tls-cert" in args else "http"
    server = Server(
        url=f"{scheme}://127.0.0.1:{port}",
        data_dir=data_dir,
        database=database,
        proc=proc,
        log=log,
        env=env or {},
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"api exited with {proc.returncode}:\n{server.logs()}")
        return httpx.get(server.api + "/health", timeout=1, verify=verify).status_code == 200

    try:
        wait_for(ready, 30, "the api to answer")
    except BaseException:
        stop_server(server)
        raise
    return server


def new_account(server: Server, name: str, prefixes: tuple[str, ...] = ("203.0.113.0/24",)):
    """An account created in the server's database, as `accounts create` prints it."""
    db = open_database(server.data_dir, server.database)
    try:
        with db.session() as session:
            account, creds = create_account(session, name, list(prefixes))
            return describe(account, creds)
    finally:
        db.close()


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def start_s3_server() -> Iterator[str]:
    """moto's S3-protocol server on loopback; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(url + "/moto-api/", timeout=1).status_code < 500,
            30,
            "moto's S3 server",
        )
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
