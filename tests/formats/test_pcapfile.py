"""PCAP reading and merging, checked against tshark."""

from __future__ import annotations

import pytest

from edgepcap.formats.pcapfile import Packet, PcapError, Reader, merge
from tests.support.packets import chunks_of, tshark_fields, udp, write_pcap

T0 = 1_790_000_000 * 1_000_000_000


def test_merge_orders_by_time_and_keeps_lengths(tmp_path):
    a = [
        Packet(T0 + i * 2_000_000, 60 + i, udp("198.51.100.1", "203.0.113.1", 1000 + i, 53))
        for i in range(50)
    ]
    b = [
        Packet(
            T0 + i * 2_000_000 + 1_000_000 + 7,
            1500,
            udp("198.51.100.2", "203.0.113.2", 2000 + i, 53),
        )
        for i in range(40)
    ]
    write_pcap(tmp_path / "a.pcap", a)
    write_pcap(tmp_path / "b.pcap", b, nanosecond=True)
    readers = [Reader(chunks_of((tmp_path / n).read_bytes(), 100), n) for n in ("a.pcap", "b.pcap")]
    (tmp_path / "m.pcap").write_bytes(b"".join(merge(readers)))

    rows = tshark_fields(
        tmp_path / "m.pcap",
        "frame.time_epoch",
        "ip.src",
        "udp.srcport",
        "frame.len",
        "frame.cap_len",
    )
    assert len(rows) == 90
    times = [float(r[0]) for r in rows]
    assert times == sorted(times)
    assert sum(r[1] == "198.51.100.1" for r in rows) == 50
    # The nanosecond input keeps its precision in the merged file.
    ns_row = next(r for r in rows if r[1] == "198.51.100.2" and r[2] == "2000")
    assert ns_row[0].endswith("001000007")
    assert {r[3] for r in rows if r[1] == "198.51.100.2"} == {"1500"}
    assert {int(r[4]) for r in rows} == {len(a[0].data)}


def test_merge_of_no_files_is_a_valid_empty_pcap(tmp_path):
    (tmp_path / "e.pcap").write_bytes(b"".join(merge([])))
    assert tshark_fields(tmp_path / "e.pcap", "frame.number") == []


@pytest.mark.parametrize(
    ("mangle", "needle"),
    [
        (lambda d: d[:10], "too short"),
        (lambda d: b"\x00" * 4 + d[4:], "not a PCAP file"),
        (lambda d: d[:-5], "truncated packet data"),
        (lambda d: d[: 24 + 8], "truncated record header"),
        (lambda d: d[:24] + d[24:32] + b"\xff\xff\xff\x7f" + d[36:], "claims"),
    ],
)
def test_corrupt_files_give_a_clear_error(tmp_path, mangle, needle):
    write_pcap(tmp_path / "ok.pcap", [Packet(T0, 60, udp("198.51.100.1", "203.0.113.1", 1, 2))] * 3)
    data = mangle((tmp_path / "ok.pcap").read_bytes())
    with pytest.raises(PcapError, match=needle):
        list(Reader(chunks_of(data, 7), "bad.pcap"))
