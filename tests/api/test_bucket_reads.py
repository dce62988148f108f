"""Downloads and previews of full captures read only what the machines reported, below the
bucket root without following links, within caps, and a bounded number at once per account.

Machines of colo LAX are driven through the agent protocol: each reports its part done
with the object it was told to write, and the test puts that file into the bucket as the
agent would have.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from edgepcap.formats.pcapfile import LINKTYPE_ETHERNET, LINKTYPE_RAW, Packet, global_header, record
from tests.support.api import error_of, full
from tests.support.packets import MACHINE_FIELDS, tshark_fields, udp
from tests.support.processes import wait_for
from tests.support.servers import register_machine

MAX_OBJECTS = 2
MAX_BYTES = 32 << 20
SERVER_ENV = {
    "EDGEPCAP_READ_MAX_OBJECTS": str(MAX_OBJECTS),
    "EDGEPCAP_READ_MAX_BYTES": str(MAX_BYTES),
    "EDGEPCAP_READS_PER_ACCOUNT": "1",
}
LAX = ("lax01", "lax02", "lax03")


@pytest.fixture(scope="module")
def lax(stack):
    machines = {name: register_machine(stack.server, "LAX", name) for name in LAX}
    yield machines
    for m in machines.values():
        m.stop()


def pcap_file(count: int, size: int, fill: bytes = b"p", linktype: int = LINKTYPE_RAW) -> bytes:
    body = (fill * size)[:size]
    return global_header(linktype) + b"".join(
        record(Packet(ts_ns=(i + 1) * 1_000_000, orig_len=size, data=body)) for i in range(count)
    )


def ended(
    stack, lax, acct, colo: str = "lax01", failed: tuple[str, ...] = (), outbound=None, old=()
) -> tuple[str, Path]:
    """A full capture of `acct` on `colo` whose machines all reported: (id, bucket dir);
    `outbound`: the runs of packets each machine sent itself; the machines in `old` say
    nothing of directions, as agents from before them."""
    conf = stack.validated_bucket(acct)
    with stack.client(acct) as c:
        r = c.post("/pcaps", json=full(conf, colo_name=colo))
        assert r.status_code == 200, r.text
        pcap_id = r.json()["result"]["id"]
    for name in LAX if colo == "LAX" else (colo,):
        runs = (outbound or {}).get(name)
        known = None if name in old else 1 << 40
        lax[name].finish(pcap_id, done=name not in failed, outbound=runs, known=known)
    return pcap_id, Path(conf.removeprefix("file://"))


def put(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_symlinked_object_or_machine_folder_is_not_read(stack, lax):
    victim, acct = stack.account(), stack.account()
    secret = pcap_file(3, 200, b"SECRET-OF-ANOTHER-TENANT ")
    victim_root = Path(stack.validated_bucket(victim).removeprefix("file://"))
    target = put(victim_root, "lax01/pcap_theirs.pcap", secret)

    pcap_id, root = ended(stack, lax, acct)
    (root / "lax01").mkdir()
    (root / "lax01" / f"pcap_{pcap_id}.pcap").symlink_to(target)
    with stack.client(acct) as c:
        for what in ("download", "preview"):
            r = c.get(f"/pcaps/{pcap_id}/{what}")
            assert r.status_code == 502, r.text
            code, message = error_of(r)
            assert code == 1302 and "is a symbolic link" in message, message
            assert b"SECRET" not in r.content

    # The machine's folder a link to a folder holding a file of that name: not read either.
    pcap_id, root = ended(stack, lax, acct)
    put(victim_root, f"lax01/pcap_{pcap_id}.pcap", secret)
    os.rename(root / "lax01", root / "lax01.before")
    (root / "lax01").symlink_to(victim_root / "lax01")
    with stack.client(acct) as c:
        for what in ("download", "preview"):
            r = c.get(f"/pcaps/{pcap_id}/{what}")
            assert r.status_code == 502, r.text
            assert "'lax01' is a symbolic link" in error_of(r)[1]
            assert b"SECRET" not in r.content


def test_an_object_that_is_no_regular_file_is_not_opened(stack, lax):
    acct = stack.account()
    pcap_id, root = ended(stack, lax, acct)
    (root / "lax01").mkdir()
    os.mkfifo(root / "lax01" / f"pcap_{pcap_id}.pcap")  # reading it would block forever
    with stack.client(acct) as c:
        for what in ("download", "preview"):
            r = c.get(f"/pcaps/{pcap_id}/{what}")
            assert r.status_code == 502, r.text
            code, message = error_of(r)
            assert code == 1302 and f"'lax01/pcap_{pcap_id}.pcap' is not a regular file" in message


def test_only_the_objects_the_machines_reported_are_read(stack, lax):
    acct = stack.account()
    pcap_id, root = ended(stack, lax, acct, colo="LAX", failed=("lax02", "lax03"))
    mine = pcap_file(4, 100, b"m")
    put(root, f"lax01/pcap_{pcap_id}.pcap", mine)
    # Files named like a part of the capture, which no machine reported.
    put(root, f"lax02/pcap_{pcap_id}.pcap", pcap_file(5, 100, b"x"))
    put(root, f"planted/pcap_{pcap_id}.pcap", pcap_file(6, 100, b"y"))
    put(root, f"a/b/pcap_{pcap_id}.pcap", pcap_file(7, 100, b"z"))
    with stack.client(acct) as c:
        r = c.get(f"/pcaps/{pcap_id}/download")
        assert r.status_code == 200, r.text
        assert r.content == mine
        r = c.get(f"/pcaps/{pcap_id}/preview")
        assert r.status_code == 200, r.text
        assert len(r.json()["result"]["packets"]) == 4


def test_files_of_different_link_types_are_refused_before_the_download(stack, lax):
    acct = stack.account()
    pcap_id, root = ended(stack, lax, acct, colo="LAX", failed=("lax03",))
    put(root, f"lax01/pcap_{pcap_id}.pcap", global_header(LINKTYPE_RAW))
    put(root, f"lax02/pcap_{pcap_id}.pcap", global_header(LINKTYPE_ETHERNET))
    with stack.client(acct) as c:
        for what in ("download", "preview"):
            r = c.get(f"/pcaps/{pcap_id}/{what}")
            assert r.status_code == 502, r.text
            assert "different link types [1, 101]" in error_of(r)[1]


def test_a_download_reads_at_most_the_capped_files_and_bytes(stack, lax):
    acct = stack.account()
    pcap_id, root = ended(stack, lax, acct, colo="LAX")
    for name in LAX:
        put(root, f"{name}/pcap_{pcap_id}.pcap", pcap_file(1, 100))
    with stack.client(acct) as c:
        for what in ("download", "preview"):
            r = c.get(f"/pcaps/{pcap_id}/{what}")
            assert r.status_code == 502, r.text
            code, message = error_of(r)
            assert code == 1302 and f"3 files, more than the {MAX_OBJECTS}" in message, message

    pcap_id, root = ended(stack, lax, acct)
    big = put(root, f"lax01/pcap_{pcap_id}.pcap", pcap_file(1, 100))
    os.truncate(big, MAX_BYTES + 1)  # sparse: costs no disk
    with stack.client(acct) as c:
        r = c.get(f"/pcaps/{pcap_id}/download")
        assert r.status_code == 502, r.text
        code, message = error_of(r)
        assert code == 1302 and f"more than the {MAX_BYTES}" in message, message
        assert f"lax01/pcap_{pcap_id}.pcap from the bucket directly" in message


def test_one_account_has_a_bounded_number_of_reads_at_once(stack, lax):
    acct, other = stack.account(), stack.account()
    pcap_id, root = ended(stack, lax, acct)
    # Far more than the socket buffers hold: the download stays open while unread.
    data = put(root, f"lax01/pcap_{pcap_id}.pcap", pcap_file(400, 60_000)).read_bytes()
    theirs, their_root = ended(stack, lax, other)
    put(their_root, f"lax01/pcap_{theirs}.pcap", pcap_file(2, 100))
    with stack.client(acct) as c, stack.client(other) as o:
        with c.stream("GET", f"/pcaps/{pcap_id}/download") as held:
            assert held.status_code == 200
            for what in ("download", "preview"):
                r = c.get(f"/pcaps/{pcap_id}/{what}")
                assert r.status_code == 429, r.text
                code, message = error_of(r)
                assert code == 1203 and "at most 1 at once" in message, message
                assert r.headers["Retry-After"] == "5"
            # Another account is not held up.
            assert o.get(f"/pcaps/{theirs}/download").status_code == 200
        # The client went away: its slot is free again.
        r = wait_for(
            lambda: (r := c.get(f"/pcaps/{pcap_id}/download")).status_code == 200 and r,
            10,
            "the abandoned download to free its slot",
        )
        assert r.content == data
        assert c.get(f"/pcaps/{pcap_id}/preview").status_code == 200


def _packets(machine: int, count: int, first_ns: int) -> bytes:
    """A machine's PCAP file: `count` UDP packets to port 5000 + machine, 1 ms apart."""
    return global_header() + b"".join(
        record(
            Packet(
                first_ns + i * 1_000_000,
                60,
                udp("198.51.100.1", "203.0.113.9", 40000 + i, 5000 + machine)[:60].ljust(60, b"\0"),
            )
        )
        for i in range(count)
    )


