"""Authentication and tenancy: every endpoint refuses missing, wrong and foreign credentials."""

from __future__ import annotations

import httpx
import pytest

from tests.support.api import SIMPLE, error_of, full

ZERO = "0" * 32


@pytest.fixture(scope="module")
def two_tenants(stack):
    """Account A with a sample, a full capture and a validated bucket; account B with none."""
    a = stack.account()
    b = stack.account()
    conf = stack.validated_bucket(a)
    with stack.client(a) as c:
        sample = c.post("/pcaps", json=SIMPLE).json()["result"]
        capture = c.post("/pcaps", json=full(conf)).json()["result"]
        bucket = c.get("/pcaps/ownership").json()["result"][0]
    return a, b, {"sample": sample, "full": capture, "bucket": bucket, "conf": conf}


def endpoints(account_id: str, things: dict) -> list[tuple[str, str, dict | None]]:
    base = f"/accounts/{account_id}"
    pcap = things["full"]["id"]
    return [
        ("POST", f"{base}/pcaps", SIMPLE),
        ("GET", f"{base}/pcaps", None),
        ("GET", f"{base}/pcaps/{pcap}", None),
        ("PUT", f"{base}/pcaps/{pcap}/stop", None),
        ("GET", f"{base}/pcaps/{things['sample']['id']}/download", None),
        ("GET", f"{base}/pcaps/{things['sample']['id']}/preview", None),
        ("GET", f"{base}/pcaps/colos", None),
        ("POST", f"{base}/pcaps/ownership", {"destination_conf": things["conf"]}),
        ("GET", f"{base}/pcaps/ownership", None),
        (
            "POST",
            f"{base}/pcaps/ownership/validate",
            {"destination_conf": things["conf"], "ownership_challenge": "x"},
        ),
        ("DELETE", f"{base}/pcaps/ownership/{things['bucket']['id']}", None),
    ]


def test_every_endpoint_with_another_accounts_credentials_is_403(stack, two_tenants):
    a, b, things = two_tenants
    secrets_of_a = [
        a.id,
        things["full"]["id"],
        things["sample"]["id"],
        things["bucket"]["id"],
        things["conf"],
    ]
    for keys in (False, True):
        with stack.client(b, keys=keys) as c:
            c.base_url = httpx.URL(stack.api)
            for method, path, body in endpoints(a.id, things):
                r = c.request(method, path, json=body)
                assert r.status_code == 403, (method, path, r.text)
                assert error_of(r)[0] == 9109
                for secret in secrets_of_a[1:]:
                    assert secret not in r.text
            # A made-up account id gets the same answer as a real one.
            for method, path, body in endpoints(ZERO, things):
                r = c.request(method, path, json=body)
                assert r.status_code == 403, (method, path, r.text)
    # Nothing of A changed.
    with stack.client(a) as c:
        assert c.get(f"/pcaps/{things['full']['id']}").json()["result"]["status"] == "pending"
        assert c.get("/pcaps/ownership").json()["result"][0]["status"] == "success"


def test_odd_ids_in_the_path_are_judged_alike_on_every_endpoint(stack, two_tenants):
    a, b, things = two_tenants
    with stack.client(b) as c:
        c.base_url = httpx.URL(stack.api)
        # Not an account id at all, NUL included: the same 403 as for a real account.
        for account in ("%00", "not-hex", "Z" * 32):
            for method, path, body in endpoints(account, things):
                r = c.request(method, path, json=body)
                assert r.status_code == 403, (method, path, r.text)
    # An over-long capture id without credentials: credentials are judged first, everywhere.
    long_id = "a" * 65
    for method, path in (
        ("GET", f"/accounts/{a.id}/pcaps/{long_id}"),
        ("GET", f"/accounts/{a.id}/pcaps/{long_id}/preview"),
        ("PUT", f"/accounts/{a.id}/pcaps/{long_id}/stop"),
    ):
        r = httpx.request(method, stack.api + path, timeout=30)
        assert r.status_code == 401, (method, path, r.text)


def test_another_accounts_ids_under_your_own_account_look_missing(stack, two_tenants):
    _a, b, things = two_tenants
    with stack.client(b) as c:
        for pcap_id in (things["full"]["id"], things["sample"]["id"]):
            for suffix in ("", "/download"):
                r = c.get(f"/pcaps/{pcap_id}{suffix}")
                missing = c.get(f"/pcaps/{ZERO}{suffix}")
                # Exactly the answer for an id that exists nowhere.
                assert r.status_code == missing.status_code == 404
                assert r.text.replace(pcap_id, ZERO) == missing.text
        assert c.put(f"/pcaps/{things['full']['id']}/stop").status_code == 404
        assert c.delete(f"/pcaps/ownership/{things['bucket']['id']}").status_code == 404
        assert c.get("/pcaps").json()["result"] == []
        assert c.get("/pcaps/ownership").json()["result"] == []
        # A's validated bucket does not count as B's.
        r = c.post("/pcaps", json=full(things["conf"]))
        assert r.status_code == 400 and error_of(r)[0] == 1301


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer ept_not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-Auth-Email": "nobody@example.com", "X-Auth-Key": "nope"},
        {"X-Auth-Email": "only-email@example.com"},
    ],
)
def test_missing_or_invalid_credentials_are_401(stack, two_tenants, headers):
    a, _b, things = two_tenants
    with httpx.Client(base_url=stack.api, headers=headers) as c:
        for method, path, body in endpoints(a.id, things):
            r = c.request(method, path, json=body)
            assert r.status_code == 401, (method, path, r.text)
            assert error_of(r)[0] == 10000


def test_right_email_wrong_key_is_401(stack, two_tenants):
    a, _b, _things = two_tenants
    with httpx.Client(
        base_url=stack.api, headers={"X-Auth-Email": a.email, "X-Auth-Key": a.api_token}
    ) as c:
        r = c.get(f"/accounts/{a.id}/pcaps")
        assert r.status_code == 401


def test_rotated_credentials_replace_the_old_ones(stack):
    acct = stack.account()
    with stack.client(acct) as c:
        assert c.get("/pcaps").status_code == 200
    out = stack.cli("accounts", "rotate-token", acct.id)
    import json

    fresh = json.loads(out.stdout)
    assert fresh["api_token"] != acct.api_token and fresh["api_key"] != acct.api_key
    for keys in (False, True):
        with stack.client(acct, keys=keys) as c:
            assert c.get("/pcaps").status_code == 401
    acct.api_token, acct.api_key = fresh["api_token"], fresh["api_key"]
    for keys in (False, True):
        with stack.client(acct, keys=keys) as c:
            assert c.get("/pcaps").status_code == 200
