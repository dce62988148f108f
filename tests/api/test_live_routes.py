"""Who may stream a capture and feed its viewers: the stream route's refusals and the
agents' live route's checks (against a real server, without the kernel)."""

from __future__ import annotations

import pytest

from edgepcap.formats import protocol
from edgepcap.formats.pcapfile import Packet, record
from tests.support.api import SIMPLE, error_of, full
from tests.support.servers import register_machine


@pytest.fixture(scope="module")
def sea(stack):
    machines = {name: register_machine(stack.server, "SEA", name) for name in ("sea01", "sea02")}
    yield machines
    for m in machines.values():
        m.stop()


def live_post(machine, pcap_id: str, body: bytes, first: int = 0, **extra):
    return machine.http.post(
        f"/captures/{pcap_id}/live",
        params={**machine.me, "first": first, **extra},
        content=body,
        headers={"Content-Type": "application/octet-stream"},
    )


def test_only_a_running_full_capture_of_ones_own_streams(stack, sea):
    acct, other = stack.account(), stack.account()
    conf = stack.validated_bucket(acct)
    with stack.client(acct) as c:
        sample = c.post("/pcaps", json=SIMPLE).json()["result"]["id"]
        r = c.get(f"/pcaps/{sample}/stream")
        assert r.status_code == 409 and "a sample capture" in error_of(r)[1]
        r = c.post("/pcaps", json=full(conf, colo_name="sea01"))
        assert r.status_code == 200, r.text
        pcap_id = r.json()["result"]["id"]
        assert c.get("/pcaps/not-an-id/stream").status_code == 400
    with stack.client(other) as o:
        r = o.get(f"/pcaps/{pcap_id}/stream")
        assert r.status_code == 404  # another account's capture does not exist for it
    sea["sea01"].finish(pcap_id)
    with stack.client(acct) as c:
        r = c.get(f"/pcaps/{pcap_id}/stream")
        assert r.status_code == 409 and "download it instead" in error_of(r)[1]


def test_live_copies_are_checked_and_go_nowhere_but_the_captures_viewers(stack, sea):
    acct = stack.account()
    conf = stack.validated_bucket(acct)
    with stack.client(acct) as c:
        pcap_id = c.post("/pcaps", json=full(conf, colo_name="sea01")).json()["result"]["id"]
    records = record(Packet(1, 40, b"\x45" + b"\0" * 39)) * 3
    body = protocol.live_body(records, [[1, 2]])
    # Not whole records; runs outside the batch; no runs' length; a huge first packet;
    # the wrong body type.
    r = live_post(sea["sea01"], pcap_id, protocol.live_body(records[:-1], []))
    assert r.status_code == 400 and "whole PCAP records" in error_of(r)[1]
    r = live_post(sea["sea01"], pcap_id, protocol.live_body(records, [[2, 4]]))
    assert r.status_code == 400 and "out of the batch" in error_of(r)[1]
    r = live_post(sea["sea01"], pcap_id, b"\0\0")
    assert r.status_code == 400 and "length of its runs" in error_of(r)[1]
    assert live_post(sea["sea01"], pcap_id, body, first=1 << 63).status_code == 400
    r = sea["sea01"].http.post(
        f"/captures/{pcap_id}/live", params={**sea["sea01"].me, "first": 0}, content=body
    )
    assert r.status_code == 415
    # Another machine's key speaks for its own machine only.
    r = sea["sea02"].http.post(
        f"/captures/{pcap_id}/live",
        params={**sea["sea01"].me, "first": 0},
        content=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 403
    # A machine with no part in the capture feeds no viewer.
    assert live_post(sea["sea02"], pcap_id, body).json() == {"viewers": 0}
    sea["sea01"].finish(pcap_id)
