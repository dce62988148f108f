"""Agents and destinations failing mid-capture, in the lab: defined ends, no rules left."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from edgepcap.agent.kernel import nft
from edgepcap.control import fleet
from edgepcap.lab import lab as labmod
from tests.support.api import full
from tests.support.captures import captured, expected, in_prefixes, packets_in
from tests.support.packets import tshark_fields
from tests.support.processes import wait_for

MACHINES = ("ord01", "ord02")


def test_colo_name_can_name_one_machine_or_nothing_known(lab):
    pcap = lab.start_full(colo_name="ord02", filter_v1={"protocol": 17})
    assert [m["machine"] for m in pcap["machines"]] == ["ord02"]
    lab.traffic("--count", "10", "--proto", "udp", "--tenant", "customer", "--no-v6")
    with lab.client() as c:
        c.put(f"/pcaps/{pcap['id']}/stop")
        lab.wait_end(pcap["id"])
        assert set(lab.files(pcap["id"])) == {"ord02"}
        assert sum(captured(lab, pcap["id"]).values()) == 10
        r = c.post(
            "/pcaps",
            json=full(lab["destination_conf"], time_limit=5, colo_name="SJC"),
        )
        assert r.status_code == 400
        assert "neither a colo nor a machine" in r.json()["errors"][0]["message"]
        assert "ORD" in r.json()["errors"][0]["message"]


def test_agent_killed_mid_capture_then_restarted(lab):
    pcap = lab.start_full(filter_v1={"protocol": 17})
    pid = labmod.agent_pid(lab.data_dir, "ord02")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not labmod._ours(pid), 5, "the agent to die")
    # Its table is still in the kernel: nobody removed it.
    assert lab.tables("ord02") == [f"edgepcap_{pcap['id']}"]
    lab.traffic("--count", "15", "--proto", "udp", "--tenant", "customer", "--no-v6")
    with lab.client() as c:
        c.put(f"/pcaps/{pcap['id']}/stop")
    done = lab.wait_end(pcap["id"], timeout=20)
    # Documented: success with the surviving machines' files, the lost one named.
    assert done["status"] == "success"
    assert "ord02" in done["error_message"] and "heartbeats" in done["error_message"]
    parts = {m["machine"]: m for m in done["machines"]}
    assert parts["ord02"]["state"] == "failed" and parts["ord01"]["state"] == "done"
    assert set(lab.files(pcap["id"])) == {"ord01"}  # no half file of ord02
    assert sum(captured(lab, pcap["id"]).values()) == 15

    # While ord02 is down, a capture on it alone fails at once, saying why.
    with lab.client() as c:
        r = c.post(
            "/pcaps",
            json=full(lab["destination_conf"], time_limit=5, colo_name="ord02"),
        )
        assert r.status_code == 200
        failed = r.json()["result"]
        assert failed["status"] == "failed" and "no live machine" in failed["error_message"]

    labmod.restart_agent(lab.data_dir, "ord02")
    wait_for(lambda: lab.tables("ord02") == [], 10, "the restarted agent to remove stale tables")
    again = lab.start_full(colo_name="ord02", time_limit=1)
    assert lab.wait_end(again["id"], timeout=10)["status"] == "success"


def test_bucket_gone_before_the_capture_fails_it_naming_the_cause(lab):
    root = lab["destination_conf"].removeprefix("file://")
    moved = root + ".away"
    os.rename(root, moved)
    try:
        with lab.client() as c:
            r = c.post(
                "/pcaps",
                json=full(lab["destination_conf"], time_limit=30, colo_name="ORD"),
            )
        pcap = r.json()["result"]
        done = lab.wait_end(pcap["id"], timeout=15)
    finally:
        os.rename(moved, root)
    assert done["status"] == "failed"
    assert "does not exist" in done["error_message"] and root in done["error_message"]
    for machine in ("ord01", "ord02"):
        assert lab.tables(machine) == []


def test_a_symlinked_machine_folder_is_not_written_through(lab):
    """A customer who makes a machine's folder a link (here: into the other tenant's
    bucket) gets a failed capture naming the link; the agent, as root, writes nothing there."""
    root = Path(lab["destination_conf"].removeprefix("file://"))
    target = Path(lab["other"]["destination_conf"].removeprefix("file://"))
    before = sorted(str(p) for p in target.rglob("*"))
    kept = {m: root / f"{m}.kept" for m in MACHINES if (root / m).exists()}
    for machine, away in kept.items():
        os.rename(root / machine, away)
    try:
        for machine in MACHINES:
            (root / machine).symlink_to(target)
        with lab.client() as c:
            r = c.post("/pcaps", json=full(lab["destination_conf"], time_limit=3))
            assert r.status_code == 200, r.text
        done = lab.wait_end(r.json()["result"]["id"], timeout=15)
    finally:
        for machine in MACHINES:
            (root / machine).unlink(missing_ok=True)
        for machine, away in kept.items():
            os.rename(away, root / machine)
    assert done["status"] == "failed"
    for machine in MACHINES:
        assert f"'{machine}' is a symbolic link" in done["error_message"], done["error_message"]
    assert sorted(str(p) for p in target.rglob("*")) == before
    for machine in MACHINES:
        assert lab.tables(machine) == []


def test_tcpdump_on_the_edge_sees_the_same_packets(lab, tmp_path):
    """The peer check: tcpdump with the equivalent BPF filter on every machine."""
    client = lab["addresses"]["client"]
    bpf = f"src host {client} and (udp or tcp)"
    dumps = {}
    procs = []
    for machine, ns in lab["namespaces"]["machines"].items():
        dumps[machine] = tmp_path / f"{machine}.pcap"
        procs.append(
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "tcpdump",
                    "-Z",
                    "root",
                    "-i",
                    "any",
                    "-Q",
                    "in",
                    "-n",
                    "-U",
                    "--immediate-mode",
                    # A small snaplen and a big buffer: with the default 256 KiB slots the
                    # ring holds a handful of packets and a burst overflows it.
                    "-s",
                    "2048",
                    "-B",
                    "8192",
                    "-w",
                    str(dumps[machine]),
                    bpf,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for proc in procs:
            wait_for(
                lambda p=proc: "listening on" in (p.stderr.readline() or ""),
                10,
                "tcpdump to listen",
            )
        pcap = lab.start_full(filter_v1={"source_address": client})
        flows = lab.traffic(
            "--count", "30", "--proto", "udp", "--proto", "tcp", "--tenant", "customer", "--no-v6"
        )
        with lab.client() as c:
            c.put(f"/pcaps/{pcap['id']}/stop")
        lab.wait_end(pcap["id"])
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
    for proc in procs:
        # tcpdump's own count must match what it wrote: nothing dropped on its side.
        assert "0 packets dropped by kernel" in proc.stderr.read()
    theirs: dict = {}
    for path in dumps.values():
        for src, dst, sp, dp in (
            tshark_fields(path, "ip.src", "ip.dst", "udp.srcport", "udp.dstport") or []
        ):
            theirs[(src, dst, sp, dp)] = theirs.get((src, dst, sp, dp), 0) + 1
    ours: dict = {}
    for path in lab.files(pcap["id"]).values():
        for src, dst, sp, dp in tshark_fields(
            path, "ip.src", "ip.dst", "udp.srcport", "udp.dstport"
        ):
            ours[(src, dst, sp, dp)] = ours.get((src, dst, sp, dp), 0) + 1
    assert ours == theirs
    want = expected(flows, lambda k: k[0] == client and in_prefixes(k[1], lab["prefixes"]))
    assert sum(ours.values()) == sum(want.values()) == 4 * 30
    assert shutil.which("tcpdump")


def test_disk_full_on_a_file_bucket_fails_the_capture_saying_so(lab):
    root = lab["destination_conf"].removeprefix("file://")
    tiny = root + "-tiny"
    os.makedirs(tiny, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", tiny], check=True)
    try:
        conf = lab.validate(f"file://{tiny}", lambda name: Path(tiny, name).read_text())
        pcap = lab.start_full(destination_conf=conf, filter_v1={"protocol": 17})
        lab.traffic("--count", "300", "--size", "1400", "--proto", "udp", "--tenant", "customer")
        with lab.client() as c:
            c.put(f"/pcaps/{pcap['id']}/stop")
        done = lab.wait_end(pcap["id"])
        assert done["status"] == "failed"
        assert "no space left on the device" in done["error_message"]
        assert not [
            n for n in os.listdir(tiny) if n.startswith("ord") and os.listdir(os.path.join(tiny, n))
        ]  # no half files
        for machine in ("ord01", "ord02"):
            assert lab.tables(machine) == []
    finally:
        subprocess.run(["umount", tiny], check=False)
    # The service takes new captures after.
    again = lab.start_full(time_limit=1)
    assert lab.wait_end(again["id"], timeout=10)["status"] == "success"


def test_read_only_bucket_fails_the_capture_as_access_denied(lab):
    root = lab["destination_conf"].removeprefix("file://")
    subprocess.run(["mount", "--bind", root, root], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", root], check=True)
        with lab.client() as c:
            r = c.post(
                "/pcaps",
                json=full(lab["destination_conf"], time_limit=30, colo_name="ORD"),
            )
        pcap = r.json()["result"]
        lab.traffic("--count", "10", "--proto", "udp", "--tenant", "customer", "--no-v6")
        with lab.client() as c:
            c.put(f"/pcaps/{pcap['id']}/stop")
        done = lab.wait_end(pcap["id"])
    finally:
        subprocess.run(["umount", root], check=False)
    assert done["status"] == "failed"
    assert "access denied" in done["error_message"], done["error_message"]
    for machine in ("ord01", "ord02"):
        assert lab.tables(machine) == []


def _count_in(lab, pcap_id: str, tenant: str = "customer") -> int:
    return sum(len(packets_in(path)) for path in lab.files(pcap_id, tenant).values())


def test_control_plane_restart_mid_capture_loses_nothing(lab):
    """The api goes away for longer than the heartbeat timeout while two captures run:
    one is stopped after the api is back, the other's time limit ends during the outage.
    Agents keep capturing, keep their end reports until the api listens again, and the
    restarted api does not blame them for its own absence."""
    mine = lab.start_full(filter_v1={"protocol": 17})
    theirs = lab.start_full("other", filter_v1={"protocol": 17}, time_limit=4)
    sent = lab.send(20, tenants=("customer", "other"))
    down = time.monotonic()
    labmod.stop_api(lab.data_dir)
    try:
        sent += lab.send(30)
        # The other capture ends by its time limit while nobody listens: its tables go.
        wait_for(
            lambda: all(lab.tables(m) == [f"edgepcap_{mine['id']}"] for m in ("ord01", "ord02")),
            20,
            "the time-limited capture to end on the agents",
        )
        # The fault itself: an outage longer than the heartbeat timeout.
        outage = fleet.HEARTBEAT_TIMEOUT.total_seconds() + 1
        time.sleep(max(0.0, down + outage - time.monotonic()))
    finally:
        labmod.start_api(lab.data_dir)
    sent += lab.send(10)
    with lab.client() as c:
        assert c.put(f"/pcaps/{mine['id']}/stop").status_code == 200
    done = lab.wait_end(mine["id"], timeout=30)
    other = lab.wait_end(theirs["id"], timeout=30, tenant="other")

    assert done["status"] == "success" and done["error_message"] is None, done
    assert done["submitted"] == mine["submitted"] and done["stop_requested"]
    assert {m["machine"]: m["state"] for m in done["machines"]} == dict.fromkeys(MACHINES, "done")
    want = expected(sent, lambda k: in_prefixes(k[1], lab["prefixes"]))
    assert sum(want.values()) == 2 * (20 + 30 + 10)
    assert captured(lab, mine["id"]) == want
    assert done["packets_captured"] == sum(want.values())

    assert other["status"] == "success" and other["error_message"] is None, other
    assert other["packets_captured"] == 2 * 20 == _count_in(lab, theirs["id"], "other")
    assert all(m["state"] == "done" for m in other["machines"])
    for machine in ("ord01", "ord02"):
        assert lab.tables(machine) == []
    wait_for(lambda: all(lab.machines_up().values()), 10, "every machine to be live again")
    again = lab.start_full(time_limit=1)
    assert lab.wait_end(again["id"], timeout=10)["status"] == "success"


def _s3(lab):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=lab.s3,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _validated_s3_bucket(lab, s3, bucket: str) -> str:
    s3.create_bucket(Bucket=bucket)
    return lab.validate(
        f"s3://{bucket}/edge?region=us-east-1",
        lambda name: s3.get_object(Bucket=bucket, Key=f"edge/{name}")["Body"].read().decode(),
    )


def test_s3_bucket_deleted_mid_upload_fails_the_capture_naming_the_cause(lab):
    s3 = _s3(lab)
    bucket = "lab-vanishing"
    conf = _validated_s3_bucket(lab, s3, bucket)
    pcap = lab.start_full(destination_conf=conf, filter_v1={"protocol": 17})
    # Whole 1 428-byte packets, more than one 5 MiB part per machine.
    lab.send(4000, size=1400)

    def parts_uploaded() -> bool:
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        keys = {u["Key"]: u["UploadId"] for u in uploads}
        return len(keys) == 2 and all(
            s3.list_parts(Bucket=bucket, Key=k, UploadId=u).get("Parts") for k, u in keys.items()
        )

    wait_for(parts_uploaded, 20, "a first part of each machine's upload")
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)
    lab.send(4000, size=1400)
    with lab.client() as c:
        c.put(f"/pcaps/{pcap['id']}/stop")
    done = lab.wait_end(pcap["id"], timeout=30)
    assert done["status"] == "failed"
    assert all(m["state"] == "failed" and m["packets"] >= 4000 for m in done["machines"])
    assert f"bucket '{bucket}' does not exist" in done["error_message"], done["error_message"]
    for machine in MACHINES:
        assert lab.tables(machine) == []
    again = lab.start_full(time_limit=1)
    assert lab.wait_end(again["id"], timeout=10)["status"] == "success"


def test_file_bucket_removed_mid_capture_fails_the_capture_naming_the_cause(lab):
    root = lab["destination_conf"].removeprefix("file://")
    doomed = root + "-doomed"
    os.makedirs(doomed)
    try:
        conf = lab.validate(f"file://{doomed}", lambda name: Path(doomed, name).read_text())
        pcap = lab.start_full(destination_conf=conf, filter_v1={"protocol": 17})
        lab.send(200, size=1000)
        # Each machine is writing its (staged) file when the directory goes away.
        wait_for(
            lambda: all(m["packets"] == 200 for m in lab.get(pcap["id"])["machines"]),
            10,
            "both machines to have written the traffic",
        )
        shutil.rmtree(doomed)
        with lab.client() as c:
            c.put(f"/pcaps/{pcap['id']}/stop")
        done = lab.wait_end(pcap["id"], timeout=30)
        # Not quietly recreated by the upload.
        assert not os.path.exists(doomed)
    finally:
        shutil.rmtree(doomed, ignore_errors=True)
    assert done["status"] == "failed"
    assert f"the bucket directory {doomed} does not exist" in done["error_message"], done
    assert all(m["state"] == "failed" and m["packets"] == 200 for m in done["machines"])
    for machine in MACHINES:
        assert lab.tables(machine) == []
    again = lab.start_full(time_limit=1)
    assert lab.wait_end(again["id"], timeout=10)["status"] == "success"


def _restart_agent(lab, machine: str, env: dict[str, str] | None = None) -> None:
    """Stop the machine's agent cleanly and start it again, registered before returning."""
    registered = lab.registrations(machine)
    labmod.stop_agent(lab.data_dir, machine)
    labmod.restart_agent(lab.data_dir, machine, env)
    wait_for(
        lambda: lab.registrations(machine) > registered and lab.machines_up()[machine],
        20,
        f"the agent of {machine} to register again",
    )


