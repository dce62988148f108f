"""An agent key speaks for the one machine it was minted for, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.support.agentkeys import agent_client, mint_key, new_boot
from tests.support.api import full
from tests.support.servers import MachineHeartbeat
from tests.support.stack import Stack


def error(r) -> tuple[int, int, str]:
    body = r.json()
    assert body["success"] is False, body
    return r.status_code, body["errors"][0]["code"], body["errors"][0]["message"]


def test_a_key_registers_and_speaks_only_as_its_machine(stack: Stack):
    key = mint_key(stack, "ord", "ORD05")  # names normalised as the agent's are
    assert (key["colo"], key["machine"]) == ("ORD", "ord05")
    with agent_client(stack, key["agent_key"]) as c:
        boot = new_boot()
        # Not another machine of its colo, nor its machine name in another colo.
        r = c.post("/register", json={"colo": "ORD", "machine": "ord06", "boot_id": boot})
        status, code, message = error(r)
        assert (status, code) == (403, 9109) and "'ord05' of ORD only" in message
        r = c.post("/register", json={"colo": "DFW", "machine": "ord05", "boot_id": boot})
        assert error(r)[:2] == (403, 9109)
        # The stack's machine ord01 (registered with its own key) cannot be taken over.
        r = c.post("/register", json={"colo": "ORD", "machine": "ord01", "boot_id": boot})
        assert error(r)[:2] == (403, 9109)
        r = c.post("/heartbeat", json={"machine": "ord01", "boot_id": boot})
        assert error(r)[:2] == (403, 9109)
        r = c.get("/jobs", params={"machine": "ord01", "boot_id": boot, "wait": 0})
        assert error(r)[:2] == (403, 9109)

        r = c.post("/register", json={"colo": "ORD", "machine": "ord05", "boot_id": boot})
        assert r.status_code == 200, r.text
        assert r.json()["machine"] == "ord05"
        r = c.get("/jobs", params={"machine": "ord05", "boot_id": boot, "wait": 0})
        assert r.status_code == 200 and r.json() == {"jobs": [], "stop": []}


def test_a_machine_name_has_keys_in_one_colo_only(stack: Stack):
    first = mint_key(stack, "SEA", "sea01")
    out = stack.cli("agents", "create-key", "--colo", "PDX", "--machine", "sea01", check=False)
    assert out.returncode == 1 and "has a key in colo SEA" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    # A second key for the same machine is how keys are rotated.
    second = mint_key(stack, "SEA", "sea01")
    stack.cli("agents", "revoke-key", first["id"])
    stack.cli("agents", "revoke-key", second["id"])
    assert mint_key(stack, "PDX", "sea01")["colo"] == "PDX"


def test_reports_only_for_the_machines_own_parts_and_current_boot(stack: Stack):
    keys = {m: mint_key(stack, "DFW", m)["agent_key"] for m in ("dfw01", "dfw02")}
    beats = {m: MachineHeartbeat(stack.server.url, k, "DFW", m) for m, k in keys.items()}
    try:
        account = stack.account()
        conf = stack.validated_bucket(account)
        with stack.client(account) as c:
            r = c.post("/pcaps", json=full(conf, colo_name="DFW"))
            assert r.status_code == 200, r.text
            pcap_id = r.json()["result"]["id"]
            with agent_client(stack, keys["dfw01"]) as a:
                # dfw01's key, about dfw02's part (with dfw02's own boot id, even).
                r = a.post(
                    f"/captures/{pcap_id}/report",
                    json={**beats["dfw02"].me, "state": "done", "packets": 0},
                )
                assert error(r)[:2] == (403, 9109)
                # Its own part, from a run that is not the machine's current one.
                stale = {"machine": "dfw01", "boot_id": new_boot()}
                r = a.post(f"/captures/{pcap_id}/report", json={**stale, "state": "running"})
                assert error(r)[:2] == (409, 1102)
                parts = {
                    m["machine"]: m["state"]
                    for m in c.get(f"/pcaps/{pcap_id}").json()["result"]["machines"]
                }
                assert parts == {"dfw01": "assigned", "dfw02": "assigned"}
                # The current run of dfw01 reports on its own part.
                r = a.post(
                    f"/captures/{pcap_id}/report",
                    json={**beats["dfw01"].me, "state": "running"},
                )
                assert r.status_code == 200, r.text
            parts = {
                m["machine"]: m["state"]
                for m in c.get(f"/pcaps/{pcap_id}").json()["result"]["machines"]
            }
            assert parts == {"dfw01": "running", "dfw02": "assigned"}
            assert c.put(f"/pcaps/{pcap_id}/stop").status_code == 200
    finally:
        for beat in beats.values():
            beat.stop()


def test_a_revoked_key_is_refused_at_once(stack: Stack):
    key = mint_key(stack, "LHR", "lhr01")
    beat = MachineHeartbeat(stack.server.url, key["agent_key"], "LHR", "lhr01")
    try:
        with agent_client(stack, key["agent_key"]) as c:
            assert c.post("/heartbeat", json=beat.me).status_code == 200
            out = stack.cli("agents", "revoke-key", key["id"])
            assert '"revoked": "' in out.stdout
            status, code, message = error(c.post("/heartbeat", json=beat.me))
            assert (status, code) == (401, 10000) and "revoked" in message
            assert error(c.get("/prefixes"))[0] == 401
        listed = stack.cli("agents", "list").stdout
        assert key["id"] in listed and key["agent_key"] not in listed
        out = stack.cli("agents", "revoke-key", "0" * 32, check=False)
        assert out.returncode == 1 and "no agent key" in out.stderr
    finally:
        beat.stop()


def test_keys_minted_before_binding_are_refused_with_what_to_do(stack: Stack):
    from edgepcap.control.credentials import hash_secret
    from edgepcap.control.db import open_database
    from edgepcap.control.models import AgentKey

    # What migration 0004 leaves of a key minted before keys were bound: no colo, no machine.
    db = open_database(stack.server.data_dir, stack.server.database)
    try:
        with db.session() as session:
            session.add(AgentKey(id="e" * 32, key_hash=hash_secret("epa_old"), label="old"))
    finally:
        db.close()
    with agent_client(stack, "epa_old") as c:
        r = c.post("/register", json={"colo": "ORD", "machine": "ord09", "boot_id": new_boot()})
        status, code, message = error(r)
        assert (status, code) == (403, 9109)
        assert "bound to no machine" in message and "agents create-key" in message
    assert '"machine": null' in stack.cli("agents", "list").stdout
