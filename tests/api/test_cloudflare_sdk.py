"""Cloudflare's own Python SDK drives edgepcap unchanged, with both auth styles."""

from __future__ import annotations

import cloudflare
import pytest
from cloudflare import Cloudflare

from edgepcap.formats.pcapfile import Packet
from tests.support.packets import tshark_fields, udp, write_pcap


def sdk(stack, account, keys: bool) -> Cloudflare:
    base = stack.api
    if keys:
        return Cloudflare(
            api_email=account.email, api_key=account.api_key, base_url=base, max_retries=0
        )
    return Cloudflare(api_token=account.api_token, base_url=base, max_retries=0)


@pytest.mark.parametrize("keys", [False, True], ids=["token", "email+key"])
def test_sdk_drives_every_call(stack, keys, tmp_path):
    acct = stack.account()
    cf = sdk(stack, acct, keys)
    pcaps = cf.magic_transit.pcaps
    directory = stack.server.data_dir / "buckets" / f"sdk-{acct.id}"
    directory.mkdir(parents=True)
    conf = f"file://{directory}"

    # The four ownership calls.
    bucket = pcaps.ownership.create(account_id=acct.id, destination_conf=conf)
    assert bucket.status == "pending" and bucket.filename.startswith("ownership-challenge-")
    token = (directory / bucket.filename).read_text()
    checked = pcaps.ownership.validate(
        account_id=acct.id, destination_conf=conf, ownership_challenge=token
    )
    assert checked.status == "success" and checked.validated
    assert [b.id for b in pcaps.ownership.get(account_id=acct.id)] == [bucket.id]

    # Create both types (the SDK sends limits as floats).
    sample = pcaps.create(
        account_id=acct.id,
        system="magic-transit",
        type="simple",
        time_limit=60,
        packet_limit=100,
        filter_v1={"destination_address": acct.host(1), "protocol": 17},
    )
    assert sample.type == "simple" and sample.status == "success" and len(sample.id) == 32
    empty = tmp_path / "sample.pcap"
    pcaps.download.get(sample.id, account_id=acct.id).write_to_file(empty)
    assert tshark_fields(empty, "frame.number") == []  # valid PCAP, nothing sampled here
    capture = pcaps.create(
        account_id=acct.id,
        system="magic-transit",
        type="full",
        time_limit=300,
        colo_name="ORD",
        destination_conf=conf,
        packet_limit=1000,
        byte_limit=1_000_000,
        filter_v1={"source_port": 53},
    )
    assert capture.type == "full" and capture.colo_name == "ORD"

    # List and get.
    listed = list(pcaps.list(account_id=acct.id))
    assert [p.id for p in listed] == [capture.id, sample.id]
    got = pcaps.get(capture.id, account_id=acct.id)
    assert got.id == capture.id and got.destination_conf == conf and got.byte_limit == 1_000_000

    # Errors come back as the SDK's typed exceptions with our message.
    with pytest.raises(cloudflare.RateLimitError, match="per minute"):
        pcaps.create(
            account_id=acct.id,
            system="magic-transit",
            type="simple",
            time_limit=60,
            packet_limit=100,
        )
    with pytest.raises(cloudflare.BadRequestError, match="time_limit"):
        pcaps.create(
            account_id=acct.id,
            system="magic-transit",
            type="full",
            time_limit=0,
            colo_name="ORD",
            destination_conf=conf,
        )

    # ord01 (the one machine of ORD here) captures and writes its file; a file planted
    # under the name ord02 would write is not part of the capture.
    me = stack.machine
    r = me.http.post(f"/captures/{capture.id}/report", json={**me.me, "state": "running"})
    assert r.status_code == 200, r.text
    t0 = 1_790_000_000_000_000_000
    for m, machine in enumerate(("ord01", "ord02")):
        write_pcap(
            directory / machine / f"pcap_{capture.id}.pcap",
            [
                Packet(
                    t0 + (2 * i + m) * 1000,
                    60,
                    udp("198.51.100.9", acct.host(1), 53, 3000 + 2 * i + m),
                )
                for i in range(10)
            ],
        )
    pcaps.stop(capture.id, account_id=acct.id)
    me.finish(capture.id)
    stopped = pcaps.get(capture.id, account_id=acct.id)
    assert stopped.status == "success" and stopped.stop_requested is not None

    download = pcaps.download.get(capture.id, account_id=acct.id)
    out = tmp_path / "merged.pcap"
    download.write_to_file(out)
    rows = tshark_fields(out, "udp.dstport")
    assert [int(r[0]) for r in rows] == list(range(3000, 3020, 2))

    pcaps.ownership.delete(bucket.id, account_id=acct.id)
    assert list(pcaps.ownership.get(account_id=acct.id)) == []


def test_sdk_with_wrong_credentials_gets_the_sdks_auth_errors(stack):
    a = stack.account()
    b = stack.account()
    with pytest.raises(cloudflare.PermissionDeniedError):
        list(sdk(stack, b, keys=False).magic_transit.pcaps.list(account_id=a.id))
    b.api_token = "ept_wrong"
    with pytest.raises(cloudflare.AuthenticationError):
        list(sdk(stack, b, keys=False).magic_transit.pcaps.list(account_id=a.id))
