"""Fixtures that run the real thing (API servers, PostgreSQL, an S3 server, the lab,
ClickHouse); the drivers are in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.clickhouse import clickhouse_server
from tests.support.lab import Lab, running_lab
from tests.support.postgres import Postgres, start_postgres
from tests.support.servers import (
    S3_ENV,
    register_machine,
    start_s3_server,
    start_server,
    stop_server,
)
from tests.support.stack import Stack


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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3-protocol server on loopback."""
    with start_s3_server() as url:
        yield url


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


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[Lab]:
    """`edgepcap lab up` with two machines of ORD on SQLite; always `lab down` afterwards."""
    with running_lab(tmp_path_factory.mktemp("lab"), s3_server) as running:
        yield running


@pytest.fixture(scope="session")
def clickhouse() -> Iterator[str]:
    """Debian's clickhouse-server on loopback; yields host:port of its native protocol."""
    with clickhouse_server() as host:
        yield host
