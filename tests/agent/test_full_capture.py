"""Full captures in the lab, against the real kernel: exact contents, limits, stop, tenancy."""

from __future__ import annotations

import os

from tests.support.captures import captured, expected, in_prefixes, packets_in
from tests.support.live import send_udp
from tests.support.packets import MACHINE_FIELDS, tshark_fields


def test_filtered_capture_holds_exactly_the_matching_packets(lab):
    client = lab["addresses"]["client"]
    pcap = lab.start_full(
        filter_v1={"source_address": client, "destination_port": 80, "protocol": 6}
    )
    assert pcap["status"] == "running"
    flows = lab.traffic("--count", "40")
    with lab.client() as c:
        assert c.put(f"/pcaps/{pcap['id']}/stop").status_code == 200
    done = lab.wait_end(pcap["id"])
    assert done["status"] == "success", done

    want = expected(
        flows,
        lambda k: (
            k[0] == client and k[2] == 6 and k[4] == 80 and in_prefixes(k[1], lab["prefixes"])
        ),
    )
    assert sum(want.values()) == 2 * 40  # one SYN flow per customer host
    files = lab.files(pcap["id"])
    assert set(files) == {"ord01", "ord02"}
    assert captured(lab, pcap["id"]) == want
    assert done["packets_captured"] == sum(want.values())
    wire_bytes = sum(
        f["bytes"]
        for f in flows
        if f["proto"] == "tcp" and f["family"] == 4 and f["tenant"] == "customer"
    )
    assert sum(m["bytes"] for m in done["machines"]) == wire_bytes
    assert all(m["dropped"] == 0 and m["state"] == "done" for m in done["machines"])
    for machine in ("ord01", "ord02"):
        assert lab.tables(machine) == []


def test_empty_filter_sees_all_own_traffic_and_nothing_of_the_other_account(lab):
    pcap = lab.start_full(filter_v1={})
    flows = lab.traffic("--count", "25")
    with lab.client() as c:
        c.put(f"/pcaps/{pcap['id']}/stop")
    done = lab.wait_end(pcap["id"])
    mine = lab["prefixes"]
    want = expected(flows, lambda k: in_prefixes(k[0], mine) or in_prefixes(k[1], mine))
    got = captured(lab, pcap["id"])
    assert got == want
    other = lab["other"]["prefixes"]
    assert not [k for k in got if in_prefixes(k[0], other) or in_prefixes(k[1], other)]
    assert done["packets_captured"] == sum(want.values())


def test_ipv6_filter(lab):
    host6 = lab["addresses"]["customer6"]
    pcap = lab.start_full(filter_v1={"destination_address": host6, "protocol": 58})
    flows = lab.traffic("--count", "30", "--proto", "icmp", "--tenant", "customer")
    with lab.client() as c:
        c.put(f"/pcaps/{pcap['id']}/stop")
    lab.wait_end(pcap["id"])
    want = expected(flows, lambda k: k[1] == host6 and k[2] == 58)
    assert sum(want.values()) == 30
    assert captured(lab, pcap["id"]) == want


def test_packet_limit_is_an_exact_total_across_machines(lab):
    pcap = lab.start_full(packet_limit=333, filter_v1={"protocol": 17})
    lab.traffic("--count", "400", "--proto", "udp", "--tenant", "customer")
    done = lab.wait_end(pcap["id"])
    assert done["status"] == "success"
    assert done["packets_captured"] == 333
    assert sum(captured(lab, pcap["id"]).values()) == 333


def test_byte_limit_is_never_exceeded(lab):
    # 128-byte IPv4 UDP packets: 100 fit exactly into 12 800 bytes.
    pcap = lab.start_full(
        byte_limit=12_800, filter_v1={"protocol": 17, "source_address": lab["addresses"]["client"]}
    )
    lab.traffic("--count", "300", "--proto", "udp", "--tenant", "customer", "--no-v6")
    done = lab.wait_end(pcap["id"])
    assert done["packets_captured"] == 100
    assert sum(m["bytes"] for m in done["machines"]) == 12_800
    assert sum(captured(lab, pcap["id"]).values()) == 100


def test_time_limit_ends_the_capture_by_itself(lab):
    pcap = lab.start_full(time_limit=2)
    done = lab.wait_end(pcap["id"], timeout=10)
    assert done["status"] == "success"
    assert done["packets_captured"] == 0 and "no packets matched" in done["error_message"]
    assert set(lab.files(pcap["id"])) == {"ord01", "ord02"}


