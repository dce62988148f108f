"""pcapng writing, read back with tshark, capinfos, mergecap and python-pcapng."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pcapng as pypcapng
import pytest
from pcapng import blocks

from edgepcap.formats import pcapng
from edgepcap.formats.pcapfile import Packet, Reader, global_header, record
from tests.support.packets import chunks_of, tshark_fields, udp

# python-pcapng 2.1.1 warns about its own option definitions (if_tsresol has no type).
pytestmark = pytest.mark.filterwarnings("ignore:Field type should not be:DeprecationWarning")

T0 = 1_790_000_000 * 1_000_000_000
ROW_FIELDS = (
    "frame.interface_id",
    "frame.interface_name",
    "frame.interface_description",
    "frame.packet_flags_direction",
    "frame.time_epoch",
    "ip.src",
    "ipv6.src",
    "udp.srcport",
    "frame.len",
    "frame.cap_len",
)


def pcap_bytes(packets: list[Packet], nanosecond: bool) -> bytes:
    return global_header(nanosecond=nanosecond) + b"".join(record(p, nanosecond) for p in packets)


def source(
    name: str,
    packets: list[Packet],
    nanosecond: bool,
    direction: Callable[[Packet], int | None] | None = None,
) -> pcapng.Source:
    # Read in 100-byte chunks, as from an object store: records straddle them.
    reader = Reader(chunks_of(pcap_bytes(packets, nanosecond), 100), f"{name}.pcap")
    return pcapng.Source(name, f"edgepcap {name[:3].upper()} {name}", reader, direction)


def epoch(ts_ns: int) -> str:
    """frame.time_epoch as tshark prints it: nine digits, whatever the resolution."""
    return f"{ts_ns // 10**9}.{ts_ns % 10**9:09d}"


def write(path: Path, chunks: Iterator[bytes]) -> Path:
    path.write_bytes(b"".join(chunks))
    return path


def capinfos(path: Path) -> str:
    out = subprocess.run(["capinfos", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def capinfos_interfaces(text: str) -> list[dict[str, str]]:
    """capinfos's "Interface #i info:" sections, as name = value."""
    found = []
    for section in text.split("Interface #")[1:]:
        lines = [line.strip() for line in section.splitlines()[1:] if " = " in line]
        found.append(dict(line.split(" = ", 1) for line in lines))
    return found


