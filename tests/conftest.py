"""Fixtures that run the real thing (API servers, PostgreSQL, an S3 server, the lab,
ClickHouse), and the markers that say what a test needs; the drivers are in tests/support/.

The markers (pyproject.toml) are set here from the fixtures a test uses, so that
`pytest -m "not root and not browser"` leaves out what a laptop cannot run; a test that
needs root without such a fixture says so with `pytestmark`/`@pytest.mark.root`.
"""

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

# What a fixture needs: the lab namespaces and nftables (root), a browser, PostgreSQL
# (as root, started through `runuser`; as anyone else, as themselves) or clickhouse-server.
FIXTURE_MARKS = {
    "lab": "root",
    "browser": "browser",
    "postgres": "postgres",
    "private_postgres": "postgres",
    "clickhouse": "clickhouse",
}
# A test or fixture that takes its backend as a param (`stack`, the CLI's `admin`, the
# sample stores, `backend`) gets the server with getfixturevalue, which fixturenames does
# not show: the param's value says it instead, so name a backend by these values.
PARAM_MARKS = {"postgresql": "postgres", "clickhouse": "clickhouse"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marks = {FIXTURE_MARKS[n] for n in getattr(item, "fixturenames", ()) if n in FIXTURE_MARKS}
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            marks |= {
                PARAM_MARKS[v]
                for v in callspec.params.values()
                if isinstance(v, str) and v in PARAM_MARKS
            }
        for mark in sorted(marks):
            item.add_marker(mark)


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
