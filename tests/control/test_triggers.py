"""The traffic view and triggers in the lab: the real kernel samples 1 in 100 of traffic sent
at a known rate; the view estimates it within the binomial bound, and a trigger armed below
that rate fires once, its capture holds the matching packets, and the other account sees
none of it."""

from __future__ import annotations

import datetime as dt
import threading
import time

from edgepcap.control import triggers
from edgepcap.control.accounts import create_account
from edgepcap.control.credentials import new_id
from edgepcap.control.db import open_database
from edgepcap.control.models import Trigger, TriggerEvent, utcnow
from tests.support.captures import captured
from tests.support.processes import wait_for
from tests.support.statistics import binomial_interval


def traffic(lab, tenant="customer", **params):
    with lab.client(tenant) as c:
        r = c.get("/traffic", params=params)
        assert r.status_code == 200, r.text
        return r.json()["result"]


def test_traffic_sent_at_a_known_rate_shows_within_the_binomial_bound(lab):
    since = int(time.time())
    # Two flows, one through each machine, 3 000 datagrams each at 1 000 packets/s.
    flows = lab.send(3000, rate=1000)
    lab.samples_settled()
    # Whole steps only (the last one ends on a multiple of the step, a moment ahead): a
    # step cut short by `until` is divided by the part of it the window covers.
    until = -(-int(time.time()) // 10) * 10
    window = {"since": since, "until": until, "step": 10}
    total = 0
    for flow in flows:
        assert flow["packets"] == 3000
        view = traffic(lab, **window, group_by="machine", source_port=flow["sport"])
        [series] = view["series"]
        assert series["key"] == flow["machine"]
        low, high = binomial_interval(flow["packets"])
        assert low <= series["samples"] <= high, (flow, series["samples"], (low, high))
        assert series["packets"] == series["samples"] * view["sample_rate"]
        # The points add up to the total: estimated packets/s times the step.
        assert sum(p[1] for p in series["points"]) * view["step"] == series["packets"]
        total += series["samples"]
    [colo] = traffic(lab, **window, group_by="colo", protocol=17)["series"]
    assert colo["key"] == lab["colo"] and colo["samples"] == total
    # The other account sent nothing and sees nothing of the customer's traffic.
    assert traffic(lab, "other", since=since, group_by="destination_address")["series"] == []


def test_a_trigger_fires_once_and_its_capture_holds_the_matching_packets(lab):
    host = lab["addresses"]["customer"]
    flt = {"protocol": 17, "destination_port": 5001}
    body = {
        "filter_v1": flt,
        # Below the 2 000 packets/s sent: reached about 2.5 s into the flow.
        "threshold_pps": 500,
        "window": 10,
        "cooldown": 300,
        "capture": {
            "system": "magic-transit",
            "type": "full",
            "colo_name": lab["colo"],
            "destination_conf": lab["destination_conf"],
            "time_limit": 3,
        },
    }
    with lab.client() as c:
        r = c.post("/pcaps/triggers", json=body)
        assert r.status_code == 200, r.text
        trigger = r.json()["result"]
    sent: list = []
    # To the first host only (through ord01): 8 s, over the threshold long after the
    # capture (3 s) ends.
    sender = threading.Thread(target=lambda: sent.extend(lab.send(16000, rate=2000, hosts=1)))
    started = time.monotonic()
    sender.start()
    try:

        def fired():
            with lab.client() as c:
                return c.get(f"/pcaps/triggers/{trigger['id']}").json()["result"]["fired"]

        [fire] = wait_for(fired, 20, "the trigger to fire")
        pcap = lab.wait_end(fire["pcap_id"], timeout=30)
        print(f"traffic start to fired: {time.monotonic() - started:.1f} s")
    finally:
        sender.join(60)
    lab.samples_settled()
    assert fire["estimated_pps"] >= 500
    assert pcap["status"] == "success" and pcap["trigger_id"] == trigger["id"]
    assert pcap["filter_v1"] == flt and pcap["packets_captured"] > 0
    # It holds the flow's packets, and nothing the filter does not match.
    got = captured(lab, pcap["id"])
    assert got and all(k[2] == 17 and k[4] == 5001 and k[1] == host for k in got), got
    assert sum(got.values()) == pcap["packets_captured"]
    with lab.client() as c:
        r = c.get(f"/pcaps/{pcap['id']}/download", params={"format": "pcapng"})
        assert f"started by trigger {trigger['id']}".encode() in r.content
        # The flow went on over the threshold after the capture: no second fire in cooldown.
        now = c.get(f"/pcaps/triggers/{trigger['id']}").json()["result"]
        assert len(now["fired"]) == 1 and now["status"] == "cooling_down"
        assert [p["id"] for p in c.get("/pcaps").json()["result"] if p["type"] == "full"] == [
            pcap["id"]
        ]
        c.delete(f"/pcaps/triggers/{trigger['id']}")
    assert sent and sent[0]["packets"] == 16000
    with lab.client("other") as other:
        assert other.get("/pcaps/triggers").json()["result"] == []
        assert other.get(f"/pcaps/{pcap['id']}").status_code == 404


def test_a_trigger_keeps_its_newest_events_only(tmp_path):
    db = open_database(tmp_path / "data", None)
    try:
        with db.session() as s:
            account, _creds = create_account(s, "a", ["203.0.113.0/24"])
            ids = []
            for _name in ("busy", "quiet"):
                t = Trigger(
                    id=new_id(),
                    account_id=account.id,
                    filter_v1={},
                    threshold_pps=1,
                    window=10,
                    cooldown=0,
                    expires=utcnow() + dt.timedelta(hours=1),
                    created=utcnow(),
                    capture={},
                )
                s.add(t)
                ids.append(t.id)
            s.flush()
            busy, quiet = ids
            triggers._record(s, TriggerEvent(trigger_id=quiet, at=utcnow(), estimated_pps=1))
            # Interleaved with the other trigger's: each keeps its own newest.
            for i in range(triggers.MAX_EVENTS + 7):
                event = TriggerEvent(trigger_id=busy, at=utcnow(), estimated_pps=i, message="x")
                triggers._record(s, event)
                triggers._record(s, TriggerEvent(trigger_id=quiet, at=utcnow(), estimated_pps=i))
        with db.session() as s:
            kept = [e.estimated_pps for e in triggers.events(s, busy)]
            assert kept == list(range(7, triggers.MAX_EVENTS + 7))
            assert len(triggers.events(s, quiet)) == triggers.MAX_EVENTS
    finally:
        db.close()
