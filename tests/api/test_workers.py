"""`edgepcap api --workers 2`: several processes on one port serve one consistent API."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import Postgres
from tests.support.processes import wait_for
from tests.support.servers import new_account, start_server, stop_server


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def flock_holders(path: Path) -> list[int]:
    inode = os.stat(path).st_ino
    holders = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "FLOCK" and int(fields[5].split(":")[2]) == inode:
            holders.append(int(fields[4]))
    return holders


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_share_the_port_one_sweeps_and_all_stop(tmp_path, backend, request):
    database = None
    if backend == "postgresql":
        pg: Postgres = request.getfixturevalue("postgres")
        database = pg.new_database()
    server = start_server(tmp_path, database, {"EDGEPCAP_SAMPLE_INTERVAL": "0"}, ("--workers", "2"))
    try:
        info = new_account(server, "workers")
        lock = tmp_path / "supervisor.lock"
        # Exactly one worker runs the sweeps.
        wait_for(lambda: lock.exists() and len(flock_holders(lock)) == 1, 30, "a sweeping worker")
        workers = children(server.proc.pid)
        assert set(flock_holders(lock)) <= workers

        base = f"{server.api}/accounts/{info['id']}"
        made = []
        # New connections each time: the kernel spreads them over both workers.
        for i in range(20):
            headers = (
                {"Authorization": f"Bearer {info['api_token']}"}
                if i % 2
                else {"X-Auth-Email": info["email"], "X-Auth-Key": info["api_key"]}
            )
            if i % 5 == 0:
                r = httpx.post(
                    f"{base}/pcaps",
                    headers=headers,
                    json={
                        "system": "magic-transit",
                        "type": "simple",
                        "time_limit": 60,
                        "packet_limit": 10,
                    },
                    timeout=30,
                )
                assert r.status_code == 200, r.text
                made.append(r.json()["result"]["id"])
            r = httpx.get(f"{base}/pcaps", headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            assert [p["id"] for p in r.json()["result"]] == made[::-1]
            r = httpx.get(f"{base}/pcaps/{made[-1]}", headers=headers, timeout=30)
            assert r.status_code == 200 and r.json()["result"]["status"] == "success"
        r = httpx.get(f"{base}/pcaps", headers={"Authorization": "Bearer nope"}, timeout=30)
        assert r.status_code == 401
    finally:
        stop_server(server)
    wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
        10,
        "every worker to exit with the server",
    )