def test_nflog_overruns_are_counted_packet_for_packet(lab):
    """A stalled agent with a small NFLOG buffer: the kernel drops, and says how many."""
    _restart_agent(lab, "ord02", {"EDGEPCAP_NFLOG_RCVBUF": "4096"})
    try:
        pcap = lab.start_full(colo_name="ord02", filter_v1={"protocol": 17})
        table = f"edgepcap_{pcap['id']}"
        ns = lab["namespaces"]["machines"]["ord02"]
        pid = labmod.agent_pid(lab.data_dir, "ord02")
        burst = 2000
        os.kill(pid, signal.SIGSTOP)  # the reader stalls; the kernel keeps logging
        try:
            flows = lab.send(burst, size=1000)
            wait_for(lambda: nft.counters(table, ns)[0] == burst, 10, "the rule to count the burst")
        finally:
            os.kill(pid, signal.SIGCONT)
        with lab.client() as c:
            c.put(f"/pcaps/{pcap['id']}/stop")
        done = lab.wait_end(pcap["id"], timeout=20)
    finally:
        _restart_agent(lab, "ord02")
    assert sum(f["packets"] for f in flows if f["machine"] == "ord02") == burst
    [part] = done["machines"]
    assert done["status"] == "success", done
    # Every packet the rule matched is either in the file or counted as dropped.
    assert part["kernel_matched"] == burst
    assert part["dropped"] > 0 and part["overruns"] > 0, part
    assert part["packets"] + part["dropped"] == part["kernel_matched"], part
    assert _count_in(lab, pcap["id"]) == part["packets"] == done["packets_captured"]
    assert (
        f"ord02 lost {part['dropped']} packets ({part['overruns']} overruns)"
        in (done["error_message"])
    )
    assert lab.tables("ord02") == []
    again = lab.start_full(colo_name="ord02", time_limit=1)
    assert lab.wait_end(again["id"], timeout=10)["status"] == "success"