def file_fields(path: Path, *fields: str) -> list[list[str]]:
    """Fields of tshark's dissection of the file's own blocks (the whole file is one
    frame): each field's occurrences in the order of the blocks."""
    args = ["tshark", "-r", str(path), "-X", "read_format:MIME Files Format", "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    (line,) = out.stdout.splitlines()
    return [column.split(",") if column else [] for column in line.split("\t")]


def read_blocks(path: Path) -> list[object]:
    with path.open("rb") as fh:
        return list(pypcapng.FileScanner(fh))


def units(block: blocks.EnhancedPacket | blocks.InterfaceStatistics) -> int:
    return (block.timestamp_high << 32) | block.timestamp_low


def two_sites() -> tuple[list[Packet], list[Packet]]:
    """ord01's IPv4 packets stamped to the nanosecond, of odd and even lengths; ams02's
    IPv6 ones to the microsecond, cut short (original length 100 more), some stamped the
    same instant as one of ord01's."""
    ord01 = [
        Packet(
            T0 + i * 1_000_000 + (7 if i % 2 else 0),
            28 + i,
            udp("198.51.100.1", "203.0.113.1", 1000 + i, 53, b"o" * i),
        )
        for i in range(40)
    ]
    ams02 = [
        Packet(T0 + i * 1_500_000, 180, udp("2001:db8::2", "2001:db8::1", 2000 + i, 53))
        for i in range(30)
    ]
    return ord01, ams02


def expected_rows(sources: list[tuple[str, list[Packet]]]) -> list[list[str]]:
    """What tshark shows: every packet by time, ties in source order."""
    tagged = [
        (p.ts_ns, i, n, name, p) for i, (name, ps) in enumerate(sources) for n, p in enumerate(ps)
    ]
    rows = []
    for ts, i, _, name, p in sorted(tagged, key=lambda t: t[:3]):
        v4 = p.data[0] >> 4 == 4
        src = "198.51.100.1" if v4 else "2001:db8::2"
        sport = struct.unpack("!H", p.data[20 if v4 else 40 :][:2])[0]
        rows.append(
            [
                str(i),
                name,
                f"edgepcap {name[:3].upper()} {name}",
                "",  # no direction given: no epb_flags
                epoch(ts),
                src if v4 else "",
                "" if v4 else src,
                str(sport),
                str(p.orig_len),
                str(len(p.data)),
            ]
        )
    return rows


def test_sites_are_named_interfaces_merged_by_time_in_tshark(tmp_path):
    ord01, ams02 = two_sites()
    comment = "Capture of 2 machines — São Paulo test"
    sources = [
        source("ord01", ord01, nanosecond=True),
        source("ams02", ams02, nanosecond=False),
        source("fra03", [], nanosecond=True),  # header only: still an interface
    ]
    path = write(tmp_path / "c.pcapng", pcapng.from_pcaps(sources, comment))

    rows = tshark_fields(path, *ROW_FIELDS)
    assert rows == expected_rows([("ord01", ord01), ("ams02", ams02)])
    # The ties: ord01's packet first (it is interface 0), both at the same instant.
    assert [(r[1], r[4]) for r in rows[:2]] == [("ord01", epoch(T0)), ("ams02", epoch(T0))]
    assert rows[2][4] == epoch(T0 + 1_000_007)  # a nanosecond stamp kept to the nanosecond

    info = capinfos(path)
    assert "Number of packets:   70\n" in info
    assert "Number of interfaces in file: 3\n" in info
    assert f"Capture comment:     {comment}\n" in info
    assert "Capture application: edgepcap\n" in info
    ifaces = capinfos_interfaces(info)
    assert [(i["Name"], i["Description"], i["Number of packets"]) for i in ifaces] == [
        ("ord01", "edgepcap ORD ord01", "40"),
        ("ams02", "edgepcap AMS ams02", "30"),
        ("fra03", "edgepcap FRA fra03", "0"),
    ]
    assert [i["Time precision"] for i in ifaces] == [
        "nanoseconds (9)",
        "microseconds (6)",
        "nanoseconds (9)",
    ]
    assert {i["Encapsulation"] for i in ifaces} == {"Raw IP (7 - rawip)"}


def test_python_pcapng_reads_the_same_blocks(tmp_path):
    ord01, ams02 = two_sites()
    sources = [source("ord01", ord01, True), source("ams02", ams02, False)]
    path = write(tmp_path / "c.pcapng", pcapng.from_pcaps(sources, "a comment"))

    shb, *idbs = [b for b in read_blocks(path) if not isinstance(b, blocks.EnhancedPacket)]
    assert isinstance(shb, blocks.SectionHeader)
    assert (shb.version, shb.length, shb.endianness) == ((1, 0), -1, "<")
    assert shb.options["opt_comment"] == "a comment"
    assert shb.options["shb_userappl"] == "edgepcap"
    assert [
        (i.link_type, i.snaplen, i.options["if_name"], i.options["if_tsresol"]) for i in idbs
    ] == [(101, 262_144, "ord01", b"\x09"), (101, 262_144, "ams02", b"\x06")]

    epbs = [b for b in read_blocks(path) if isinstance(b, blocks.EnhancedPacket)]
    by_time = sorted(
        [(p.ts_ns, 0, p) for p in ord01] + [(p.ts_ns, 1, p) for p in ams02], key=lambda t: t[:2]
    )
    assert [(e.interface_id, units(e), e.packet_len, e.packet_data) for e in epbs] == [
        (i, ts if i == 0 else ts // 1000, p.orig_len, p.data) for ts, i, p in by_time
    ]
    assert not any("epb_flags" in e.options for e in epbs)


def test_directions_are_epb_flags_shown_by_tshark(tmp_path):
    ord01, ams02 = two_sites()
    # ord01 says even source ports came in and odd ones went out; ams02 says nothing.
    sources = [
        source(
            "ord01", ord01, True, lambda p: pcapng.OUTBOUND if p.data[21] % 2 else pcapng.INBOUND
        ),
        source("ams02", ams02, False),
    ]
    path = write(tmp_path / "d.pcapng", pcapng.from_pcaps(sources))

    rows = tshark_fields(
        path, "frame.interface_name", "udp.srcport", "frame.packet_flags_direction"
    )
    assert len(rows) == 70
    for name, sport, direction in rows:
        if name == "ams02":
            assert direction == ""
        else:
            assert direction == ("0x00000002" if int(sport) % 2 else "0x00000001"), (
                sport,
                direction,
            )
    flags = [
        e.options["epb_flags"].inout
        for e in read_blocks(path)
        if isinstance(e, blocks.EnhancedPacket) and e.interface_id == 0
    ]
    assert flags == ["inbound", "outbound"] * 20

    # One block written alone: direction 0 ("not known") is a flag too, unlike None.
    one = pcapng.section_header() + pcapng.interface_block(101, 65535, "x", "y", True)
    one += pcapng.packet_block(0, T0, ord01[1].data, 29, direction=0)
    (row,) = tshark_fields(write(tmp_path / "one.pcapng", iter([one])), "frame.packet_flags")
    assert row == ["0x00000000"]
    with pytest.raises(ValueError, match="direction 3"):
        pcapng.packet_block(0, T0, b"x", 1, direction=3)


def test_odd_lengths_and_a_64k_packet_are_padded(tmp_path):
    # IPv4 packets of 29 to 32 bytes (every padding), a 64 KiB one, an odd IPv6 one.
    packets = [
        Packet(T0 + n, 28 + n, udp("198.51.100.1", "203.0.113.1", 1000 + n, 53, b"p" * n))
        for n in range(1, 5)
    ]
    packets.append(
        Packet(T0 + 5, 65535, udp("198.51.100.1", "203.0.113.1", 1005, 53, b"b" * 65507))
    )
    packets.append(Packet(T0 + 6, 51, udp("2001:db8::2", "2001:db8::1", 1006, 53, b"s" * 3)))
    path = write(tmp_path / "p.pcapng", pcapng.from_pcaps([source("ord01", packets, True)]))

    rows = tshark_fields(path, "frame.cap_len", "udp.srcport", "udp.length", "frame.time_epoch")
    assert rows == [
        [str(len(p.data)), str(1000 + n), str(len(p.data) - (20 if n < 6 else 40)), epoch(p.ts_ns)]
        for n, p in enumerate(packets, 1)
    ]
    assert rows[4][0] == "65535"
    epbs = [b for b in read_blocks(path) if isinstance(b, blocks.EnhancedPacket)]
    assert [e.packet_data for e in epbs] == [p.data for p in packets]


def test_empty_sources_and_no_sources(tmp_path):
    sources = [source("ord01", [], True), source("ams02", [], False)]
    path = write(tmp_path / "e.pcapng", pcapng.from_pcaps(sources, "nothing seen"))
    assert tshark_fields(path, "frame.number") == []
    info = capinfos(path)
    assert "Number of packets:   0\n" in info
    assert "Capture comment:     nothing seen\n" in info
    assert [i["Name"] for i in capinfos_interfaces(info)] == ["ord01", "ams02"]

    none = write(tmp_path / "n.pcapng", pcapng.from_pcaps([], "no machine"))
    assert tshark_fields(none, "frame.number") == []
    assert "Capture comment:     no machine\n" in capinfos(none)


def test_statistics_block_tells_tshark_what_was_dropped(tmp_path):
    ord01, ams02 = two_sites()
    end = T0 + 60 * 10**9 + 5
    data = b"".join(
        pcapng.from_pcaps([source("ord01", ord01, True), source("ams02", ams02, False)], "live")
    )
    data += pcapng.statistics_block(
        0, end, 42, ifrecv=82, start_ns=T0, end_ns=end, comment="42 not sent to the viewer"
    )
    data += pcapng.statistics_block(1, end, 0, nanosecond=False)
    path = tmp_path / "s.pcapng"
    path.write_bytes(data)

    # Packets read as before; capinfos counts the statistics but does not print them.
    assert len(tshark_fields(path, "frame.number")) == 70
    assert [i["Number of stat entries"] for i in capinfos_interfaces(capinfos(path))] == ["1", "1"]
    # tshark's dissection of the file's blocks shows isb_ifdrop as "Number of Dropped Packets".
    dropped, received, comments = file_fields(
        path,
        "pcapng.options.option.data.interface.dropped",
        "pcapng.options.option.data.interface.received",
        "pcapng.options.option.data.comment",
    )
    assert (dropped, received) == (["42", "0"], ["82"])
    assert comments == ["live", "42 not sent to the viewer"]

    isbs = [b for b in read_blocks(path) if isinstance(b, blocks.InterfaceStatistics)]
    assert [(i.interface_id, units(i), i.options["isb_ifdrop"]) for i in isbs] == [
        (0, end, 42),
        (1, end // 1000, 0),
    ]
    # isb_starttime is two 32-bit halves, upper first (python-pcapng reads it as one u64).
    start = struct.pack("<Q", isbs[0].options["isb_starttime"])
    assert struct.unpack("<II", start) == (T0 >> 32, T0 & 0xFFFFFFFF)
    assert "isb_starttime" not in isbs[1].options


def test_mergecap_merges_two_downloads(tmp_path):
    ord01, ams02 = two_sites()
    fra03 = [
        Packet(T0 + i * 700_001, 60, udp("198.51.100.3", "203.0.113.1", 3000 + i, 53))
        for i in range(25)
    ]
    a = write(
        tmp_path / "a.pcapng",
        pcapng.from_pcaps(
            [source("ord01", ord01, True), source("ams02", ams02, False)], "download A"
        ),
    )
    b = write(
        tmp_path / "b.pcapng", pcapng.from_pcaps([source("fra03", fra03, True)], "download B")
    )
    merged = tmp_path / "m.pcapng"
    subprocess.run(["mergecap", "-w", str(merged), str(a), str(b)], check=True, timeout=60)

    rows = tshark_fields(merged, "frame.interface_name", "frame.time_epoch", "ip.src")
    assert len(rows) == 95
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    want = [("ord01", epoch(p.ts_ns)) for p in ord01] + [("ams02", epoch(p.ts_ns)) for p in ams02]
    want += [("fra03", epoch(p.ts_ns)) for p in fra03]
    assert sorted((r[0], r[1]) for r in rows) == sorted(want)
    assert {r[2] for r in rows if r[0] == "fra03"} == {"198.51.100.3"}
    info = capinfos(merged)
    assert [i["Name"] for i in capinfos_interfaces(info)] == ["ord01", "ams02", "fra03"]
    # mergecap keeps the first file's comment and notes the merge after it (4.0 drops B's).
    assert "Capture comment:     download A" in info


def test_output_is_streamed_in_batches_as_sources_are_read(tmp_path):
    packets = [
        Packet(T0 + i * 1000, 200, udp("198.51.100.1", "203.0.113.1", i % 60000, 53, b"z" * 172))
        for i in range(2000)
    ]
    whole = pcap_bytes(packets, nanosecond=True)
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for chunk in chunks_of(whole, 4096):
            pulled.append(len(chunk))
            yield chunk

    out = pcapng.from_pcap(Reader(chunks()), "ord01", "edgepcap ORD ord01", "streamed")
    assert isinstance(out, Iterator)
    head = next(out)
    assert head[:4] == struct.pack("<I", pcapng.SHB)
    assert len(pulled) == 1  # only the chunk the PCAP header was read from
    batch = next(out)
    epb = 32 + 200  # an EPB of one 200-byte packet
    assert pcapng.CHUNK <= len(batch) < pcapng.CHUNK + epb
    assert sum(pulled) < len(batch) + 2 * 4096  # read as far as written, and a chunk more
    rest = list(out)
    assert all(len(b) >= pcapng.CHUNK for b in rest[:-1])
    assert len(rest) >= 5

    path = tmp_path / "s.pcapng"
    path.write_bytes(head + batch + b"".join(rest))
    rows = tshark_fields(path, "frame.interface_name", "frame.time_epoch")
    assert rows == [["ord01", epoch(p.ts_ns)] for p in packets]
    kinds = [type(b) for b in read_blocks(tmp_path / "s.pcapng")]
    assert kinds[:2] == [blocks.SectionHeader, blocks.InterfaceDescription]


def test_one_sample_file_is_one_interface(tmp_path):
    packets = [
        Packet(T0 + i * 333_000, 80, udp("198.51.100.1", "203.0.113.9", 4000 + i, 443))
        for i in range(10)
    ]
    reader = Reader([pcap_bytes(packets, nanosecond=False)], "sample.pcap")
    path = write(tmp_path / "one.pcapng", pcapng.from_pcap(reader, "sample", "edgepcap sample"))
    rows = tshark_fields(
        path, "frame.interface_name", "frame.interface_description", "frame.time_epoch"
    )
    assert rows == [["sample", "edgepcap sample", epoch(p.ts_ns)] for p in packets]
    info = capinfos(path)
    assert "Number of interfaces in file: 1\n" in info
    assert "Capture comment" not in info
    assert capinfos_interfaces(info)[0]["Time precision"] == "microseconds (6)"
