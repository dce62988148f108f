"""The live hub in one process: bounded viewer queues, losses told in interface
statistics, stalled viewers disconnected, the stream's end (no server, no kernel)."""

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


def piece(machine: str, first: int, count: int, runs=()) -> Piece:
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
    return Piece(machine, "ORD", first, count, records, [list(r) for r in runs])


def run(hub: Hub, viewer, feed, ends_after: int = 2):
    """The viewer's whole stream while `feed(step)` publishes; the capture ends after
    `ends_after` looks at it."""
    looks = 0

    async def running():
        nonlocal looks
        looks += 1
        return looks <= ends_after, "success"

    async def main() -> bytes:
        out = bytearray()
        step = 0
        async for chunk in follow(viewer, Stream("edgepcap full capture on ORD x"), running):
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
    pieces = {0: piece("ord01", 0, 3, runs=[(1, 2)]), 1: piece("ord02", 0, 2)}

    def feed(step):
        if step in pieces:
            hub.publish("x", pieces[step])

    path = tmp_path / "live.pcapng"
    path.write_bytes(run(hub, viewer, feed))
    rows = tshark_fields(
        path, "frame.interface_name", "udp.srcport", "frame.packet_flags_direction"
    )
    assert rows == [
        ["ord01", "1000", "0x00000001"],
        ["ord01", "1001", "0x00000002"],
        ["ord01", "1002", "0x00000001"],
        ["ord02", "1000", "0x00000001"],
        ["ord02", "1001", "0x00000001"],
    ]
    assert b"capture ended: success" in path.read_bytes()
    assert hub.remove(viewer)  # its last viewer


def test_a_full_queue_drops_whole_pieces_and_the_viewer_is_told(tmp_path):
    hub = Hub()
    one = len(piece("ord01", 0, 10).records)
    viewer = hub.add("x", limit=2 * one)
    other = hub.add("x")  # another viewer of the capture is not held back

    def feed(step):
        if step == 0:
            for i in range(5):  # before the viewer reads: room for two
                hub.publish("x", piece("ord01", 10 * i, 10))
        if step == 1:
            hub.publish("x", piece("ord01", 70, 10))  # 50..69 lost before the hub

    data = run(hub, viewer, feed, ends_after=4)
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


def test_a_viewer_that_stops_reading_is_disconnected(monkeypatch):
    monkeypatch.setattr(live, "STALLED", 0.05)
    hub = Hub()
    viewer = hub.add("x", limit=len(piece("ord01", 0, 1).records))

    async def running():
        return True, "running"

    async def reader_that_stops() -> None:
        async for _chunk in follow(viewer, Stream("c"), running):
            await asyncio.Event().wait()  # a client that never reads again

    async def main() -> tuple[bool, dict[str, int]]:
        task = asyncio.create_task(reader_that_stops())
        await asyncio.sleep(0.01)
        for i in range(10):  # one fits; the rest are dropped, then the viewer is cut
            hub.publish("x", piece("ord01", i, 1))
            await asyncio.sleep(0.02)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)
        return task.cancelled(), dict(viewer.dropped)

    cancelled, dropped = asyncio.run(main())
    assert cancelled and viewer.cut
    assert dropped == {"ord01": 9}
