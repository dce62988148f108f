"""The live hub in one process: pieces turned into pcapng once per capture, bounded viewer
queues, losses told in interface statistics, late pieces, stalled viewers cut off, the
stream's end and a database blip (no server, no kernel)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess

import pytest

from edgepcap.api import live
from edgepcap.api.live import Hub, Piece, Stream, follow
from edgepcap.formats.pcapfile import Packet, record
from tests.support.packets import tshark_fields, udp

T0 = 1_700_000_000_000_000_000


def piece(machine: str, first: int, count: int, runs=(), known=None) -> Piece:
    records = b"".join(
        record(
            Packet(
                T0 + (first + i) * 1_000_000,
                60,
                udp("198.51.100.1", "203.0.113.9", 1000 + first + i, 53),
            )
        )
        for i in range(count)
    )
    return Piece(machine, "ORD", first, count, records, [list(r) for r in runs], known)


def run(viewer, feed, ends_after: int = 2, running=None) -> bytes:
    """The viewer's whole stream while `feed(step)` publishes; the capture ends after
    `ends_after` looks at it."""
    looks = 0

    async def still():
        nonlocal looks
        looks += 1
        return looks <= ends_after, "success"

    async def main() -> bytes:
        out = bytearray()
        step = 0
        stream = Stream("edgepcap full capture on ORD x", viewer.channel)
        async for chunk in follow(viewer, stream, running or still):
            out += chunk
            feed(step)
            step += 1
        return bytes(out)

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(live, "FLUSH_EVERY", 0.01)
    monkeypatch.setattr(live, "CHECK_EVERY", 0.02)
    monkeypatch.setattr(live, "END_GRACE", 0.05)


def test_packets_of_each_machine_on_its_interface_with_directions(tmp_path):
    hub = Hub()
    viewer = hub.add("x")
    pieces = {
        0: piece("ord01", 0, 3, runs=[(1, 2)]),
        1: piece("ord02", 0, 2),
        2: piece("ord01", 3, 2, known=4),  # the machine lost track of directions at 4
    }

    def feed(step):
        if step in pieces:
            hub.publish("x", pieces[step])

    path = tmp_path / "live.pcapng"
    path.write_bytes(run(viewer, feed, ends_after=4))
    rows = tshark_fields(
        path, "frame.interface_name", "udp.srcport", "frame.packet_flags_direction"
    )
    assert rows == [
        ["ord01", "1000", "0x00000001"],
        ["ord01", "1001", "0x00000002"],
        ["ord01", "1002", "0x00000001"],
        ["ord02", "1000", "0x00000001"],
        ["ord02", "1001", "0x00000001"],
        ["ord01", "1003", "0x00000001"],
        ["ord01", "1004", ""],  # unknown, not guessed
    ]
    assert b"capture ended: success" in path.read_bytes()
    assert hub.remove(viewer)  # its last viewer


def test_a_viewer_who_comes_later_gets_the_interfaces_so_far_in_the_same_numbering(tmp_path):
    hub = Hub()
    first = hub.add("x")
    hub.publish("x", piece("ord01", 0, 1))
    hub.publish("x", piece("ord02", 0, 1))
    later = hub.add("x")  # ord01 and ord02 are interfaces 0 and 1 already
    first.take()

    def feed(step):
        if step == 0:
            hub.publish("x", piece("ord02", 1, 1))

    path = tmp_path / "later.pcapng"
    path.write_bytes(run(later, feed))
    assert tshark_fields(path, "frame.interface_name", "udp.srcport") == [["ord02", "1001"]]


def test_a_full_queue_drops_whole_pieces_and_the_viewer_is_told(tmp_path):
    hub = Hub()
    one = len(live._packets(0, piece("ord01", 0, 10)))
    viewer = hub.add("x", limit=2 * one)
    other = hub.add("x")  # another viewer of the capture is not held back

    def feed(step):
        if step == 0:
            for i in range(5):  # before the viewer reads: room for two
                hub.publish("x", piece("ord01", 10 * i, 10))
        if step == 1:
            hub.publish("x", piece("ord01", 70, 10))  # 50..69 lost before the hub
            hub.publish("x", piece("ord01", 60, 10))  # late: not sent (counted already)

    data = run(viewer, feed, ends_after=4)
    assert viewer.dropped == {"ord01": 30 + 20}
    path = tmp_path / "slow.pcapng"
    path.write_bytes(data)
    assert len(tshark_fields(path, "frame.number")) == 30  # 0..19 and 70..79
    dropped = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-X",
            "read_format:MIME Files Format",
            "-T",
            "fields",
            "-e",
            "pcapng.options.option.data.interface.dropped",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # As the losses grew (30 when the queue overflowed, 50 once the gap showed), and the
    # end's statistics repeat the total.
    assert dropped.split() == ["30,50,50"]
    assert len(other.queue) == 6 and other.dropped == {"ord01": 20}  # only the gap


def test_a_viewer_that_stops_reading_is_cut_off_and_its_queue_freed(monkeypatch):
    monkeypatch.setattr(live, "STALLED", 0.05)
    hub = Hub()
    viewer = hub.add("x", limit=len(live._packets(0, piece("ord01", 0, 1))))

    async def running():
        return True, "running"

    async def reader_that_stops() -> None:
        async for _chunk in follow(viewer, Stream("c", viewer.channel), running):
            await asyncio.Event().wait()  # a client that never reads again

    async def main() -> bool:
        task = asyncio.create_task(reader_that_stops())
        await asyncio.sleep(0.01)
        for i in range(10):  # one fits; the rest are dropped, then the viewer is cut
            hub.publish("x", piece("ord01", i, 1))
            await asyncio.sleep(0.02)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)
        return task.cancelled()

    assert asyncio.run(main())
    assert viewer.cut and not viewer.queue and viewer not in viewer.channel.viewers


def test_a_database_blip_does_not_end_the_stream(tmp_path):
    hub = Hub()
    viewer = hub.add("x")
    looks = 0

    async def flaky():
        nonlocal looks
        looks += 1
        if looks <= 3:  # the database away for three looks; copies still come meanwhile
            hub.publish("x", piece("ord01", 2 * looks, 2))
            raise RuntimeError("database down")
        return False, "success"

    def feed(step):
        if step == 0:
            hub.publish("x", piece("ord01", 0, 2))

    path = tmp_path / "blip.pcapng"
    path.write_bytes(run(viewer, feed, running=flaky))
    assert len(tshark_fields(path, "frame.number")) == 8
    assert b"capture ended: success" in path.read_bytes()
