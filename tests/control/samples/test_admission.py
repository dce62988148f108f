"""Samples are taken only from a machine's current run, with sane timestamps and lengths;
what is refused is counted on /metrics (SQLite and PostgreSQL: the counters' upsert)."""

from __future__ import annotations

import ipaddress
import subprocess
import time

import httpx

from edgepcap.formats import samples as records
from edgepcap.formats.pcapfile import Reader
from tests.support.agentkeys import agent_client, mint_key, new_boot, refused
from tests.support.api import SIMPLE
from tests.support.packets import tshark_fields, udp
from tests.support.servers import MachineHeartbeat
from tests.support.stack import Stack

SERVER_ENV = {"EDGEPCAP_SAMPLE_INTERVAL": "0"}
HOUR_NS = 3600 * 10**9


def batch(account, n: int, ts: int, cap_len: int | None = None, orig_len: int | None = None):
    """`n` wire records of UDP to the account's first address, as an agent attributes them."""
    dst = account.host(1)
    snaps = [udp("198.51.100.7", dst, 4000 + i, 53, b"x" * 300) for i in range(n)]
    rows = records.parse(snaps, [ts + i for i in range(n)], [len(s) for s in snaps])
    if cap_len is not None:
        rows["cap_len"] = cap_len
    if orig_len is not None:
        rows["orig_len"] = orig_len
    nets = [ipaddress.ip_network(p) for p in account.prefixes]
    return records.attribute(rows, {account.id: nets})


def post(c: httpx.Client, me: dict[str, str], body: bytes) -> httpx.Response:
    return c.post(
        "/samples", params=me, content=body, headers={"Content-Type": "application/octet-stream"}
    )


def test_samples_need_the_keys_machine_in_its_current_run(stack: Stack):
    account = stack.account()
    key = mint_key(stack, "SAM", "sam01")["agent_key"]
    body = batch(account, 5, time.time_ns()).tobytes()
    with agent_client(stack, key) as c:
        # Never registered: no current run to speak of.
        r = post(c, {"machine": "sam01", "boot_id": new_boot()}, body)
        assert r.status_code == 409, r.text
        assert r.json()["errors"][0]["code"] == 1102
        beat = MachineHeartbeat(stack.server.url, key, "SAM", "sam01")
        try:
            # A run that is not the current one.
            assert post(c, {"machine": "sam01", "boot_id": new_boot()}, body).status_code == 409
            # Another machine's name (the stack's ord01, live) under this key.
            r = post(c, {"machine": "ord01", "boot_id": beat.me["boot_id"]}, body)
            assert r.status_code == 403 and r.json()["errors"][0]["code"] == 9109, r.text
            assert refused(stack, "sam01") == {"boot": 10, "machine": 5}
            r = post(c, beat.me, body)
            assert r.status_code == 200 and r.json() == {"kept": 5, "rejected": 0}, r.text
        finally:
            beat.stop()
    assert refused(stack, "ord01") == {}


def test_future_stale_and_overlong_samples_are_refused_and_counted(stack: Stack, tmp_path):
    account = stack.account()
    key = mint_key(stack, "SAM", "sam02")["agent_key"]
    beat = MachineHeartbeat(stack.server.url, key, "SAM", "sam02")
    now = time.time_ns()
    parts = [
        batch(account, 10, now - 10**9),  # fine
        batch(account, 3, now + HOUR_NS),  # would be kept for ever
        batch(account, 2, now - HOUR_NS),  # not what the machine just saw
        batch(account, 2, now, cap_len=161),  # past the record's 160 bytes of data
        batch(account, 1, now, cap_len=100, orig_len=60),  # bytes the packet never had
    ]
    body = b"".join(p.tobytes() for p in parts)
    try:
        with agent_client(stack, key) as c:
            r = post(c, beat.me, body)
            assert r.status_code == 200, r.text
            assert r.json() == {"kept": 10, "rejected": 8}
            assert post(c, beat.me, parts[1].tobytes()).json() == {"kept": 0, "rejected": 3}
    finally:
        beat.stop()
    assert refused(stack, "sam02") == {"future": 6, "stale": 2, "cap_len": 3}

    # The account's sample PCAP holds the 10 good samples, each whole and within 160 bytes.
    with stack.client(account) as c:
        r = c.post(
            "/pcaps",
            json=SIMPLE,
        )
        assert r.status_code == 200, r.text
        pcap = r.json()["result"]
        assert pcap["packets_captured"] == 10
        r = c.get(f"/pcaps/{pcap['id']}/download")
        assert r.status_code == 200
        ng = c.get(f"/pcaps/{pcap['id']}/download", params={"format": "pcapng"})
        assert ng.status_code == 200 and ng.headers["content-type"] == "application/x-pcapng"
    packets = list(Reader([r.content]))
    assert len(packets) == 10
    assert all(len(p.data) == 160 and p.orig_len == 328 for p in packets)

    # As pcapng: the same packets on one interface, the samples, and a comment saying so.
    path = tmp_path / "sample.pcapng"
    path.write_bytes(ng.content)
    rows = tshark_fields(path, "frame.interface_name", "frame.cap_len", "frame.len")
    assert rows == [["samples", "160", "328"]] * 10
    info = subprocess.run(["capinfos", str(path)], capture_output=True, text=True, check=True)
    assert (
        f"edgepcap sample capture (1 in 100 packets, first 160 bytes) {pcap['id']}" in info.stdout
    )