def test_a_pcapng_download_has_one_named_interface_per_machine(stack, lax, tmp_path):
    acct = stack.account()
    # lax01 sent its second packet itself; lax02 forwarded both of its own.
    pcap_id, root = ended(
        stack, lax, acct, colo="LAX", failed=("lax03",), outbound={"lax01": [[1, 2]]}
    )
    t0 = 1_700_000_000_000_000_000
    put(root, f"lax01/pcap_{pcap_id}.pcap", _packets(1, 3, t0))
    put(root, f"lax02/pcap_{pcap_id}.pcap", _packets(2, 2, t0 + 500_000))
    with stack.client(acct) as c:
        plain = c.get(f"/pcaps/{pcap_id}/download")
        by_query = c.get(f"/pcaps/{pcap_id}/download", params={"format": "pcapng"})
        by_accept = c.get(f"/pcaps/{pcap_id}/download", headers={"Accept": "application/x-pcapng"})
        bad = c.get(f"/pcaps/{pcap_id}/download", params={"format": "pcapng2"})
    assert (
        plain.status_code == 200 and plain.headers["content-type"] == "application/vnd.tcpdump.pcap"
    )
    assert plain.content[:4] == b"\xd4\xc3\xb2\xa1"  # PCAP stays the default
    for r in (by_query, by_accept):
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/x-pcapng"
        assert f'filename="pcap_{pcap_id}.pcapng"' in r.headers["content-disposition"]
    assert by_query.content == by_accept.content
    assert bad.status_code == 400 and "format" in error_of(bad)[1]

    path = tmp_path / "merged.pcapng"
    path.write_bytes(by_query.content)
    rows = tshark_fields(path, *MACHINE_FIELDS)
    # Merged by time, each packet on the interface of the machine whose file held it, in
    # the direction that machine reported (1 inbound, 2 outbound).
    inbound, outbound = "0x00000001", "0x00000002"
    assert rows == [
        ["lax01", "edgepcap LAX lax01", "5001", inbound],
        ["lax02", "edgepcap LAX lax02", "5002", inbound],
        ["lax01", "edgepcap LAX lax01", "5001", outbound],
        ["lax02", "edgepcap LAX lax02", "5002", inbound],
        ["lax01", "edgepcap LAX lax01", "5001", inbound],
    ]
    info = subprocess.run(
        ["capinfos", str(path)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "Number of packets:   5" in info
    assert f"edgepcap full capture on LAX {pcap_id}; filter: all packets" in info
    # mergecap reads it as a capture file like any other.
    again = tmp_path / "again.pcapng"
    subprocess.run(["mergecap", "-w", str(again), str(path)], check=True, timeout=60)
    assert len(tshark_fields(again, "frame.interface_name")) == 5


def test_packets_of_an_agent_that_says_nothing_of_directions_carry_none(stack, lax, tmp_path):
    acct = stack.account()
    pcap_id, root = ended(stack, lax, acct, old=("lax01",))
    put(root, f"lax01/pcap_{pcap_id}.pcap", _packets(1, 2, 1_700_000_000_000_000_000))
    with stack.client(acct) as c:
        r = c.get(f"/pcaps/{pcap_id}/download", params={"format": "pcapng"})
    assert r.status_code == 200, r.text
    path = tmp_path / "old.pcapng"
    path.write_bytes(r.content)
    # Unknown, not inbound: the agent could not tell its own packets apart.
    assert tshark_fields(path, "frame.interface_name", "frame.packet_flags_direction") == [
        ["lax01", ""],
        ["lax01", ""],
    ]
