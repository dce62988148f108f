"""Live streams of running captures in the lab: every packet from connect to end, in
Wireshark's tools, from the API process the agents talk to or another one."""

from __future__ import annotations

import os
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support.captures import captured
from tests.support.lab import Lab, running_lab
from tests.support.live import Watch, send_udp, until
from tests.support.packets import MACHINE_FIELDS, tshark_fields
from tests.support.postgres import Postgres
from tests.support.processes import EDGEPCAP, wait_for
from tests.support.servers import start_server, stop_server

pytestmark = pytest.mark.root  # the lab

FIELDS = MACHINE_FIELDS


def watched(lab: Lab, viewers: list[Watch]) -> None:
    """Traffic until every viewer has both machines' interfaces: from then on every copy
    reaches them."""
    until(lab, lambda: all(v.interfaces() == 2 for v in viewers), "copies to reach viewers")


def stream_url(api: str, lab: Lab, pcap_id: str) -> str:
    return f"{api}/client/v4/accounts/{lab['account_id']}/pcaps/{pcap_id}/stream"


def test_viewers_get_every_packet_from_connect_to_end_in_tshark(lab, tmp_path):
    pcap = lab.start_full(filter_v1={"protocol": 17})
    url = stream_url(lab["api"], lab, pcap["id"])
    # One viewer is curl piped into tshark, as a user would run it; the other reads here.
    curl = subprocess.Popen(
        [
            "curl",
            "-sN",
            "-D",
            str(tmp_path / "headers"),
            "-H",
            f"Authorization: Bearer {lab['api_token']}",
            url,
        ],
        stdout=subprocess.PIPE,
    )
    tshark = ["tshark", "-r", "-", "-T", "fields", "-E", "separator=,"]
    piped = subprocess.Popen(
        tshark + [arg for f in FIELDS for arg in ("-e", f)],
        stdin=curl.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert curl.stdout is not None
    curl.stdout.close()  # tshark holds the pipe now
    try:
        wait_for(lambda: " 200" in (tmp_path / "headers").read_text(), 10, "curl's answer")
        viewer = Watch(url, lab["api_token"], tmp_path / "live.pcapng")
        viewer.start()
        viewer.started.wait(10)
        assert viewer.status == 200
        # At once, before the machines can have heard of the viewers: still in the stream.
        send_udp(lab, 7100, 5)
        watched(lab, [viewer])
        send_udp(lab, 7000, 20)  # 20 to each host: 20 through each machine
        with lab.client() as c:
            assert c.put(f"/pcaps/{pcap['id']}/stop").status_code == 200
        done = lab.wait_end(pcap["id"])
        assert done["status"] == "success"
        viewer.join(15)
        out, err = piped.communicate(timeout=15)
    finally:
        for proc in (curl, piped):
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
    assert not viewer.is_alive() and viewer.error is None  # the stream ended by itself

    in_bucket = Counter(k[4] for k, n in captured(lab, pcap["id"]).items() for _ in range(n))
    assert in_bucket[7000] == 40
    rows = tshark_fields(tmp_path / "live.pcapng", *FIELDS)
    piped_rows = [line.split(",") for line in out.splitlines()]
    for got in (rows, piped_rows):
        mine = [r for r in got if r[2] == "7000"]
        assert Counter(r[0] for r in mine) == {"ord01": 20, "ord02": 20}, err
        first = [r for r in got if r[2] == "7100"]
        assert Counter(r[0] for r in first) == {"ord01": 5, "ord02": 5}
        assert {r[1] for r in mine} == {"edgepcap ORD ord01", "edgepcap ORD ord02"}
        assert {r[3] for r in got} == {"0x00000001"}  # all arrived at the machines
        # Nothing in the stream that the capture did not keep.
        assert len(got) <= done["packets_captured"]
    assert b"capture ended: success" in viewer.data


@pytest.fixture(scope="module")
def pg_lab(
    private_postgres: Postgres, tmp_path_factory: pytest.TempPathFactory, s3_server: str
) -> Iterator[tuple[Lab, str]]:
    database = private_postgres.new_database()
    with running_lab(tmp_path_factory.mktemp("livelab"), s3_server, database) as lab:
        yield lab, database


def test_a_viewer_on_another_api_process_gets_the_packets(pg_lab, tmp_path):
    lab, database = pg_lab
    # A second API process on the same PostgreSQL: the agents talk to the lab's, the
    # viewer to this one; copies cross over the relay, never through the database.
    other = start_server(tmp_path / "other", database, {"EDGEPCAP_ACCESS_LOG": "0"})
    try:
        pcap = lab.start_full(filter_v1={"protocol": 17})
        viewer = Watch(stream_url(other.url, lab, pcap["id"]), lab["api_token"], tmp_path / "s")
        viewer.start()
        viewer.started.wait(10)
        assert viewer.status == 200
        watched(lab, [viewer])
        send_udp(lab, 7000, 10)
        with lab.client() as c:
            assert c.put(f"/pcaps/{pcap['id']}/stop").status_code == 200
        assert lab.wait_end(pcap["id"])["status"] == "success"
        viewer.join(15)
        assert not viewer.is_alive() and viewer.error is None
    finally:
        stop_server(other)
    rows = tshark_fields(tmp_path / "s", *FIELDS)
    assert Counter(r[0] for r in rows if r[2] == "7000") == {"ord01": 10, "ord02": 10}
    assert os.path.getsize(tmp_path / "s") == len(viewer.data)


def test_the_cli_starts_and_watches_a_capture_into_tshark_and_a_file(lab, tmp_path):
    env = {
        **os.environ,
        "EDGEPCAP_API": lab["api"],
        "EDGEPCAP_ACCOUNT": lab["account_id"],
        "EDGEPCAP_TOKEN": lab["api_token"],
    }
    create_argv = [EDGEPCAP, "pcaps", "create", "--type", "full", "--time-limit", "8"]
    create_argv += ["--colo", "ORD", "--destination", lab["destination_conf"], "--proto", "17"]
    # `create --watch | tshark -l -r -`: tshark prints each packet as it comes.
    create = subprocess.Popen(
        [*create_argv, "--watch"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    fields = ["-e", "frame.interface_name", "-e", "udp.dstport"]
    tshark = subprocess.Popen(
        ["tshark", "-l", "-r", "-", "-T", "fields", "-E", "separator=,", *fields],
        stdin=create.stdout,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert create.stdout is not None and tshark.stdout is not None
    create.stdout.close()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(tshark.stdout), daemon=True)
    reader.start()
    watch = None
    try:
        flowing = {"ord01,6000\n", "ord02,6000\n"}
        until(lab, lambda: flowing <= set(lines), "packets through tshark from both machines")
        with lab.client() as c:
            pcap_id = c.get("/pcaps").json()["result"][0]["id"]
        # A second viewer, `pcaps watch -o FILE`, from the moment its file begins.
        second = tmp_path / "watched.pcapng"
        watch = subprocess.Popen([EDGEPCAP, "pcaps", "watch", pcap_id, "-o", str(second)], env=env)
        wait_for(lambda: second.exists() and second.stat().st_size > 0, 10, "the second viewer")
        send_udp(lab, 7200, 10)
        _, err = create.communicate(timeout=30)
        tshark.wait(30)
        reader.join(10)
        assert watch.wait(30) == 0
    finally:
        for proc in (create, tshark, watch):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert create.returncode == 0, err
    assert b"the capture ended" in err
    assert Counter(line for line in lines if ",7200" in line) == {
        "ord01,7200\n": 10,
        "ord02,7200\n": 10,
    }
    rows = tshark_fields(second, "frame.interface_name", "udp.dstport")
    assert Counter(r[0] for r in rows if r[1] == "7200") == {"ord01": 10, "ord02": 10}
