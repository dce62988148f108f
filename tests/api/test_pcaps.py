"""The PCAPs endpoints over HTTP against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.support.api import SIMPLE, error_of, full

# The list test makes 52 full captures on one account back to back: no full-capture rate
# here (tests/api/test_retention.py tests the rate).
SERVER_ENV = {"EDGEPCAP_FULL_CAPTURE_RATE": "0"}
FIELDS = {
    "id",
    "submitted",
    "filter_v1",
    "time_limit",
    "packet_limit",
    "byte_limit",
    "colo_name",
    "destination_conf",
    "status",
    "trigger_id",
    "type",
    "system",
    "packets_captured",
    "error_message",
    "stop_requested",
    "offset_time",
    "machines",
}
SUBMITTED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_create_sample_then_get_and_list(stack):
    acct = stack.account()
    body = {
        **SIMPLE,
        "filter_v1": {
            "source_address": "198.51.100.7",
            "source_port": 123,
            "destination_address": acct.host(2),
            "destination_port": 80,
            "protocol": 6,
        },
    }
    with stack.client(acct) as c:
        r = c.post("/pcaps", json=body)
        assert r.status_code == 200, r.text
        envelope = r.json()
        assert envelope["success"] is True and envelope["errors"] == []
        assert envelope["messages"] == []
        pcap = envelope["result"]
        assert set(pcap) == FIELDS
        assert re.fullmatch(r"[0-9a-f]{32}", pcap["id"])
        assert SUBMITTED.match(pcap["submitted"])
        # Answered from history at once; this server has no samples for it.
        assert pcap["status"] == "success"
        assert "no sampled packets" in pcap["error_message"]
        assert pcap["type"] == "simple" and pcap["system"] == "magic-transit"
        assert pcap["filter_v1"] == body["filter_v1"]
        assert pcap["time_limit"] == 60 and pcap["packet_limit"] == 100
        assert pcap["packets_captured"] == 0

        got = c.get(f"/pcaps/{pcap['id']}").json()["result"]
        assert got == pcap
        listed = c.get("/pcaps").json()["result"]
        assert [p["id"] for p in listed] == [pcap["id"]]


def test_floats_from_the_sdk_are_accepted_when_integral(stack):
    acct = stack.account()
    with stack.client(acct) as c:
        body = {
            **SIMPLE,
            "time_limit": 30.0,
            "packet_limit": 5.0,
            "filter_v1": {"protocol": 17.0, "destination_port": 53.0},
        }
        r = c.post("/pcaps", json=body)
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result["time_limit"] == 30 and result["packet_limit"] == 5
        assert result["filter_v1"] == {"protocol": 17, "destination_port": 53}


NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({**SIMPLE, "system": "magic-wan"}, 1003, "`system` must be 'magic-transit'"),
        ({**SIMPLE, "type": "sampled"}, 1003, "`type` must be 'simple' or 'full'"),
        ({k: v for k, v in SIMPLE.items() if k != "time_limit"}, 1002, "`time_limit` is required"),
        ({k: v for k, v in SIMPLE.items() if k != "system"}, 1002, "`system` is required"),
        ({**SIMPLE, "time_limit": 0}, 1003, "between 1 and 300 seconds"),
        ({**SIMPLE, "time_limit": 301}, 1003, "between 1 and 300 seconds"),
        ({**SIMPLE, "time_limit": 30.5}, 1003, "whole number"),
        ({**SIMPLE, "time_limit": "30"}, 1003, "JSON number"),
        ({**SIMPLE, "time_limit": True}, 1003, "not true/false"),
        ({**SIMPLE, "packet_limit": 0}, 1003, "between 1 and 10000 packets"),
        ({**SIMPLE, "packet_limit": 10001}, 1003, "between 1 and 10000 packets"),
        ({**SIMPLE, "packet_limit": -5}, 1003, "between 1 and 10000 packets"),
        (
            {k: v for k, v in SIMPLE.items() if k != "packet_limit"},
            1003,
            "`packet_limit` is required for sample captures",
        ),
        ({**SIMPLE, "byte_limit": 100}, 1003, "`byte_limit` applies only to full captures"),
        ({**SIMPLE, "colo_name": "ORD"}, 1003, "`colo_name` applies only to full captures"),
        ({**SIMPLE, "bogus": 1}, 1001, "unknown field `bogus`"),
        ({**SIMPLE, "filter_v1": {"src": "1.2.3.4"}}, 1001, "unknown field `filter_v1.src`"),
        ({**SIMPLE, "filter_v1": {"source_address": "1.2.3.4/32"}}, 1003, "is a prefix"),
        ({**SIMPLE, "filter_v1": {"source_address": "1.2.3"}}, 1003, "not an IPv4 or IPv6"),
        ({**SIMPLE, "filter_v1": {"source_address": "::ffff:203.0.113.5"}}, 1003, "IPv4-mapped"),
        ({**SIMPLE, "filter_v1": {"source_port": 65536}}, 1003, "between 0 and 65535"),
        ({**SIMPLE, "filter_v1": {"destination_port": -1}}, 1003, "between 0 and 65535"),
        ({**SIMPLE, "filter_v1": {"protocol": 256}}, 1003, "between 0 and 255"),
        ({**SIMPLE, "filter_v1": {"protocol": 6.5}}, 1003, "whole number"),
        (
            {**SIMPLE, "offset_time": (NOW + dt.timedelta(hours=1)).isoformat()},
            1003,
            "in the future",
        ),
        (
            {**SIMPLE, "offset_time": (NOW - dt.timedelta(hours=25)).isoformat()},
            1003,
            "older than 24 h",
        ),
        ({**SIMPLE, "offset_time": "2026-01-01T00:00:00"}, 1003, "timezone"),
        ({**SIMPLE, "offset_time": "yesterday"}, 1003, "offset_time"),
        (
            {
                **SIMPLE,
                "filter_v1": {
                    "source_address": "198.51.100.1",
                    "destination_address": "198.51.100.2",
                },
            },
            1003,
            "could never match",
        ),
        (
            {
                "system": "magic-transit",
                "type": "full",
                "time_limit": 60,
                "destination_conf": "file:///x",
            },
            1003,
            "`colo_name` is required",
        ),
        (
            {"system": "magic-transit", "type": "full", "time_limit": 60, "colo_name": "ORD"},
            1003,
            "`destination_conf` is required",
        ),
        (
            {
                "system": "magic-transit",
                "type": "full",
                "time_limit": 86401,
                "colo_name": "ORD",
                "destination_conf": "file:///x",
            },
            1003,
            "between 1 and 86400 seconds",
        ),
        (
            {
                "system": "magic-transit",
                "type": "full",
                "time_limit": 60,
                "colo_name": "ORD",
                "destination_conf": "file:///x",
                "byte_limit": 1_000_000_001,
            },
            1003,
            "between 1 and 1000000000 bytes",
        ),
        (
            {
                "system": "magic-transit",
                "type": "full",
                "time_limit": 60,
                "colo_name": "ORD",
                "colo": "SJC",
                "destination_conf": "file:///x",
            },
            1003,
            "disagree",
        ),
        (
            {
                "system": "magic-transit",
                "type": "full",
                "time_limit": 60,
                "colo_name": "ORD",
                "destination_conf": "file:///x",
                "offset_time": NOW.isoformat(),
            },
            1003,
            "`offset_time` applies only to sample captures",
        ),
        (
            {
                "system": "magic-transit",
                "type": "full",
                "time_limit": 60,
                "colo_name": "ORD",
                "destination_conf": "file:///not/registered",
            },
            1301,
            "not a bucket of this account",
        ),
    ],
)
def test_create_refuses_bad_input_with_a_clear_message(stack, body, code, needle):
    acct = stack.account()
    with stack.client(acct) as c:
        r = c.post("/pcaps", json=body)
        assert r.status_code == 400, r.text
        got_code, message = error_of(r)
        assert needle in message
        assert got_code == code, message
        # A refused request does not use up the account's sample slot.
        assert c.post("/pcaps", json=SIMPLE).status_code == 200


def test_body_must_be_a_json_object(stack):
    acct = stack.account()
    with stack.client(acct) as c:
        r = c.post("/pcaps", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and error_of(r)[0] == 1000
        r = c.post("/pcaps", json=[1, 2])
        assert r.status_code == 400 and error_of(r)[0] == 1000
        r = c.post("/pcaps", content=b"a=b", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and "application/json" in error_of(r)[1]
        r = c.post(
            "/pcaps",
            content=b"{" + b" " * 70_000 + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 413 and error_of(r)[0] == 1005


def test_one_sample_per_minute(stack):
    acct = stack.account()
    with stack.client(acct) as c:
        assert c.post("/pcaps", json=SIMPLE).status_code == 200
        r = c.post("/pcaps", json=SIMPLE)
        assert r.status_code == 429
        code, message = error_of(r)
        assert code == 1200 and "per minute" in message
        assert 55 <= int(r.headers["Retry-After"]) <= 60
    # The limit is per account: another account is not held back.
    with stack.client(stack.account()) as c:
        assert c.post("/pcaps", json=SIMPLE).status_code == 200


def test_full_capture_needs_a_validated_bucket(stack):
    acct = stack.account()
    directory = stack.server.data_dir / "buckets" / f"unvalidated-{acct.id}"
    directory.mkdir(parents=True)
    conf = f"file://{directory}"
    with stack.client(acct) as c:
        assert c.post("/pcaps/ownership", json={"destination_conf": conf}).status_code == 200
        r = c.post("/pcaps", json=full(conf))
        assert r.status_code == 400
        code, message = error_of(r)
        assert code == 1301 and "not validated yet" in message


def test_full_capture_lifecycle_and_single_active_limit(stack):
    acct = stack.account()
    conf = stack.validated_bucket(acct)
    with stack.client(acct) as c:
        r = c.post(
            "/pcaps",
            json=full(conf, packet_limit=1000, byte_limit=10_000_000, filter_v1={"protocol": 17}),
        )
        assert r.status_code == 200, r.text
        first = r.json()["result"]
        assert first["status"] == "pending" and first["colo_name"] == "ORD"
        assert first["destination_conf"] == conf and first["byte_limit"] == 10_000_000

        r = c.post("/pcaps", json=full(conf))
        assert r.status_code == 429
        code, message = error_of(r)
        assert code == 1201 and first["id"] in message
        assert 1 <= int(r.headers["Retry-After"]) <= 300

        r = c.get(f"/pcaps/{first['id']}/download")
        assert r.status_code == 409 and "pending" in error_of(r)[1]

        r = c.put(f"/pcaps/{first['id']}/stop")
        assert r.status_code == 200, r.text
        stopped = r.json()["result"]
        assert stopped["status"] == "success" and SUBMITTED.match(stopped["stop_requested"])
        assert stopped["error_message"]  # says why there are no packets

        r = c.put(f"/pcaps/{first['id']}/stop")
        assert r.status_code == 409 and "already ended" in error_of(r)[1]

        # The `colo` alias of the documented curl example works too.
        r = c.post("/pcaps", json={**full(conf), "colo": "ORD", "colo_name": None})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["colo_name"] == "ORD"


def test_unreadable_files_in_the_bucket_give_502_naming_the_cause(stack):
    acct = stack.account()
    conf = stack.validated_bucket(acct)
    root = Path(conf.removeprefix("file://"))
    with stack.client(acct) as c:

        def ended() -> str:
            pcap_id = c.post("/pcaps", json=full(conf)).json()["result"]["id"]
            stack.machine.finish(pcap_id)  # ord01 reports its file written
            assert c.get(f"/pcaps/{pcap_id}").json()["result"]["status"] == "success"
            return pcap_id

        def answers(pcap_id: str) -> list[httpx.Response]:
            return [c.get(f"/pcaps/{pcap_id}/{what}") for what in ("preview", "download")]

        def machine_file(machine: str, pcap_id: str, data: bytes) -> None:
            (root / machine).mkdir(exist_ok=True)
            (root / machine / f"pcap_{pcap_id}.pcap").write_bytes(data)

        pcap_id = ended()
        machine_file("ord01", pcap_id, b"this is not a capture file")
        for r in answers(pcap_id):
            assert r.status_code == 502, r.text
            code, message = error_of(r)
            assert code == 1302 and f"ord01/pcap_{pcap_id}.pcap: not a PCAP file" in message

        # Refused before the download starts, not halfway through it.

        pcap_id = ended()
        shutil.rmtree(root)
        for r in answers(pcap_id):
            assert r.status_code == 502, r.text
            code, message = error_of(r)
            assert code == 1302 and "does not exist" in message


def test_stop_applies_to_full_captures_only(stack):
    acct = stack.account()
    with stack.client(acct) as c:
        pcap = c.post("/pcaps", json=SIMPLE).json()["result"]
        r = c.put(f"/pcaps/{pcap['id']}/stop")
        assert r.status_code == 409 and "only full captures" in error_of(r)[1]
        r = c.get(f"/pcaps/{pcap['id']}/download")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/vnd.tcpdump.pcap"
        assert len(r.content) == 24  # a valid, empty PCAP: nothing was sampled


def test_list_holds_the_50_newest_newest_first(stack):
    acct = stack.account()
    conf = stack.validated_bucket(acct)
    ids = []
    with stack.client(acct) as c:
        for _ in range(52):
            r = c.post("/pcaps", json=full(conf, time_limit=10))
            assert r.status_code == 200, r.text
            ids.append(r.json()["result"]["id"])
            assert c.put(f"/pcaps/{ids[-1]}/stop").status_code == 200
        listed = [p["id"] for p in c.get("/pcaps").json()["result"]]
    assert listed == list(reversed(ids))[:50]


def test_unknown_and_malformed_ids(stack):
    acct = stack.account()
    with stack.client(acct) as c:
        r = c.get("/pcaps/" + "0" * 32)
        assert r.status_code == 404 and error_of(r)[0] == 1100
        for bad in ("xyz", "0" * 31, "A" * 32, "0" * 33):
            r = c.get(f"/pcaps/{bad}")
            assert r.status_code == 400, bad
            assert error_of(r)[0] == 1006
        r = c.put("/pcaps/" + "1" * 32 + "/stop")
        assert r.status_code == 404


def test_openapi_document_is_served(stack):
    r = httpx.get(stack.api + "/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in (
        "/client/v4/accounts/{account_id}/pcaps",
        "/client/v4/accounts/{account_id}/pcaps/{pcap_id}",
        "/client/v4/accounts/{account_id}/pcaps/{pcap_id}/stop",
        "/client/v4/accounts/{account_id}/pcaps/{pcap_id}/download",
        "/client/v4/accounts/{account_id}/pcaps/ownership",
        "/client/v4/accounts/{account_id}/pcaps/ownership/validate",
        "/client/v4/accounts/{account_id}/pcaps/ownership/{ownership_id}",
    ):
        assert path in paths
