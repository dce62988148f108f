"""What the sample path ingests, for step `clickhouse`: one API core taking agents' batches
(embedded and ClickHouse stores), and agents inserting into ClickHouse themselves
(`samples.direct`); with the accounts and machines the ClickHouse figures share.

Every figure runs real processes: `edgepcap api` (1 worker), Debian's clickhouse-server
(tests.support.clickhouse), agents simulated as HTTP clients of the real protocol and of
their ClickHouse sinks.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from pathlib import Path

import httpx
from clickhouse_driver import Client

from bench import samples
from bench.api import Api
from edgepcap.control.accounts import create_account
from edgepcap.control.fleet import create_agent_key
from edgepcap.control.samples import direct

ACCOUNTS = 50
INGEST_KEY = "bench-ingest-key-0123456789abcdef"


def account_net(i: int) -> ipaddress.IPv4Network:
    """Account i's prefix: a /29 of the TEST-NETs (96 of them)."""
    base = ("203.0.113", "198.51.100", "192.0.2")[i // 32]
    return ipaddress.ip_network(f"{base}.{8 * (i % 32)}/29")


def make_accounts(api: Api, n: int, net=account_net) -> tuple[list[str], dict[str, str]]:
    ids, tokens = [], {}
    assert api.db is not None
    with api.db.session() as s:
        for i in range(n):
            account, creds = create_account(s, f"z{i}", [str(net(i))])
            ids.append(account.id)
            tokens[account.id] = creds.api_token
    return ids, tokens


def register(api: Api, machine: str) -> tuple[str, dict, dict]:
    """(agent key, the machine's query params, its Welcome)."""
    assert api.db is not None
    with api.db.session() as s:
        _row, key = create_agent_key(s, "BEN", machine, "bench")
    me = {"machine": machine, "boot_id": os.urandom(16).hex()}
    r = httpx.post(
        f"{api.url}/agent/v1/register",
        json={"colo": "BEN", **me},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    r.raise_for_status()
    return key, me, r.json()


def api_ingest(env: dict[str, str], seconds: float) -> dict:
    """One API worker, one machine posting 15 000-record batches back to back: what the
    API keeps per second (all records its accounts' own)."""
    api = Api(env={"EDGEPCAP_SAMPLE_INTERVAL": "0", **env})
    try:
        ids, _tokens = make_accounts(api, samples.ACCOUNTS, samples.account_net)
        key, me, _welcome = register(api, "bench01")
        wire = samples.synth(15_000, time.time_ns() - 10**9, 10**9, ids, seed=3)
        body = wire.tobytes()
        kept = posted = 0
        cpu0 = _cpu(api.proc.pid)
        with httpx.Client(
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"},
            timeout=60,
        ) as c:
            start = beat = time.monotonic()
            while time.monotonic() - start < seconds:
                if time.monotonic() - beat > 1:  # the machine stays live (its run current)
                    c.post(
                        f"{api.url}/agent/v1/heartbeat",
                        json=me,
                        headers={"Content-Type": "application/json"},
                    ).raise_for_status()
                    beat = time.monotonic()
                r = c.post(f"{api.url}/agent/v1/samples", params=me, content=body)
                r.raise_for_status()
                kept += r.json()["kept"]
                posted += len(wire)
            elapsed = time.monotonic() - start
        cpu = (_cpu(api.proc.pid) - cpu0) / elapsed
        return {"kept_per_s": kept / elapsed, "kept": kept, "posted": posted, "api_cpu": cpu}
    finally:
        api.close()


def _cpu(pid: int) -> float:
    """CPU seconds the process and its children have used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _server_cpu(port: int) -> float:
    """CPU seconds of the clickhouse-server listening on `port` (found by its config)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"clickhouse-server" in cmd:
                conf = cmd.split(b"--config-file=")[-1].split(b"\0")[0].decode()
                if f"<tcp_port>{port}</tcp_port>" in Path(conf).read_text():
                    return _cpu(int(pid))
    return 0.0


def direct_ingest(ch, machines: int, seconds: float, batch: int) -> dict:
    """`machines` agents inserting `batch`-record batches into their ClickHouse sinks back
    to back for `seconds`; then every buffer flushed and the rows counted."""
    database = f"ingest_{int(time.time())}"
    key_file = Path(ch.users_d).parent / "ingest.key"
    key_file.write_text(INGEST_KEY)
    api = Api(
        env={
            "EDGEPCAP_SAMPLE_STORE": f"clickhouse://{ch.host}/{database}",
            "EDGEPCAP_SAMPLE_PARTITION": "3600",
            "EDGEPCAP_SAMPLE_INGEST": ch.http,
            "EDGEPCAP_SAMPLE_INGEST_KEY_FILE": str(key_file),
        }
    )
    admin = Client("127.0.0.1", port=ch.port, password=ch.password, database=database)
    names = [f"sim{i:02d}" for i in range(machines)]
    try:
        ids, _tokens = make_accounts(api, samples.ACCOUNTS, samples.account_net)
        (Path(ch.users_d) / f"{database}.xml").write_text(
            direct.users_xml(database, INGEST_KEY, names)
        )
        sinks = [register(api, name)[2]["samples_to"] for name in names]
        deadline = time.monotonic() + 30
        while not all(_ok(sink) for sink in sinks):  # ClickHouse re-reads users.d
            if time.monotonic() > deadline:
                raise RuntimeError("ClickHouse did not take the machines' users")
            time.sleep(0.2)
        now = time.time_ns()
        bodies = [
            samples.synth(batch, now, 10**9, ids, seed=20 + i).tobytes() for i in range(machines)
        ]
        sent = [0] * machines
        failed = [0] * machines
        stop = time.monotonic() + seconds
        cpu0 = _server_cpu(ch.port)

        def agent(i: int) -> None:
            sink = sinks[i]
            with httpx.Client(auth=(sink["user"], sink["password"]), timeout=60) as c:
                query = {"query": f"INSERT INTO {sink['table']} FORMAT RowBinary"}
                while time.monotonic() < stop:
                    r = c.post(sink["url"], params=query, content=bodies[i])
                    if r.status_code == 200:
                        sent[i] += batch
                    else:
                        failed[i] += batch

        start = time.monotonic()
        threads = [threading.Thread(target=agent, args=(i,)) for i in range(machines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        server_cpu = (_server_cpu(ch.port) - cpu0) / elapsed
        # Every buffer written through, then count what the store holds.
        for name in names:
            own, _null = direct.names(database, name)
            admin.execute(f"OPTIMIZE TABLE {own}.samples")
        admin.execute("OPTIMIZE TABLE incoming")
        stored = admin.execute("SELECT count() FROM samples")[0][0]
        by_machine = dict(admin.execute("SELECT machine, count() FROM samples GROUP BY machine"))
        return {
            "machines": machines,
            "batch": batch,
            "seconds": elapsed,
            "sent": sum(sent),
            "refused": sum(failed),
            "stored": stored,
            "lost": sum(sent) - stored,
            "per_s": stored / elapsed,
            "clickhouse_cpu": server_cpu,
            "by_machine": by_machine,
        }
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {direct.names(database, name)[0]}")
        admin.disconnect()
        api.close()


def _ok(sink: dict) -> bool:
    auth = (sink["user"], sink["password"])
    return httpx.get(sink["url"], params={"query": "SELECT 1"}, auth=auth).status_code == 200
