"""Capture triggers over HTTP: armed, fired once by sampled traffic, quiet in cooldown,
refusals recorded, kept to their account."""

from __future__ import annotations

import time

from tests.support.api import SIMPLE, error_of
from tests.support.packets import udp
from tests.support.samples import owned_by, ship

SERVER_ENV = {"EDGEPCAP_SAMPLE_INTERVAL": "0"}


def datagrams(account, n: int, dport: int = 5555) -> object:
    """`n` sampled UDP datagrams to the account's first address, stamped now."""
    now = time.time_ns()
    snaps = [udp("198.51.100.7", account.host(1), 40000 + i % 1000, dport) for i in range(n)]
    return owned_by(account.id, snaps, [now - 1000 * i for i in range(n)])


def arm(c, conf: str, **extra) -> dict:
    body = {
        "filter_v1": {"protocol": 17, "destination_port": 5555},
        "threshold_pps": 1000,
        "window": 10,
        "cooldown": 300,
        "capture": {
            "system": "magic-transit",
            "type": "full",
            "colo_name": "ORD",
            "destination_conf": conf,
            "time_limit": 60,
        },
        **extra,
    }
    r = c.post("/pcaps/triggers", json=body)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def test_a_trigger_fires_once_at_its_threshold_and_is_the_accounts_alone(stack):
    a, b = stack.account(), stack.account()
    conf = stack.validated_bucket(a)
    with stack.client(a) as c, stack.client(b) as other:
        trigger = arm(c, conf)
        assert trigger["status"] == "armed" and trigger["fired"] == [] and trigger["refused"] == []
        assert trigger["capture"]["filter_v1"] is None  # the trigger's, when it fires
        # 50 matching samples in the window: 500 packets/s estimated, under 1000.
        ship(stack.machine, datagrams(a, 50))
        # Other traffic of A's, and B's traffic that would match the filter, do not count.
        ship(stack.machine, datagrams(a, 500, dport=53))
        ship(stack.machine, datagrams(b, 500))
        got = c.get(f"/pcaps/triggers/{trigger['id']}").json()["result"]
        assert got["status"] == "armed" and got["fired"] == []
        assert c.get("/pcaps").json()["result"] == []

        # 100 more: 150 samples, 1500 packets/s.
        ship(stack.machine, datagrams(a, 100))
        got = c.get(f"/pcaps/triggers/{trigger['id']}").json()["result"]
        assert got["status"] == "cooling_down", got
        [fire] = got["fired"]
        assert fire["estimated_pps"] == 1500
        pcap = c.get(f"/pcaps/{fire['pcap_id']}").json()["result"]
        assert pcap["type"] == "full" and pcap["trigger_id"] == trigger["id"]
        assert pcap["filter_v1"] == {"protocol": 17, "destination_port": 5555}
        assert pcap["colo_name"] == "ORD" and pcap["destination_conf"] == conf
        assert pcap["status"] in ("pending", "running")

        # More of the same during the cooldown: no second capture.
        ship(stack.machine, datagrams(a, 300))
        got = c.get(f"/pcaps/triggers/{trigger['id']}").json()["result"]
        assert len(got["fired"]) == 1 and got["refused"] == []
        assert [p["id"] for p in c.get("/pcaps").json()["result"]] == [fire["pcap_id"]]

        # B sees none of it.
        assert other.get("/pcaps/triggers").json()["result"] == []
        for method in ("GET", "DELETE"):
            r = other.request(method, f"/pcaps/triggers/{trigger['id']}")
            assert r.status_code == 404, r.text
        r = other.get(f"/pcaps/{fire['pcap_id']}")
        assert r.status_code == 404

        # A second trigger that reaches its threshold while the first one's capture runs:
        # refused (one full capture at a time), and recorded, not silent.
        second = arm(c, conf, filter_v1={"protocol": 17}, threshold_pps=100)
        ship(stack.machine, datagrams(a, 20))
        got = c.get(f"/pcaps/triggers/{second['id']}").json()["result"]
        assert got["fired"] == [] and got["status"] == "armed"
        [refusal] = got["refused"]
        assert "already has a pending or running full capture" in refusal["message"]
        assert refusal["estimated_pps"] >= 100

        listed = [t["id"] for t in c.get("/pcaps/triggers").json()["result"]]
        assert listed == [trigger["id"], second["id"]]
        assert c.delete(f"/pcaps/triggers/{second['id']}").json()["result"] == {"id": second["id"]}
        assert c.get(f"/pcaps/triggers/{second['id']}").status_code == 404
        c.put(f"/pcaps/{fire['pcap_id']}/stop")


def test_triggers_refuse_what_could_never_fire(stack):
    a = stack.account()
    conf = stack.validated_bucket(a)
    capture = {
        "system": "magic-transit",
        "type": "full",
        "colo_name": "ORD",
        "destination_conf": conf,
        "time_limit": 60,
    }
    good = {"threshold_pps": 1000, "capture": capture}
    cases = [
        ({"capture": capture}, "threshold_pps"),
        ({**good, "threshold_pps": 0}, "`threshold_pps` must be between 1"),
        ({**good, "window": 5}, "`window` must be between 10 and 300 seconds"),
        ({**good, "cooldown": -1}, "`cooldown` must be between 0"),
        ({**good, "expires": "2020-01-01T00:00:00Z"}, "`expires` is in the past"),
        ({**good, "expires": "2099-01-01T00:00:00Z"}, "more than 30 days ahead"),
        ({**good, "capture": {**SIMPLE}}, "`capture.type` must be full"),
        ({**good, "capture": {**capture, "colo_name": None}}, "`colo_name` is required"),
        ({**good, "capture": {**capture, "colo_name": "NOPE"}}, "NOPE"),
        ({**good, "capture": {**capture, "destination_conf": "file:///tmp/x"}}, "not a bucket"),
        ({**good, "filter_v1": {"source_address": "10.0.0.0/8"}}, "is a prefix"),
        ({**good, "surprise": 1}, "surprise"),
    ]
    with stack.client(a) as c:
        for body, message in cases:
            r = c.post("/pcaps/triggers", json=body)
            assert r.status_code == 400, (body, r.text)
            _code, text = error_of(r)
            assert message in text, (body, text)
        assert c.get("/pcaps/triggers").json()["result"] == []
        r = c.get("/pcaps/triggers/nothex")
        assert r.status_code == 400 and "`trigger_id`" in error_of(r)[1]
        assert c.get(f"/pcaps/triggers/{'0' * 32}").status_code == 404
