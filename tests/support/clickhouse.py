"""Debian's clickhouse-server on loopback, with a configuration of the test's own."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, wait_for

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
  <users><default><password>{password}</password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"""


@dataclasses.dataclass(frozen=True)
class ClickHouse:
    """A running server: its native and HTTP ports, the default user's password, and the
    users.d directory it re-reads (users added there can log in a few seconds later)."""

    port: int
    http_port: int
    password: str
    users_d: Path

    @property
    def host(self) -> str:
        """host:port of the native protocol, with the default user's password if any."""
        creds = f"default:{self.password}@" if self.password else ""
        return f"{creds}127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"


@contextlib.contextmanager
def clickhouse_server() -> Iterator[str]:
    """A clickhouse-server of its own; yields host:port of its native protocol."""
    with clickhouse_process("") as server:
        yield server.host


@contextlib.contextmanager
def clickhouse_process(password: str) -> Iterator[ClickHouse]:
    """A clickhouse-server of its own whose default user has `password` ("" for none)."""
    server = shutil.which("clickhouse-server") or "/usr/bin/clickhouse-server"
    if not os.path.exists(server):
        pytest.fail("clickhouse-server is not installed: run scripts/bootstrap.sh test")
    base = Path(tempfile.mkdtemp(prefix="edgepcap-ch-"))
    port, http_port = free_port(), free_port()
    (base / "config.xml").write_text(
        CLICKHOUSE_CONFIG.format(d=base, port=port, http_port=http_port)
    )
    (base / "users.xml").write_text(CLICKHOUSE_USERS.format(password=password))
    (base / "users.d").mkdir()
    proc = subprocess.Popen(
        [server, f"--config-file={base}/config.xml"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from clickhouse_driver import Client

        wait_for(
            lambda: Client("127.0.0.1", port=port, password=password).execute("SELECT 1"),
            60,
            "clickhouse-server",
        )
        yield ClickHouse(port, http_port, password, base / "users.d")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(base, ignore_errors=True)
