"""The fleet figures (`bench/run --only fleet`): thousands of simulated agents
(`bench.fleet`) on `edgepcap api --workers 2` over PostgreSQL.

Full run: 2 000 agents in 20 colos of 100 machines; `--quick`: 300 in 3 colos. Measured,
as a user waits (the simulator notes when each answer came):

1. a full capture created on a 100-machine colo: from the create request's answer to
   the last of the colo's machines having its first `running` report answered, p50/p99
   over several captures;
2. its stop: from the stop request's answer to the last end report answered; then the
   capture must have ended `success` with every part `done`;
3. over an idle window with every agent heartbeating and long-polling: the API
   processes' CPU (% of one core, master and workers summed, from /proc/<pid>/stat) and
   RSS, the database's statements a second (pg_stat_statements, preloaded in the
   figure's server) and transactions a second (pg_stat_database), and the simulator's
   own CPU (its thread's clock): it shares the 2 cores.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bench.api import Api
from bench.figures import Figure, percentile
from bench.fleet import Fleet, raise_nofile
from edgepcap import bucket_urls
from edgepcap.control.accounts import create_account
from edgepcap.control.credentials import new_id
from edgepcap.control.fleet import create_agent_key
from edgepcap.control.models import Bucket, utcnow

DESTINATION = "s3://bench-fleet"
# EDGEPCAP_HEARTBEAT_INTERVAL for the fleet (a machine is lost after 5 intervals): at the
# default 1 s, 2 000 agents would send 2 000 heartbeats a second (BENCHMARKS.md, fleet).
HEARTBEAT = 20.0
TICK = os.sysconf("SC_CLK_TCK")


def colo_names(colos: int, machines: int) -> list[tuple[str, str]]:
    return [(f"F{c:02d}", f"f{c:02d}-m{m:03d}") for c in range(colos) for m in range(machines)]


class Stand:
    """The API (its processes inheriting a raised file limit) on a fresh PostgreSQL
    database, an account with a proven bucket, and one agent key per simulated machine."""

    def __init__(
        self, database: str, names: list[tuple[str, str]], heartbeat: float | None = None
    ) -> None:
        raise_nofile()
        env = {"EDGEPCAP_FULL_CAPTURE_RATE": "0"}
        if heartbeat is not None:
            env["EDGEPCAP_HEARTBEAT_INTERVAL"] = str(heartbeat)
        self.api = Api(database, env=env, workers=2)
        assert self.api.db is not None
        self.db = self.api.db
        with self.db.session() as s:
            account, creds = create_account(s, "fleet", ["203.0.113.0/24"])
            self.account, self.token = account.id, creds.api_token
            conf = bucket_urls.canonical(DESTINATION)
            s.add(
                Bucket(
                    id=new_id(),
                    account_id=account.id,
                    destination_conf=conf,
                    filename="bench",
                    challenge_hash="0" * 64,
                    status="success",
                    validated=utcnow(),
                )
            )
            self.keys = [(c, m, create_agent_key(s, c, m)[1]) for c, m in names]
        self.client = httpx.Client(
            base_url=f"{self.api.url}/client/v4/accounts/{self.account}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def close(self) -> None:
        self.client.close()
        self.api.close()

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.db.session() as s:
            return s.execute(text(sql), params).scalar()

    def parts(self, pcap_id: str, state: str) -> int:
        return self.scalar(
            "SELECT count(*) FROM capture_machines WHERE pcap_id = :p AND state = :s",
            p=pcap_id,
            s=state,
        )

    def create(self, colo: str, time_limit: int = 300) -> str:
        r = self.client.post(
            "/pcaps",
            json={
                "system": "magic-transit",
                "type": "full",
                "colo_name": colo,
                "destination_conf": DESTINATION,
                "time_limit": time_limit,
            },
        )
        r.raise_for_status()
        return r.json()["result"]["id"]

    def stop(self, pcap_id: str) -> None:
        self.client.put(f"/pcaps/{pcap_id}/stop").raise_for_status()

    def status(self, pcap_id: str) -> str:
        return self.scalar("SELECT status FROM pcaps WHERE id = :p", p=pcap_id)


def wait_for(what: Any, timeout: float, every: float = 0.01) -> float:
    """Seconds until `what()` is true (polled every `every` s); TimeoutError past `timeout`."""
    started = time.monotonic()
    while not what():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not true in {timeout} s")
        time.sleep(every)
    return time.monotonic() - started


def one_capture(stand: Stand, fleet: Fleet, colo: str, machines: int) -> dict[str, float]:
    """A user's waits: from the create request's answer to the last of the colo's
    machines having its first `running` report answered, and from the stop request's
    answer to the last end report answered (the capture ended, every part `done`)."""
    counts = fleet.counts
    pcap = stand.create(colo)
    created = time.monotonic()
    wait_for(lambda: len(counts.running_at.get(pcap, ())) == machines, 60)
    running_s = max(counts.running_at[pcap]) - created
    time.sleep(1.0)  # a second of progress reports, as a capture that ran a while
    stand.stop(pcap)
    stopped = time.monotonic()
    wait_for(lambda: len(counts.ended_at.get(pcap, ())) == machines, 60)
    stopped_s = max(counts.ended_at[pcap]) - stopped
    done = stand.parts(pcap, "done")
    assert done == machines and stand.status(pcap) == "success", (done, stand.status(pcap))
    return {"running_s": running_s, "stopped_s": stopped_s}


def api_pids(root: int) -> list[int]:
    """The API's master process and its workers (its children)."""
    pids = [root]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == root:
                    pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def xacts(stand: Stand) -> tuple[int, int, int]:
    """The database's transactions, rows updated and statements so far (the statements
    from pg_stat_statements, which the figure's server preloads)."""
    with stand.db.session() as s:
        row = s.execute(
            text(
                "SELECT xact_commit + xact_rollback, tup_updated, "
                "(SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = d.datid) "
                "FROM pg_stat_database d WHERE datname = current_database()"
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


def idle(stand: Stand, fleet: Fleet, seconds: float) -> dict[str, float]:
    pids = api_pids(stand.api.proc.pid)
    before = fleet.counts.heartbeats, fleet.counts.polls
    errors = fleet.counts.errors
    cpu0, (x0, u0, s0), t0 = cpu_seconds(pids), xacts(stand), time.monotonic()
    me0 = fleet.cpu_seconds()
    load0 = os.getloadavg()[0]
    time.sleep(seconds)
    cpu1, (x1, u1, s1), t1 = cpu_seconds(pids), xacts(stand), time.monotonic()
    took = t1 - t0
    me = fleet.cpu_seconds() - me0
    # The stats collector flushes every second or so: the counts lag by up to that.
    return {
        "seconds": round(took, 1),
        "api_cpu_pct": round(100 * (cpu1 - cpu0) / took, 1),
        "api_rss_mib": round(rss_mib(pids), 1),
        "api_processes": len(pids),
        "xact_per_s": round((x1 - x0) / took, 1),
        "statements_per_s": round((s1 - s0) / took, 1),
        "rows_updated_per_s": round((u1 - u0) / took, 1),
        "heartbeats_per_s": round((fleet.counts.heartbeats - before[0]) / took, 1),
        "simulator_cpu_pct": round(100 * me / took, 1),
        "polls_per_s": round((fleet.counts.polls - before[1]) / took, 1),
        "simulator_errors": fleet.counts.errors - errors,
        "loadavg_1m": round((load0 + os.getloadavg()[0]) / 2, 2),
    }


def measure(
    colos: int, machines: int, captures: int, idle_s: float, heartbeat: float | None = HEARTBEAT
) -> dict[str, Any]:
    from tests.support.postgres import start_postgres

    pg, remove = start_postgres(("shared_preload_libraries=pg_stat_statements",))
    try:
        database = pg.new_database()
        pg.run("-d", database.rsplit("/", 1)[1], "-c", "CREATE EXTENSION pg_stat_statements")
        stand = Stand(database, colo_names(colos, machines), heartbeat)
        try:
            fleet = Fleet(stand.api.url, stand.keys)
            started = time.monotonic()
            fleet.start(timeout=300)
            registered_s = time.monotonic() - started
            try:
                time.sleep(5)  # every agent's first poll is in, heartbeats spread out
                quiet = idle(stand, fleet, idle_s)
                sim0, t0 = fleet.cpu_seconds(), time.monotonic()
                runs = [
                    one_capture(stand, fleet, f"F{i % colos:02d}", machines)
                    for i in range(captures)
                ]
                busy = {
                    "simulator_cpu_pct": round(
                        100 * (fleet.cpu_seconds() - sim0) / (time.monotonic() - t0), 1
                    ),
                    "loadavg_1m": os.getloadavg()[0],
                }
                # The last end reports' answers may still be on their way to the fleet.
                wait_for(lambda: fleet.counts.ended == captures * machines, 30, 0.1)
            finally:
                fleet.stop()
            return {
                "agents": colos * machines,
                "colos": colos,
                "heartbeat_interval_s": fleet.agents[0].heartbeat_interval,
                "registered_s": round(registered_s, 1),
                "idle": quiet,
                "captures": busy,
                "running_s": sorted(round(r["running_s"], 3) for r in runs),
                "stopped_s": sorted(round(r["stopped_s"], 3) for r in runs),
                "counts": {k: v for k, v in asdict(fleet.counts).items() if k[-3:] != "_at"},
            }
        finally:
            stand.close()
    finally:
        remove()


def figure(quick: bool) -> list[Figure]:
    colos, captures, idle_s = (3, 5, 15) if quick else (20, 10, 30)
    r = measure(colos, 100, captures, idle_s)
    where = (
        f"{r['agents']} simulated agents, {colos} colos, heartbeats every "
        f"{r['heartbeat_interval_s']:g} s, API --workers 2 on PostgreSQL"
    )
    shared = f"loadavg {r['idle']['loadavg_1m']} during idle (2 cores, shared)"
    out = []
    for key, name in (
        ("running_s", "fleet: full capture on a 100-machine colo → all 100 parts running"),
        ("stopped_s", "fleet: stop → all 100 parts done, capture ended"),
    ):
        p50, p99 = percentile(r[key], 50), percentile(r[key], 99)
        out.append(
            Figure(
                name,
                p50,
                None,
                "p99 < 2 s",
                p99 < 2,
                "s p50",
                f"p99 {p99:.2f} s over {captures} captures; {where}",
                r,
            )
        )
    q = r["idle"]
    out.append(
        Figure(
            "fleet: API CPU with every agent idle",
            q["api_cpu_pct"],
            None,
            "< 25 % of one core",
            q["api_cpu_pct"] < 25,
            "% core",
            f"RSS {q['api_rss_mib']:.0f} MiB, {q['statements_per_s']:.0f} db statements/s "
            f"({q['xact_per_s']:.0f} xact/s), simulator {q['simulator_cpu_pct']:.0f} % core, "
            f"{q['heartbeats_per_s']:.0f} heartbeats/s, {q['polls_per_s']:.0f} polls/s; "
            f"{where}; {shared}",
            q,
        )
    )
    return out
