"""Nasty input: every one of these ends in a clear 4xx, never a 5xx, never a rule."""

from __future__ import annotations

import json

import pytest

from tests.support.api import SIMPLE, error_of

RAW = {
    "duplicate keys": (
        b'{"system":"magic-transit","type":"simple","type":"full","time_limit":5,"packet_limit":5}',
        400,
        "duplicate key `type`",
    ),
    "deep nesting": (b"[" * 20_000 + b"]" * 20_000, 400, "nests deeper than 32"),
    "not UTF-8": (b'{"system":"magic-transit","type":"\xff\xfe"}', 400, "not UTF-8"),
    "NaN": (
        b'{"system":"magic-transit","type":"simple","time_limit":NaN,"packet_limit":5}',
        400,
        "whole number",
    ),
    "infinity": (
        b'{"system":"magic-transit","type":"simple","time_limit":1e999,"packet_limit":5}',
        400,
        "whole number",
    ),
    "truncated": (b'{"system":"magic-transit","type":', 400, "not valid JSON"),
    "a string": (b'"simple"', 400, "JSON object"),
    "null": (b"null", 400, ""),
}


@pytest.mark.parametrize("case", list(RAW))
def test_malformed_bodies_are_refused_clearly(stack, case):
    body, status, needle = RAW[case]
    acct = stack.account()
    with stack.client(acct) as c:
        r = c.post("/pcaps", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        _code, message = error_of(r)
        assert needle in message
        # The account's sample slot is still free: nothing was half-accepted.
        assert c.post("/pcaps", json=SIMPLE).status_code == 200


NUL = "OR\u0000D"


def test_nul_characters_are_refused_on_every_endpoint_with_a_body(stack):
    # PostgreSQL cannot even compare text holding one; found by tests/api/test_fuzz.py.
    acct = stack.account()
    full = {"system": "magic-transit", "type": "full", "time_limit": 60}
    cases = [
        ("/pcaps", {**full, "colo_name": NUL, "destination_conf": "file:///x"}, "colo_name"),
        ("/pcaps", {**SIMPLE, "filter_v1": {"source_address": NUL}}, "source_address"),
        ("/pcaps/ownership", {"destination_conf": NUL}, "destination_conf"),
        (
            "/pcaps/ownership/validate",
            {"destination_conf": NUL, "ownership_challenge": "x"},
            "destination_conf",
        ),
        ("/pcaps/ownership", {"destination_conf": "x", NUL: 1}, "a field name"),
    ]
    with stack.client(acct) as c:
        for path, body, where in cases:
            r = c.post(path, json=body)
            assert r.status_code == 400, (path, r.text)
            code, message = error_of(r)
            assert code == 1003 and f"{where}" in message and "NUL character" in message
        assert c.post("/pcaps", json=SIMPLE).status_code == 200  # nothing half-accepted


HOSTILE = [
    "1.2.3.4; flush ruleset",
    "} ; drop",
    "$(reboot)",
    "`id`",
    "../../etc/passwd",
    "203.0.113.1\n",
    "203.0.113.1 or 1=1",
    "\u202e203.0.113.1",
    "a" * 5000,
    "@pfx4",
    "0x7f000001",
    "203.0.113.01",
]


@pytest.mark.parametrize(
    "field",
    ["source_address", "destination_address", "source_port", "destination_port", "protocol"],
)
def test_hostile_strings_in_every_filter_field_give_400(stack, field):
    acct = stack.account()
    with stack.client(acct) as c:
        for value in HOSTILE:
            r = c.post("/pcaps", json={**SIMPLE, "filter_v1": {field: value}})
            assert r.status_code == 400, (field, value, r.text)
            assert f"filter_v1.{field}" in error_of(r)[1]


def test_port_filter_with_a_protocol_that_has_no_ports_is_refused(stack):
    acct = stack.account()
    with stack.client(acct) as c:
        r = c.post("/pcaps", json={**SIMPLE, "filter_v1": {"protocol": 1, "destination_port": 80}})
        assert r.status_code == 400 and "has no ports" in error_of(r)[1]
        r = c.post("/pcaps", json={**SIMPLE, "filter_v1": {"protocol": 17, "destination_port": 0}})
        assert r.status_code == 200  # port 0 is a port


def test_secrets_never_reach_the_server_log(stack):
    acct = stack.account()
    for keys in (False, True):
        with stack.client(acct, keys=keys) as c:
            c.get("/pcaps")
            c.post("/pcaps", json={**SIMPLE, "time_limit": 0})
            c.get("/pcaps/" + "0" * 32)
    with stack.client(acct) as c:
        c.headers["Authorization"] = "Bearer " + acct.api_token + "x"  # a near miss
        assert c.get("/pcaps").status_code == 401
    log = stack.server.logs()
    assert acct.id in log  # the log does record the requests…
    for secret in (acct.api_token, acct.api_key):
        assert secret not in log  # …but never a credential
    assert json.dumps(acct.api_token)[1:-1] not in log
