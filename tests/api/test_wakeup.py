"""Word of changes between API processes: a capture made on one reaches an agent
long-polling another through PostgreSQL's LISTEN/NOTIFY, and the listener comes back
after its connection is lost; a revoked agent key, kept in memory by every process, is
refused by all of them at once."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from sqlalchemy import update

from edgepcap.api.agent_keys import AgentKeys
from edgepcap.control import changes, fleet
from edgepcap.control.db import open_database
from edgepcap.control.models import AgentKey, utcnow
from tests.support.agentkeys import agent_client, mint_key, new_boot
from tests.support.api import full
from tests.support.processes import wait_for
from tests.support.servers import S3_ENV, register_machine
from tests.support.stack import Stack, two_api_processes


def test_payloads_name_their_origin_and_machines():
    assert changes.decode(changes.encode("p1", ["b", "a", "b"])) == ("p1", ["a", "b"])
    assert changes.decode(changes.encode("p1", None)) == ("p1", None)
    many = [f"m{i:05d}" for i in range(2000)]  # over NOTIFY's 8000 bytes: everyone
    assert changes.decode(changes.encode("p1", many)) == ("p1", None)


@pytest.fixture(scope="module")
def pair(postgres, tmp_path_factory, s3_server) -> Iterator[tuple[Stack, Stack]]:
    env = {**S3_ENV, "EDGEPCAP_S3_ENDPOINT": s3_server}
    data_dir = tmp_path_factory.mktemp("wakeup")
    with two_api_processes(data_dir, postgres.new_database(), env) as stacks:
        yield stacks


def gauge(stack: Stack, name: str) -> int:
    found = re.search(rf"^{name} (\d+)$", stack.server.metrics(), re.MULTILINE)
    assert found, name
    return int(found.group(1))


def test_a_capture_made_on_one_process_wakes_a_poll_on_another(pair):
    first, second = pair
    wait_for(lambda: gauge(second, "edgepcap_wakeup_listening") == 1, 20, "second to listen")
    machine = register_machine(first.server, "ORD", "ord07")
    account = first.account()
    conf = first.validated_bucket(account)
    try:
        polls = httpx.Client(
            base_url=second.server.url + "/agent/v1",
            headers=machine.http.headers,
            timeout=60,
        )
        answers: list[dict] = []
        # A poll that waits at most 20 s on the second process…
        poller = threading.Thread(
            target=lambda: answers.append(
                polls.get("/jobs", params={**machine.me, "wait": 20}).json()
            )
        )
        before = gauge(second, "edgepcap_wakeup_messages_total")
        poller.start()
        # …and a capture of its machine made on the first.
        with first.client(account) as c:
            r = c.post("/pcaps", json=full(conf, colo_name="ord07", time_limit=30))
            assert r.status_code == 200, r.text
            pcap = r.json()["result"]
        poller.join(30)
        assert not poller.is_alive()
        [answer] = answers
        assert [job["id"] for job in answer["jobs"]] == [pcap["id"]]
        # The second process heard it from the first, over NOTIFY.
        assert gauge(second, "edgepcap_wakeup_messages_total") > before
        with first.client(account) as c:
            c.put(f"/pcaps/{pcap['id']}/stop")

        # Its listening connections killed: each process listens again, and hears what is
        # said from then on (what was said while it was away is lost).
        with psycopg.connect(changes.libpq_url(first.server.database), autocommit=True) as db:
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN edgepcap_wakeup%%'"
            )
            heard = gauge(second, "edgepcap_wakeup_messages_total")

            def hears_again() -> bool:
                db.execute("SELECT pg_notify(%s, %s)", (changes.CHANNEL, "test|*"))
                return gauge(second, "edgepcap_wakeup_messages_total") > heard

            wait_for(hears_again, 20, "the second process to listen again", interval=0.5)
        assert gauge(second, "edgepcap_wakeup_listening") == 1
        polls.close()
    finally:
        machine.stop()


def test_a_revoked_agent_key_is_refused_at_once_by_every_process(pair):
    """Both processes keep the key once verified; `agents revoke-key` (another process,
    writing the database) is heard by both, and the key's next request is refused."""
    for stack in pair:
        wait_for(lambda s=stack: gauge(s, "edgepcap_wakeup_listening") == 1, 20, "listening")
    key = mint_key(pair[0], "ORD", "ord08")
    beat = {"machine": "ord08", "boot_id": new_boot()}
    clients = [agent_client(stack, key["agent_key"]) for stack in pair]
    try:
        r = clients[0].post("/register", json={"colo": "ORD", **beat})
        assert r.status_code == 200, r.text
        for _ in range(2):  # the second time from what each process keeps
            assert [c.post("/heartbeat", json=beat).status_code for c in clients] == [200, 200]
        pair[1].cli("agents", "revoke-key", key["id"])
        for c in clients:
            r = c.post("/heartbeat", json=beat)
            assert r.status_code == 401, r.text
            assert f"agent key {key['id']} has been revoked" in r.text
    finally:
        for c in clients:
            c.close()


def test_verified_keys_are_kept_until_a_revocation_is_announced(postgres, tmp_path):
    """What AgentKeys keeps is what it answers from, until `announce_keys_revoked` is
    heard; while the listener is away nothing is kept."""
    db = open_database(tmp_path, postgres.new_database())
    channel = changes.Channel(db.url, lambda machines: None)
    keys = AgentKeys(db, channel)
    channel.on_keys = keys.forget
    try:
        with db.session() as s:
            row, key = fleet.create_agent_key(s, "ORD", "ord09")
        channel.start()
        wait_for(lambda: channel.listening, 20, "the listener")
        assert keys.binding(key).revoked is None
        with db.session() as s:  # revoked behind its back: no announcement
            s.execute(update(AgentKey).where(AgentKey.id == row.id).values(revoked=utcnow()))
        assert keys.binding(key).revoked is None  # kept
        with db.session() as s:
            changes.announce_keys_revoked(s)
        wait_for(lambda: keys.binding(key).revoked is not None, 20, "the announcement heard")
        with db.session() as s:
            s.execute(update(AgentKey).where(AgentKey.id == row.id).values(revoked=None))
        assert keys.binding(key).revoked is None  # a valid key: kept again
        channel.stop()  # deaf: every request reads the key
        with db.session() as s:
            s.execute(update(AgentKey).where(AgentKey.id == row.id).values(revoked=utcnow()))
        assert keys.binding(key).revoked is not None
    finally:
        channel.stop()
        db.close()
