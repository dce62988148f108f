"""The administrative command line: `edgepcap accounts …`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.processes import EDGEPCAP
from tests.support.servers import start_server, stop_server


@pytest.fixture(params=["sqlite", "postgresql"])
def admin(request, tmp_path):
    database = None
    if request.param == "postgresql":
        database = request.getfixturevalue("postgres").new_database()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [EDGEPCAP, *args, "--data-dir", str(tmp_path)]
        if database:
            cmd += ["--database", database]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    run.database = database  # type: ignore[attr-defined]
    run.data_dir = tmp_path  # type: ignore[attr-defined]
    return run


def test_accounts_create_list_add_prefix(admin):
    out = admin(
        "accounts",
        "create",
        "acme",
        "--prefix",
        "203.0.113.0/25",
        "--prefix",
        "2001:db8:aa::/48",
        "--email",
        "noc@acme.example",
    )
    assert out.returncode == 0, out.stderr
    acct = json.loads(out.stdout)
    assert set(acct) == {"id", "name", "prefixes", "api_token", "email", "api_key"}
    assert re.fullmatch(r"[0-9a-f]{32}", acct["id"])
    assert acct["prefixes"] == ["203.0.113.0/25", "2001:db8:aa::/48"]
    assert acct["email"] == "noc@acme.example"

    out = admin("accounts", "add-prefix", acct["id"], "198.51.100.0/24")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["prefixes"][-1] == "198.51.100.0/24"

    listed = [json.loads(line) for line in admin("accounts", "list").stdout.splitlines()]
    assert [a["id"] for a in listed] == [acct["id"]]
    assert "api_token" not in listed[0] and "api_key" not in listed[0]


@pytest.mark.parametrize(
    ("prefixes", "needle"),
    [
        (["203.0.113.0/24", "203.0.113.128/25"], "overlap"),
        (["203.0.113.5/24"], "no host bits"),
        (["not-a-prefix"], "not a network prefix"),
        (["::ffff:203.0.113.0/120"], "IPv4-mapped"),
        # Covering ::ffff:0:0/96 would hold every IPv4 address in its mapped form.
        (["2001:db8:aa::/48", "::/80"], "covers the IPv4-mapped IPv6 range ::ffff:0:0/96"),
        (["::/0"], "covers the IPv4-mapped IPv6 range ::ffff:0:0/96"),
    ],
)
def test_bad_prefixes_are_refused(admin, prefixes, needle):
    out = admin("accounts", "create", "bad", *[a for p in prefixes for a in ("--prefix", p)])
    assert out.returncode != 0
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_prefixes_have_one_owner(admin):
    first = json.loads(admin("accounts", "create", "one", "--prefix", "192.0.2.0/24").stdout)
    out = admin("accounts", "create", "two", "--prefix", "192.0.2.64/26")
    assert out.returncode != 0 and "another account" in out.stderr
    out = admin("accounts", "add-prefix", first["id"], "192.0.2.0/25")
    assert out.returncode != 0 and "this account already holds" in out.stderr
    out = admin("accounts", "add-prefix", "0" * 32, "198.51.100.0/24")
    assert out.returncode != 0 and "no account" in out.stderr


def test_add_prefix_refuses_ipv6_prefixes_over_the_mapped_range(admin):
    acct = json.loads(admin("accounts", "create", "v6", "--prefix", "2001:db8:aa::/48").stdout)
    covers = "covers the IPv4-mapped IPv6 range ::ffff:0:0/96"
    for prefix, needle in (("::/64", covers), ("::/0", covers), ("::ffff:0:0/96", "IPv4-mapped")):
        out = admin("accounts", "add-prefix", acct["id"], prefix)
        assert out.returncode != 0 and "Traceback" not in out.stderr, (prefix, out.stderr)
        assert needle in out.stderr, (prefix, out.stderr)
    listed = [json.loads(line) for line in admin("accounts", "list").stdout.splitlines()]
    assert listed[0]["prefixes"] == ["2001:db8:aa::/48"]


def test_secrets_are_stored_hashed(admin):
    acct = json.loads(admin("accounts", "create", "h", "--prefix", "192.0.2.0/24").stdout)
    if admin.database is None:
        blob = b"".join(p.read_bytes() for p in admin.data_dir.glob("edgepcap.db*"))
    else:
        import psycopg

        with psycopg.connect(admin.database) as conn:
            blob = repr(conn.execute("SELECT * FROM accounts").fetchall()).encode()
    assert acct["id"].encode() in blob
    assert acct["api_token"].encode() not in blob
    assert acct["api_key"].encode() not in blob


def test_api_runs_on_the_data_dir_and_database_given(admin):
    acct = json.loads(admin("accounts", "create", "x", "--prefix", "192.0.2.0/24").stdout)
    server = start_server(admin.data_dir, admin.database)
    try:
        r = httpx.get(
            f"{server.api}/accounts/{acct['id']}/pcaps",
            headers={"Authorization": f"Bearer {acct['api_token']}"},
        )
        assert r.status_code == 200 and r.json()["result"] == []
        assert acct["api_token"] not in server.logs()
    finally:
        stop_server(server)


@pytest.mark.root  # `up` runs an agent: nftables
def test_up_starts_a_single_node_with_a_demo_account(tmp_path):
    import os
    import signal

    from tests.support.processes import free_port, wait_for

    port = free_port()
    data = tmp_path / "node"
    proc = subprocess.Popen(
        [EDGEPCAP, "up", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        api = f"http://127.0.0.1:{port}/client/v4"
        wait_for(lambda: httpx.get(api + "/health", timeout=1).status_code == 200, 30, "up")
        creds_file = data / "demo-account.json"
        assert os.stat(creds_file).st_mode & 0o777 == 0o600
        demo = json.loads(creds_file.read_text())
        r = httpx.get(
            f"{api}/accounts/{demo['id']}/pcaps",
            headers={"X-Auth-Email": demo["email"], "X-Auth-Key": demo["api_key"]},
        )
        assert r.status_code == 200, r.text
        assert (data / "buckets").is_dir()
        assert (data / "agent-key").stat().st_mode & 0o777 == 0o600

        # The agent of this host captures a full capture on colo LOCAL into a bucket.
        headers = {"Authorization": f"Bearer {demo['api_token']}"}
        with httpx.Client(base_url=f"{api}/accounts/{demo['id']}", headers=headers) as c:
            bucket = data / "buckets" / "mine"
            bucket.mkdir()
            conf = f"file://{bucket}"
            name = c.post("/pcaps/ownership", json={"destination_conf": conf}).json()["result"]
            token = (bucket / name["filename"]).read_text()
            c.post(
                "/pcaps/ownership/validate",
                json={"destination_conf": conf, "ownership_challenge": token},
            )
            body = {
                "system": "magic-transit",
                "type": "full",
                "time_limit": 1,
                "colo_name": "LOCAL",
                "destination_conf": conf,
            }
            created = wait_for(
                lambda: (
                    (r := c.post("/pcaps", json=body)).status_code == 200 and r.json()["result"]
                ),
                30,
                "the agent to register",
            )
            done = wait_for(
                lambda: (
                    (p := c.get(f"/pcaps/{created['id']}").json()["result"])["status"]
                    in ("success", "failed")
                    and p
                ),
                30,
                "the capture",
            )
            assert done["status"] == "success", done
            assert list(bucket.glob(f"*/pcap_{created['id']}.pcap"))
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
        assert f"edgepcap_{created['id']}" not in tables.stdout
        unkeyed = httpx.get(f"http://127.0.0.1:{port}/agent/v1/prefixes", timeout=5)
        assert unkeyed.status_code == 401, unkeyed.text
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()

    # Stopping `up` stops its agent, which takes its sampler table with it.
    def agents_left() -> list[str]:
        found = []
        for proc_dir in Path("/proc").iterdir():
            try:
                cmd = (proc_dir / "cmdline").read_bytes()
            except OSError:
                continue
            if b"agent" in cmd and str(data).encode() in cmd:
                found.append(proc_dir.name)
        return found

    wait_for(lambda: not agents_left(), 15, "the agent of `up` to exit")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    assert "edgepcap_" not in tables.stdout
    assert str(creds_file) in out and demo["api_token"] not in out
    # Told to stop while its agent's long poll is open, the API answers the poll and
    # ends cleanly: no cancelled request, no traceback.
    assert "Application shutdown complete" in out, out
    # The access log keeps customers' requests, agents' registrations and failures, not
    # the agent's polls, heartbeats, reports and samples, which came several times a second.
    assert f'"GET /client/v4/accounts/{demo["id"]}/pcaps/{created["id"]} HTTP/1.1" 200' in out
    assert '"POST /agent/v1/register HTTP/1.1" 200' in out, out
    assert '"GET /agent/v1/prefixes HTTP/1.1" 401' in out, out
    routine = r'/agent/v1/(jobs|heartbeat|prefixes|samples|captures/\S+/report)\S* HTTP/1.1" 200'
    assert not re.search(routine, out), out
    assert "graceful shutdown exceeded" not in out, out
    assert "Traceback" not in out and " 500 " not in out, out


def test_up_keeps_its_machines_key_and_replaces_any_other(admin):
    """`up`'s key file: kept while bound to this colo and machine; a key from before keys
    were bound (or for another --machine) is revoked and replaced."""
    from edgepcap.cli.server import _up_agent_key
    from edgepcap.control.credentials import hash_secret
    from edgepcap.control.db import open_database
    from edgepcap.control.fleet import find_agent_key
    from edgepcap.control.models import AgentKey

    key_file = admin.data_dir / "agent-key"
    key_file.write_text("epa_unbound")
    db = open_database(admin.data_dir, admin.database)
    try:
        with db.session() as session:
            session.add(AgentKey(id="f" * 32, key_hash=hash_secret("epa_unbound")))
        with db.session() as session:
            _up_agent_key(session, key_file, "LOCAL", "node1")
        first = key_file.read_text()
        assert first != "epa_unbound" and key_file.stat().st_mode & 0o777 == 0o600
        with db.session() as session:
            _up_agent_key(session, key_file, "LOCAL", "node1")
            assert key_file.read_text() == first
            _up_agent_key(session, key_file, "LOCAL", "node2")
        with db.session() as session:
            assert session.get(AgentKey, "f" * 32).revoked is not None
            old, new = find_agent_key(session, first), find_agent_key(session, key_file.read_text())
            assert old.revoked is not None and (old.colo, old.machine) == ("LOCAL", "node1")
            assert new.revoked is None and (new.colo, new.machine) == ("LOCAL", "node2")
    finally:
        db.close()


def test_clickhouse_users_lets_live_machines_insert_and_no_other(admin, tmp_path_factory):
    import hashlib
    import os

    from edgepcap.control.samples import direct

    keys = {}
    for machine in ("ord01", "ord02"):
        out = admin("agents", "create-key", "--colo", "ORD", "--machine", machine)
        assert out.returncode == 0, out.stderr
        keys[machine] = json.loads(out.stdout)["id"]
    assert admin("agents", "revoke-key", keys["ord02"]).returncode == 0
    secret = "k" * 40
    key_file = tmp_path_factory.mktemp("ingest") / "key"
    key_file.write_text(secret)
    env = {
        **os.environ,
        "EDGEPCAP_SAMPLE_STORE": "clickhouse://127.0.0.1:9000/edgepcap",
        "EDGEPCAP_SAMPLE_INGEST": "http://127.0.0.1:8123/",
        "EDGEPCAP_SAMPLE_INGEST_KEY_FILE": str(key_file),
    }

    def users(*args: str, environ=env) -> subprocess.CompletedProcess[str]:
        cmd = [EDGEPCAP, "agents", "clickhouse-users", *args, "--data-dir", str(admin.data_dir)]
        cmd += ["--database", admin.database] if admin.database else []
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=environ)

    def digest(machine: str) -> str:
        return hashlib.sha256(direct.password(secret, machine).encode()).hexdigest()

    out = users()
    assert out.returncode == 0, out.stderr
    # The live machine's user, with the password its agent is handed; not the revoked one.
    assert "<edgepcap_in_ord01>" in out.stdout and digest("ord01") in out.stdout
    assert "ord02" not in out.stdout
    assert "<allow_ddl>0</allow_ddl>" in out.stdout
    out = users("--machine", "ams01", "--networks", "198.18.0.0/15")
    assert out.returncode == 0, out.stderr
    assert digest("ams01") in out.stdout and "<ip>198.18.0.0/15</ip>" in out.stdout
    assert "ord01" not in out.stdout
    bad = users("--machine", "AMS 01")
    assert bad.returncode == 1 and "bad machine name" in bad.stderr
    unset = {k: v for k, v in env.items() if k != "EDGEPCAP_SAMPLE_INGEST"}
    missing = users(environ=unset)
    assert missing.returncode == 1 and "EDGEPCAP_SAMPLE_INGEST" in missing.stderr
    assert secret not in out.stdout + out.stderr + missing.stderr
