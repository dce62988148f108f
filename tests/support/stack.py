"""An account as `accounts create` prints it, and Stack: an API server driven as a customer."""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgepcap.client import Client, Settings
from edgepcap.control.accounts import create_account, describe
from edgepcap.control.db import Database, open_database
from tests.support.processes import EDGEPCAP
from tests.support.servers import Server, start_server, stop_server


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
        settings = Settings(api=self.api, account=account.id, token=account.api_token)
        with Client(settings, verify=self.verify) as c:
            bucket = c.prove_bucket(conf, lambda name: (directory / name).read_text())
        assert bucket["status"] == "success", bucket
        return conf


@contextlib.contextmanager
def two_api_processes(
    data_dir: Path, database: str, env: dict[str, str]
) -> Iterator[tuple[Stack, Stack]]:
    """Two `edgepcap api` processes on one database and data dir, as two hosts behind a
    load balancer would be; both stopped afterwards."""
    first = start_server(data_dir, database, env)
    try:
        second = start_server(data_dir, database, env)
    except BaseException:
        stop_server(first)
        raise
    try:
        yield Stack(server=first, environ=env), Stack(server=second, environ=env)
    finally:
        stop_server(first)
        stop_server(second)
