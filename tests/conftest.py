"""Fixtures that run the real thing: API server processes, PostgreSQL, an S3 server."""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgepcap.control.accounts import create_account, describe
from edgepcap.control.db import Database, open_database

BIN = Path(sys.executable).parent
EDGEPCAP = str(BIN / "edgepcap")
# The operator token every test server's /metrics asks for (start_server's default).
METRICS_TOKEN = "operator-token-of-the-tests-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the condition may raise until it holds
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} ({last_exc!r})")


# --- PostgreSQL ----------------------------------------------------------------


@dataclass
class Postgres:
    port: int
    socket_dir: Path
    bindir: Path
    data: Path | None = None
    counter: int = 0

    def run(self, *args: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                *args,
            ],
            check=True,
            capture_output=True,
        )

    def new_database(self) -> str:
        self.counter += 1
        name = f"edgepcap_test_{os.getpid()}_{self.counter}"
        self.run("-c", f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _pg_ctl(self, *args: str) -> None:
        assert self.data is not None
        pg_ctl = str(self.bindir / "pg_ctl")
        subprocess.run(
            ["runuser", "-u", "postgres", "--", pg_ctl, "-D", str(self.data), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        """Start the server (again) on its data directory and port; returns when it accepts."""
        assert self.data is not None
        self._pg_ctl(
            "-l",
            str(self.data.parent / "pg.log"),
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off -c max_connections=200",
            "start",
        )

    def crash(self) -> None:
        """Stop the server at once, as a crash would (`-m immediate`: no clean shutdown)."""
        self._pg_ctl("-m", "immediate", "-w", "stop")


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: run scripts/bootstrap.sh test")
    return Path(found[-1]).parent


def start_postgres() -> tuple[Postgres, Callable[[], None]]:
    """A throwaway PostgreSQL server on loopback, and the function that removes it."""
    bindir = _pg_bindir()
    # Not under pytest's 0700 temp dir: the postgres user must reach its files.
    base = Path(tempfile.mkdtemp(prefix="edgepcap-pg-"))
    data = base / "data"
    sock = base / "sock"
    sock.mkdir()
    for path in (base, sock):
        shutil.chown(path, "postgres")
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    server = Postgres(port=free_port(), socket_dir=sock, bindir=bindir, data=data)
    server.start()

    def stop() -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            server.crash()
        shutil.rmtree(base, ignore_errors=True)

    return server, stop


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[Postgres]:
    """A PostgreSQL server of one test module alone: restarting it disturbs no other test."""
    server, remove = start_postgres()
    try:
        yield server
    finally:
        remove()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server on loopback, owned by the test run."""
    server, stop = start_postgres()
    try:
        yield server
    finally:
        stop()


# --- API server processes --------------------------------------------------------


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


@dataclass
class Account:
    id: str
    name: str
    prefixes: list[str]
    email: str
    api_token: str
    api_key: str

    def host(self, index: int = 1, version: int = 4) -> str:
        """An address inside the account's prefixes."""
        net = next(
            ipaddress.ip_network(p)
            for p in self.prefixes
            if ipaddress.ip_network(p).version == version
        )
        return str(net[index])

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"}

    @property
    def key_headers(self) -> dict[str, str]:
        return {"X-Auth-Email": self.email, "X-Auth-Key": self.api_key}


@dataclass
class Stack:
    """An API server with its data dir, and helpers to drive it as a customer would."""

    server: Server
    environ: dict[str, str] = field(default_factory=dict)
    verify: Any = True  # what clients check an https server with (see start_server)
    machine: Any = None  # ord01 of colo ORD, a MachineHeartbeat
    _accounts: int = 0
    _db: Database | None = None

    @property
    def api(self) -> str:
        return self.server.api

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [EDGEPCAP, *args, "--data-dir", str(self.server.data_dir)]
        if self.server.database:
            cmd += ["--database", self.server.database]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)

    def account(self, *prefixes: str) -> Account:
        """A new account; by default with its own /30 of TEST-NET and /48 of 2001:db8::/32."""
        self._accounts += 1
        n = self._accounts
        if not prefixes:
            net = ("203.0.113", "198.51.100", "192.0.2")[n // 64 % 3]
            prefixes = (f"{net}.{4 * (n % 64)}/30", f"2001:db8:{n:x}::/48")
        if self._db is None:
            self._db = open_database(self.server.data_dir, self.server.database)
        with self._db.session() as session:
            account, creds = create_account(session, f"acct{n}", list(prefixes))
            info = describe(account, creds)
        return Account(**info)

    def client(self, account: Account, keys: bool = False) -> httpx.Client:
        headers = account.key_headers if keys else account.bearer
        return httpx.Client(
            base_url=f"{self.api}/accounts/{account.id}",
            headers=headers,
            timeout=30,
            verify=self.verify,
        )

    def validated_bucket(self, account: Account) -> str:
        """A `file://` bucket of the account, proven through the ownership API."""
        directory = self.server.data_dir / "buckets" / account.id
        directory.mkdir(parents=True, exist_ok=True)
        conf = f"file://{directory}"
        with self.client(account) as c:
            r = c.post("/pcaps/ownership", json={"destination_conf": conf})
            assert r.status_code == 200, r.text
            token = (directory / r.json()["result"]["filename"]).read_text()
            r = c.post(
                "/pcaps/ownership/validate",
                json={"destination_conf": conf, "ownership_challenge": token},
            )
            assert r.status_code == 200, r.text
            assert r.json()["result"]["status"] == "success"
        return conf


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

    def finish(self, pcap_id: str, done: bool = True, error: str = "failed on purpose") -> None:
        """Report this machine's part of a capture done, its file written where it was
        told (or failed with `error`, with no file)."""
        report = {"state": "failed", "error": error}
        if done:
            report = {"state": "done", "object_name": f"{self.me['machine']}/pcap_{pcap_id}.pcap"}
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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3-protocol server on loopback."""
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


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, s3_server: str
) -> Iterator[Stack]:
    """One API server per module and backend, reaching the S3 server as its object store.

    A test module may set `SERVER_ENV` (a dict) for more of the server's environment.
    """
    database = None
    if request.param == "postgresql":
        database = request.getfixturevalue("postgres").new_database()
    data_dir = tmp_path_factory.mktemp(f"api-{request.param}")
    env = {
        **S3_ENV,
        "EDGEPCAP_S3_ENDPOINT": s3_server,
        **getattr(request.module, "SERVER_ENV", {}),
    }
    server = start_server(data_dir, database, env)
    machine = register_machine(server)
    stack = Stack(server=server, environ=env, machine=machine)
    try:
        yield stack
    finally:
        machine.stop()
        stop_server(server)
        if stack._db is not None:
            stack._db.close()


# --- The lab -----------------------------------------------------------------------------


@dataclass
class Lab:
    """A running `edgepcap lab`: its lab.json, and helpers to drive it as a customer would."""

    data_dir: Path
    info: dict[str, Any]
    s3: str = ""

    def __getitem__(self, key: str) -> Any:
        return self.info[key]

    def client(self, tenant: str = "customer") -> httpx.Client:
        t = self.info if tenant == "customer" else self.info["other"]
        return httpx.Client(
            base_url=f"{t['api']}/client/v4/accounts/{t['account_id']}",
            headers={"Authorization": f"Bearer {t['api_token']}"},
            timeout=30,
        )

    def traffic(self, *args: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [EDGEPCAP, "lab", "traffic", "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["flows"]

    def start_full(self, tenant: str = "customer", **fields: Any) -> dict[str, Any]:
        t = self.info if tenant == "customer" else self.info["other"]
        body = {
            "system": "magic-transit",
            "type": "full",
            "time_limit": 60,
            "colo_name": t["colo"],
            "destination_conf": t["destination_conf"],
            **fields,
        }
        with self.client(tenant) as c:
            r = c.post("/pcaps", json=body)
            assert r.status_code == 200, r.text
            pcap = r.json()["result"]
            # Traffic may only start once every machine captures.
            wait_for(
                lambda: self.get(pcap["id"], tenant)["status"] != "pending",
                5,
                "the capture to start",
            )
            return self.get(pcap["id"], tenant)

    def validate(self, conf: str, read_challenge: Callable[[str], str]) -> str:
        """Prove ownership of the bucket `conf` as a customer would: ask for a challenge,
        read it back from the bucket (`read_challenge(filename)`), validate; returns conf."""
        with self.client() as c:
            r = c.post("/pcaps/ownership", json={"destination_conf": conf})
            assert r.status_code == 200, r.text
            token = read_challenge(r.json()["result"]["filename"])
            r = c.post(
                "/pcaps/ownership/validate",
                json={"destination_conf": conf, "ownership_challenge": token},
            )
            assert r.status_code == 200, r.text
        return conf

    def get(self, pcap_id: str, tenant: str = "customer") -> dict[str, Any]:
        with self.client(tenant) as c:
            return c.get(f"/pcaps/{pcap_id}").json()["result"]

    def wait_end(self, pcap_id: str, timeout: float = 30, tenant: str = "customer"):
        return wait_for(
            lambda: (p := self.get(pcap_id, tenant))["status"] in ("success", "failed") and p,
            timeout,
            f"capture {pcap_id} to end",
        )

    def files(self, pcap_id: str, tenant: str = "customer") -> dict[str, Path]:
        t = self.info if tenant == "customer" else self.info["other"]
        root = Path(t["destination_conf"].removeprefix("file://"))
        return {p.parent.name: p for p in root.glob(f"*/pcap_{pcap_id}.pcap")}

    def sample(self, tenant: str = "customer", **fields: Any) -> dict[str, Any]:
        body = {
            "system": "magic-transit",
            "type": "simple",
            "time_limit": 300,
            "packet_limit": 10000,
            **fields,
        }
        with self.client(tenant) as c:
            r = c.post("/pcaps", json=body)
            assert r.status_code == 200, r.text
            return r.json()["result"]

    def download(self, pcap_id: str, path: Path, tenant: str = "customer") -> Path:
        with self.client(tenant) as c:
            r = c.get(f"/pcaps/{pcap_id}/download")
            assert r.status_code == 200, r.text
            path.write_bytes(r.content)
        return path

    def metrics(self) -> str:
        """`/metrics`, with the operator token the lab made."""
        token = self.info["metrics_token"]
        r = httpx.get(
            f"{self.info['api']}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert r.status_code == 200, r.text
        return r.text

    def sampler_stats(self) -> dict[str, dict[str, int]]:
        text = self.metrics()
        out: dict[str, dict[str, int]] = {}
        for line in text.splitlines():
            if line.startswith("edgepcap_sampler_"):
                name, value = line.rsplit(" ", 1)
                key = name.split("{")[0].removeprefix("edgepcap_sampler_").removesuffix("_total")
                machine = name.split('machine="')[1].split('"')[0]
                out.setdefault(machine, {})[key] = int(value)
        return out

    def samples_settled(self) -> dict[str, dict[str, int]]:
        """Wait until every sampler has shipped everything it took and is quiet."""
        last: list[Any] = [None]

        def settled() -> Any:
            stats = self.sampler_stats()
            quiet = all(
                s.get("backlog", 1) == 0 and s["shipped"] == s["attributed"] for s in stats.values()
            )
            same = stats == last[0]
            last[0] = stats
            return quiet and same and stats

        return wait_for(settled, 20, "the samplers to ship everything", interval=1.2)

    def send(
        self,
        count: int,
        tenants: tuple[str, ...] = ("customer",),
        size: int = 100,
        v6: bool = False,
        protos: tuple[str, ...] = ("udp",),
    ) -> list[dict[str, Any]]:
        """`lab traffic` from this process (no process start): flows as `traffic` gives them."""
        from edgepcap.lab import traffic
        from edgepcap.lab.topology import Layout

        state = json.loads((self.data_dir / "lab-state.json").read_text())
        layout = Layout(tag=state["tag"], colo=state["colo"], machines=state["machines"])
        flows = traffic.send(layout, list(tenants), count, size, v6, protos)
        return [f.as_dict() for f in flows]

    def machines_up(self) -> dict[str, bool]:
        """Which machines the control plane sees live (`edgepcap_machine_up`)."""
        text = self.metrics()
        return {
            line.split('machine="')[1].split('"')[0]: line.endswith(" 1")
            for line in text.splitlines()
            if line.startswith("edgepcap_machine_up{")
        }

    def registrations(self, machine: str) -> int:
        """How often the machine's agent has registered (from its log)."""
        log = self.data_dir / "logs" / f"{machine}.log"
        return log.read_text(errors="replace").count(f"registered {machine} in ")

    def tables(self, machine: str) -> list[str]:
        """The capture tables (`edgepcap_<id>`) in a machine; the sampler's is always there."""
        ns = self.info["namespaces"]["machines"][machine]
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "tables"],
            capture_output=True,
            text=True,
            check=True,
        )
        names = [line.split()[-1] for line in out.stdout.splitlines()]
        return [n for n in names if n.startswith("edgepcap_") and n != "edgepcap_sampler"]


def lab_down(data_dir: Path) -> None:
    subprocess.run(
        [EDGEPCAP, "lab", "down", "--data-dir", str(data_dir)],
        capture_output=True,
        timeout=120,
        check=False,
    )


@contextlib.contextmanager
def running_lab(data_dir: Path, s3_server: str, database: str | None = None) -> Iterator[Lab]:
    """`edgepcap lab up` with two machines of ORD; always `lab down` afterwards.

    Its api and agents reach moto's S3 server as their S3 endpoint.
    """
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces, nftables)")
    port = free_port()
    try:
        out = subprocess.run(
            [
                EDGEPCAP,
                "lab",
                "up",
                "--data-dir",
                str(data_dir),
                "--colo",
                "ORD",
                "--machines",
                "2",
                "--listen",
                f"127.0.0.1:{port}",
                *(["--database", database] if database else []),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            # Sample captures are tested filter by filter: no one-per-minute wait here;
            # one tenant runs many full captures back to back (the soak test 100): no
            # full-capture rate. The limits themselves are tested against the api.
            env={
                **os.environ,
                **S3_ENV,
                "EDGEPCAP_S3_ENDPOINT": s3_server,
                "EDGEPCAP_SAMPLE_INTERVAL": "0",
                "EDGEPCAP_FULL_CAPTURE_RATE": "0",
            },
        )
        assert out.returncode == 0, out.stderr[-3000:]
        yield Lab(
            data_dir=data_dir, info=json.loads((data_dir / "lab.json").read_text()), s3=s3_server
        )
    finally:
        lab_down(data_dir)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[Lab]:
    """`edgepcap lab up` with two machines of ORD on SQLite; always `lab down` afterwards."""
    with running_lab(tmp_path_factory.mktemp("lab"), s3_server) as running:
        yield running


# --- ClickHouse ----------------------------------------------------------------------------

CLICKHOUSE_CONFIG = """<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog>
    <console>0</console></logger>
  <tcp_port>{port}</tcp_port>
  <http_port>{http_port}</http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
"""
CLICKHOUSE_USERS = """<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"""


@pytest.fixture(scope="session")
def clickhouse() -> Iterator[str]:
    """Debian's clickhouse-server on loopback; yields host:port of its native protocol."""
    server = shutil.which("clickhouse-server") or "/usr/bin/clickhouse-server"
    if not os.path.exists(server):
        pytest.fail("clickhouse-server is not installed: run scripts/bootstrap.sh test")
    base = Path(tempfile.mkdtemp(prefix="edgepcap-ch-"))
    port, http_port = free_port(), free_port()
    (base / "config.xml").write_text(
        CLICKHOUSE_CONFIG.format(d=base, port=port, http_port=http_port)
    )
    (base / "users.xml").write_text(CLICKHOUSE_USERS)
    proc = subprocess.Popen(
        [server, f"--config-file={base}/config.xml"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from clickhouse_driver import Client

        wait_for(
            lambda: Client("127.0.0.1", port=port).execute("SELECT 1"), 60, "clickhouse-server"
        )
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(base, ignore_errors=True)
