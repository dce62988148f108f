"""Customer API requests and answers as the tests make and read them."""

from __future__ import annotations

import httpx

SIMPLE = {"system": "magic-transit", "type": "simple", "time_limit": 60, "packet_limit": 100}


def full(conf: str, **extra: object) -> dict[str, object]:
    return {
        "system": "magic-transit",
        "type": "full",
        "time_limit": 300,
        "colo_name": "ORD",
        "destination_conf": conf,
        **extra,
    }


def error_of(r: httpx.Response) -> tuple[int, str]:
    body = r.json()
    assert body["success"] is False and body["result"] is None, body
    assert body["errors"] and all(e["code"] >= 1000 for e in body["errors"]), body
    return body["errors"][0]["code"], " | ".join(e["message"] for e in body["errors"])
