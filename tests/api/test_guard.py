"""The request guard under hostile bodies: checks that stay linear and off the event loop.

The guard reads and checks every JSON body before authentication and routing, so whatever
it costs, anyone on the network can make a process pay it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from edgepcap.api.guard import MAX_BODY, check_json
from tests.support.servers import register_machine, start_server, stop_server

# Agents heartbeat once a second: an answer later than that is a beat missed.
HEARTBEAT_PERIOD = 1.0
HOSTILE_REQUESTS = 16


def distinct_keys(limit: int) -> bytes:
    """`{"0":0,"1":0,…}`: as many distinct keys as fit in `limit` bytes."""
    parts: list[str] = []
    size = 2
    while size + len(f'"{len(parts)}":0,') <= limit:
        size += len(f'"{len(parts)}":0,')
        parts.append(f'"{len(parts)}":0')
    return ("{" + ",".join(parts) + "}").encode()


@pytest.mark.timeout(30)
def test_the_duplicate_key_check_is_linear():
    # 300 000 keys: a count per key would take hours; one pass takes a fraction of a second.
    body = distinct_keys(3_200_000)
    assert check_json(body) is None
    _code, message = check_json(body[:-1] + b',"7":1}')  # type: ignore[misc]
    assert message == "duplicate key `7` in the request body"


def test_large_bodies_neither_stall_the_process_nor_its_agents_heartbeats(tmp_path):
    server = start_server(tmp_path / "api", None)
    machine = register_machine(server)
    body = distinct_keys(MAX_BODY)
    assert len(body) <= MAX_BODY and body.count(b":") > 7_000
    url = server.api + "/accounts/" + "0" * 32 + "/pcaps"
    try:

        def hostile(_: int) -> tuple[int, float]:
            start = time.monotonic()
            r = httpx.post(
                url, content=body, headers={"Content-Type": "application/json"}, timeout=60
            )
            return r.status_code, time.monotonic() - start

        with ThreadPoolExecutor(HOSTILE_REQUESTS) as pool:
            flood = [pool.submit(hostile, i) for i in range(HOSTILE_REQUESTS)]
            beats: list[float] = []
            while not all(f.done() for f in flood) or len(beats) < 3:
                start = time.monotonic()
                r = machine.http.post("/heartbeat", json=machine.me)
                assert r.status_code == 200, r.text
                beats.append(time.monotonic() - start)
            answers = [f.result() for f in flood]
        # Unauthenticated: refused, each within the heartbeat period even sixteen at once.
        assert {status for status, _ in answers} <= {400, 401}, answers
        assert max(took for _, took in answers) < HEARTBEAT_PERIOD, answers
        assert max(beats) < HEARTBEAT_PERIOD, beats
    finally:
        machine.stop()
        stop_server(server)