# The soak: back-to-back captures, then nothing may have piled up anywhere. The suite runs
# SOAK_IN_SUITE of them (it must stay fast); `scripts/soak` runs 200 or what it is given.
SOAK_IN_SUITE = 100
# The api's RSS settles within ~25 captures (then grows ~20 KiB per capture over 300,
# observed), its open files (keep-alive connections of agents and clients) too.
SOAK_WARMUP = 30


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        line = next(x for x in fh if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _nflog_groups(lab, machine: str) -> list[int]:
    """NFLOG groups bound in the machine's namespace (the file is per namespace)."""
    ns = lab["namespaces"]["machines"][machine]
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/proc/net/netfilter/nfnetlink_log"],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(int(line.split()[0]) for line in out.stdout.splitlines() if line.strip())


def test_soak_back_to_back_captures_leave_nothing_behind(lab):
    count = int(os.environ.get("EDGEPCAP_SOAK_CAPTURES", SOAK_IN_SUITE))
    assert count > SOAK_WARMUP
    state = json.loads((lab.data_dir / "lab-state.json").read_text())
    processes = {"api": state["pids"][0]} | {m: labmod.agent_pid(lab.data_dir, m) for m in MACHINES}
    per_flow = 5  # UDP packets to each machine's customer host, 128 bytes each
    body = {
        "system": "magic-transit",
        "type": "full",
        "time_limit": 60,
        "colo_name": lab["colo"],
        "destination_conf": lab["destination_conf"],
        "filter_v1": {"protocol": 17},
    }
    baseline: dict[str, tuple[int, int]] = {}
    started = time.monotonic()
    with lab.client() as c:

        def get(pcap_id: str) -> dict:
            return c.get(f"/pcaps/{pcap_id}").json()["result"]

        for i in range(count):
            if i == SOAK_WARMUP:
                baseline = {name: (_fds(pid), _rss(pid)) for name, pid in processes.items()}
            # Every tenth capture ends by its packet limit, the others by a stop.
            limited = i % 10 == 5
            r = c.post("/pcaps", json={**body, **({"packet_limit": 6} if limited else {})})
            assert r.status_code == 200, r.text
            pcap_id = r.json()["result"]["id"]
            wait_for(
                lambda pcap_id=pcap_id: all(
                    m["state"] == "running" for m in get(pcap_id)["machines"]
                ),
                10,
                f"capture {i} to run on every machine",
                interval=0.01,
            )
            lab.send(per_flow)
            if not limited:
                assert c.put(f"/pcaps/{pcap_id}/stop").status_code == 200
            done = wait_for(
                lambda pcap_id=pcap_id: (
                    (p := get(pcap_id))["status"] in ("success", "failed") and p
                ),
                20,
                f"capture {i} to end",
                interval=0.01,
            )
            want = 6 if limited else 2 * per_flow
            assert done["status"] == "success" and done["packets_captured"] == want, done
            sizes = [p.stat().st_size for p in lab.files(pcap_id).values()]
            assert len(sizes) == 2 and sum(sizes) == 2 * 24 + want * (16 + 128)
    elapsed = time.monotonic() - started
    for machine in MACHINES:
        assert lab.tables(machine) == []
        assert _nflog_groups(lab, machine) == [100]  # the sampler's only

    def settled() -> bool:
        # Connections to the api may still be closing: wait for them, not for growth.
        return all(_fds(pid) <= baseline[name][0] for name, pid in processes.items())

    with contextlib.suppress(AssertionError):
        wait_for(settled, 5, "open files to settle")
    after = {name: (_fds(pid), _rss(pid)) for name, pid in processes.items()}
    report = {
        name: f"fds {baseline[name][0]}→{after[name][0]}, "
        f"RSS {baseline[name][1] >> 20}→{after[name][1] >> 20} MiB"
        for name in processes
    }
    print(f"soak: {count} captures in {elapsed:.1f} s ({elapsed / count:.2f} s each): {report}")
    for name in processes:
        # A few keep-alive connections come and go (the api serves agents' threads and
        # this test); what must not happen is growth with the number of captures.
        assert after[name][0] <= baseline[name][0] + (4 if name == "api" else 2), report
        assert after[name][1] - baseline[name][1] < 10 << 20, report