def test_stop_ends_every_machine_and_later_traffic_is_not_captured(lab):
    pcap = lab.start_full(filter_v1={"protocol": 17})
    lab.traffic("--count", "20", "--proto", "udp", "--tenant", "customer")
    with lab.client() as c:
        assert c.put(f"/pcaps/{pcap['id']}/stop").status_code == 200
    done = lab.wait_end(pcap["id"], timeout=5)
    assert done["status"] == "success" and done["stop_requested"]
    lab.traffic("--count", "20", "--proto", "udp", "--tenant", "customer")
    assert sum(captured(lab, pcap["id"]).values()) == 80
    for machine in ("ord01", "ord02"):
        assert lab.tables(machine) == []


def test_full_capture_streams_into_an_s3_bucket(lab, tmp_path):
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=lab.s3,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="lab-captures")
    conf = lab.validate(
        "s3://lab-captures/edge?region=us-east-1",
        lambda name: (
            s3.get_object(Bucket="lab-captures", Key=f"edge/{name}")["Body"].read().decode()
        ),
    )
    pcap = lab.start_full(destination_conf=conf, filter_v1={"protocol": 17})
    flows = lab.traffic("--count", "50", "--proto", "udp", "--tenant", "customer")
    with lab.client() as c:
        c.put(f"/pcaps/{pcap['id']}/stop")
    done = lab.wait_end(pcap["id"])
    assert done["status"] == "success", done
    total = 0
    for machine in ("ord01", "ord02"):
        path = tmp_path / f"{machine}.pcap"
        body = s3.get_object(Bucket="lab-captures", Key=f"edge/{machine}/pcap_{pcap['id']}.pcap")
        path.write_bytes(body["Body"].read())
        total += len(packets_in(path))
    assert total == sum(f["packets"] for f in flows) == done["packets_captured"]
    # The merged download streams the same packets back from the bucket.
    with lab.client() as c:
        merged = tmp_path / "merged.pcap"
        merged.write_bytes(c.get(f"/pcaps/{pcap['id']}/download").content)
    assert len(packets_in(merged)) == total


def test_cli_create_wait_follows_the_capture_to_its_end(lab):
    import json
    import subprocess

    from tests.support.processes import EDGEPCAP

    env = {
        **os.environ,
        "EDGEPCAP_API": lab["api"],
        "EDGEPCAP_ACCOUNT": lab["account_id"],
        "EDGEPCAP_TOKEN": lab["api_token"],
    }
    out = subprocess.run(
        [
            EDGEPCAP,
            "pcaps",
            "create",
            "--type",
            "full",
            "--time-limit",
            "2",
            "--colo",
            "ORD",
            "--destination",
            lab["destination_conf"],
            "--wait",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)
    assert done["status"] == "success"
    assert {m["machine"] for m in done["machines"]} == {"ord01", "ord02"}
    assert "packets" in out.stderr  # the progress display


def test_pcapng_download_names_each_machine_and_what_it_sent_itself(lab, tmp_path):
    pcap = lab.start_full(filter_v1={"protocol": 17})
    flows = lab.traffic("--count", "10", "--proto", "udp", "--tenant", "customer")
    # ord01 sends three datagrams of its own to the customer's first host: its output hook.
    host = lab["hosts"][0]["v4"]
    ns = lab["namespaces"]["machines"]["ord01"]
    send_udp(lab, 7777, 3, ns=ns, hosts=[host])
    with lab.client() as c:
        assert c.put(f"/pcaps/{pcap['id']}/stop").status_code == 200
    done = lab.wait_end(pcap["id"])
    assert done["status"] == "success", done
    with lab.client() as c:
        r = c.get(f"/pcaps/{pcap['id']}/download", params={"format": "pcapng"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-pcapng"
    path = tmp_path / "capture.pcapng"
    path.write_bytes(r.content)

    rows = tshark_fields(path, *MACHINE_FIELDS)
    forwarded = sum(f["packets"] for f in flows if f["proto"] == "udp")
    assert len(rows) == done["packets_captured"] == forwarded + 3
    machines = {(r[0], r[1]) for r in rows}
    assert machines == {("ord01", "edgepcap ORD ord01"), ("ord02", "edgepcap ORD ord02")}
    own = [r for r in rows if r[2] == "7777"]
    assert own == [["ord01", "edgepcap ORD ord01", "7777", "0x00000002"]] * 3
    assert all(r[3] == "0x00000001" for r in rows if r[2] != "7777")  # arrived
    # The bucket keeps Cloudflare's layout: one PCAP file per machine.
    assert set(lab.files(pcap["id"])) == {"ord01", "ord02"}
