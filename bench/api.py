"""The API figure: `edgepcap api` under `wrk` (GET and list of captures), SQLite and
PostgreSQL, one worker and two; `Api` also serves the sample figure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.figures import EDGEPCAP, ROOT, Figure, free_port
from edgepcap.control.accounts import create_account
from edgepcap.control.db import Database, open_database


class Api:
    """An `edgepcap api` process on a fresh data dir (SQLite, or the given database)."""

    def __init__(
        self,
        database: str | None = None,
        env: dict[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="edgepcap-bench-api-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = database
        cmd = [EDGEPCAP, "api", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.dir)]
        if database:
            cmd += ["--database", database]
        cmd += ["--workers", str(workers)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "EDGEPCAP_ACCESS_LOG": "0", **(env or {})},
        )
        self.db: Database | None = None
        self.wait()

    def wait(self) -> None:
        """Until the API answers its health check (30 s at most)."""
        # One client for the whole wait: each new httpx client loads the CA store (~35 ms).
        with httpx.Client(timeout=1) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if client.get(self.url + "/client/v4/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
        self.db = open_database(self.dir, self.database)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        if self.db is not None:
            self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wrk_load(url: str, account: str, token: str, pcap_id: str, seconds: float) -> dict:
    """50 clients of `wrk` (C, one thread: it leaves the server most of the second core)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            "-c50",
            f"-d{seconds:g}s",
            "--timeout",
            "5s",
            "-s",
            str(ROOT / "bench" / "api_load.lua"),
            url,
            "--",
            token,
            account,
            pcap_id,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["rps"] = res["requests"] / res["seconds"]
    return res


def fig_api(quick: bool) -> list[Figure]:
    from tests.support.postgres import start_postgres

    out = []
    # PostgreSQL's initdb and start (~3 s) overlap the first API's start; every load
    # below waits for it, so nothing else runs while wrk measures.
    with ThreadPoolExecutor(1) as pool:
        pg_started = pool.submit(start_postgres)
        try:
            for backend in ("SQLite", "PostgreSQL"):
                # Quick runs measure the configuration we recommend: a worker per core.
                for workers in (2,) if quick else (1, 2):
                    pg = pg_started.result()[0] if backend == "PostgreSQL" else None
                    api = Api(pg.new_database() if pg else None, workers=workers)
                    try:
                        pg_started.result()
                        with api.db.session() as s:
                            account, creds = create_account(s, "load", ["203.0.113.0/24"])
                            account_id = account.id
                        r = httpx.post(
                            f"{api.url}/client/v4/accounts/{account_id}/pcaps",
                            headers={"Authorization": f"Bearer {creds.api_token}"},
                            json={
                                "system": "magic-transit",
                                "type": "simple",
                                "time_limit": 60,
                                "packet_limit": 10,
                            },
                        )
                        pcap_id = r.json()["result"]["id"]
                        # Warm up: connection pools, prepared statements, the workers' caches.
                        wrk_load(api.url, account_id, creds.api_token, pcap_id, 1 if quick else 2)
                        seconds = 2 if quick else 10
                        res = wrk_load(api.url, account_id, creds.api_token, pcap_id, seconds)
                        errors = res["non_2xx"] + res["socket_errors"]
                        ok = res["rps"] >= 1500 and res["p99_ms"] < 50 and errors == 0
                        out.append(
                            Figure(
                                f"API GET/list, 50 clients, {backend}, {workers} worker(s)",
                                res["rps"],
                                None,
                                ">= 1500 req/s, p99 < 50 ms",
                                ok,
                                "req/s",
                                f"p99 {res['p99_ms']:.0f} ms, {errors} errors; "
                                "wrk on the same 2 cores",
                                res,
                            )
                        )
                    finally:
                        api.close()
        finally:
            # initdb and start take seconds; a server that has not come up by then won't.
            if pg_started.exception(timeout=120) is None:
                pg_started.result()[1]()
    return out
