"""Rate limits hold across API processes: two servers on one PostgreSQL racing each other."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.api.test_pcaps import SIMPLE, full
from tests.conftest import S3_ENV, Stack, register_machine, start_server, stop_server


@pytest.fixture(scope="module")
def twin(postgres, tmp_path_factory, s3_server) -> Iterator[tuple[Stack, Stack]]:
    database = postgres.new_database()
    data_dir = tmp_path_factory.mktemp("twin")
    env = {**S3_ENV, "EDGEPCAP_S3_ENDPOINT": s3_server}
    first = start_server(data_dir, database, env)
    try:
        second = start_server(data_dir, database, env)
    except BaseException:
        stop_server(first)
        raise
    machine = register_machine(first)
    try:
        yield Stack(server=first, environ=env), Stack(server=second, environ=env)
    finally:
        machine.stop()
        stop_server(first)
        stop_server(second)


def race(urls: list[str], account, body: dict, per_server: int = 8) -> Counter[int]:
    """Fire the same create at every server at once; count the status codes."""
    barrier = threading.Barrier(len(urls) * per_server)
    results: list[int] = []
    lock = threading.Lock()

    def fire(url: str) -> None:
        with httpx.Client(headers=account.bearer, timeout=30) as c:
            barrier.wait(timeout=30)
            status = c.post(f"{url}/accounts/{account.id}/pcaps", json=body).status_code
        with lock:
            results.append(status)

    threads = [threading.Thread(target=fire, args=(u,)) for u in urls for _ in range(per_server)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return Counter(results)


def test_concurrent_full_creates_accept_exactly_one(twin):
    a, b = twin
    acct = a.account()
    conf = a.validated_bucket(acct)
    for _round in range(3):
        counts = race([a.api, b.api], acct, full(conf))
        assert counts == Counter({200: 1, 429: 15}), counts
        with a.client(acct) as c:
            active = [p for p in c.get("/pcaps").json()["result"] if p["status"] == "pending"]
            assert len(active) == 1
            assert c.put(f"/pcaps/{active[0]['id']}/stop").status_code == 200


def test_concurrent_sample_creates_accept_exactly_one(twin):
    a, b = twin
    acct = a.account()
    counts = race([a.api, b.api], acct, SIMPLE)
    assert counts == Counter({200: 1, 429: 15}), counts
    with b.client(acct) as c:
        assert len(c.get("/pcaps").json()["result"]) == 1
