"""Property-based fuzzing of the PCAP reader, the merge and the packet decoder.

Whatever the bytes, the outcome is packets or a PcapError that says where and why: never
an IndexError, struct.error or MemoryError from deep inside.
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepcap.formats.packets import decode, preview, summarise
from edgepcap.formats.pcapfile import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    MAGIC_NSEC,
    MAGIC_USEC,
    MAX_SNAPLEN,
    Packet,
    PcapError,
    Reader,
    global_header,
    merge,
    record,
)
from tests.support.packets import udp

# Derandomized: the same examples every run, so the suite is stable; bounded for speed.
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
U32 = 2**32 - 1
LAST_NS = U32 * 10**9 + 999_999_999  # the last instant a PCAP record can hold


def pcap_bytes(
    packets: list[Packet],
    endian: str = "<",
    nanosecond: bool = False,
    linktype: int = LINKTYPE_RAW,
    snaplen: int = MAX_SNAPLEN,
) -> bytes:
    """A PCAP file in either byte order, written independently of edgepcap.pcap."""
    magic = MAGIC_NSEC if nanosecond else MAGIC_USEC
    out = bytearray(struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
    for p in packets:
        sec, frac = divmod(p.ts_ns, 10**9)
        frac = frac if nanosecond else frac // 1000
        out += struct.pack(endian + "IIII", sec, frac, len(p.data), p.orig_len) + p.data
    return bytes(out)


def chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def read(data: bytes, chunk: int = 7) -> list[Packet] | PcapError:
    try:
        return list(Reader(chunks_of(data, chunk), "fuzz.pcap"))
    except PcapError as exc:
        return exc


def as_read(p: Packet, nanosecond: bool) -> Packet:
    """The packet as a file of that resolution holds it."""
    ts = p.ts_ns if nanosecond else p.ts_ns // 1000 * 1000
    return Packet(ts, p.orig_len, p.data)


ip_packets = st.builds(
    udp,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=4).map(str),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.binary(max_size=64),
) | st.binary(max_size=120)
packets = st.builds(
    lambda ts, data, extra: Packet(ts, len(data) + extra, data),
    st.integers(0, LAST_NS),
    ip_packets,
    st.integers(0, 1500),
)
files = st.fixed_dictionaries(
    {
        "packets": st.lists(packets, max_size=6),
        "endian": st.sampled_from("<>"),
        "nanosecond": st.booleans(),
        "linktype": st.sampled_from([LINKTYPE_RAW, LINKTYPE_ETHERNET]),
        "snaplen": st.sampled_from([0, 65535, MAX_SNAPLEN, U32]),
    }
)


@FUZZ
@given(files, st.integers(1, 64))
def test_files_in_either_byte_order_and_resolution_read_back_as_written(f, chunk):
    data = pcap_bytes(**f)
    if f["endian"] == "<":  # our own writer writes exactly this
        assert data == global_header(f["linktype"], f["snaplen"], f["nanosecond"]) + b"".join(
            record(p, f["nanosecond"]) for p in f["packets"]
        )
    reader = Reader(chunks_of(data, chunk), "ok.pcap")
    assert (reader.header.linktype, reader.header.snaplen) == (f["linktype"], f["snaplen"])
    assert reader.header.nanosecond == f["nanosecond"]
    assert list(reader) == [as_read(p, f["nanosecond"]) for p in f["packets"]]


@FUZZ
@given(files)
def test_a_file_cut_at_any_length_reads_whole_packets_or_fails_clearly(f):
    data = pcap_bytes(**f)
    whole = [as_read(p, f["nanosecond"]) for p in f["packets"]]
    ends = [24]
    for p in f["packets"]:
        ends.append(ends[-1] + 16 + len(p.data))
    for length in range(len(data) + 1):
        got = read(data[:length])
        if length in ends:
            assert got == whole[: ends.index(length)], length
        else:
            assert isinstance(got, PcapError), length
            assert str(got).startswith("fuzz.pcap: ")
            assert "too short" in str(got) if length < 24 else "truncated" in str(got)


@FUZZ
@given(files, st.data())
def test_flipped_bytes_give_packets_or_a_clear_error_everywhere(f, data):
    raw = bytearray(pcap_bytes(**f))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1)
    )
    for at, value in flips:
        raw[at] = value
    mangled = bytes(raw)
    got = read(mangled)
    assert isinstance(got, (list, PcapError))
    # What the API and the CLI do with a file: preview, summary, merged download.
    for use in (
        lambda r: preview(r, 5),
        lambda r: summarise(r, r.header.linktype),
        lambda r: b"".join(merge([r, Reader([pcap_bytes([], linktype=r.header.linktype)])])),
    ):
        with contextlib.suppress(PcapError):
            use(Reader(chunks_of(mangled, 13), "fuzz.pcap"))


@FUZZ
@given(
    st.integers(MAX_SNAPLEN + 1, U32),
    st.sampled_from([0, MAX_SNAPLEN, 2**31, U32]),
    st.sampled_from("<>"),
)
def test_a_huge_record_length_fails_before_its_bytes_are_read(incl, snaplen, endian):
    head = pcap_bytes([], endian=endian, snaplen=snaplen) + struct.pack(
        endian + "IIII", 1, 0, incl, incl
    )
    pulled = []

    def source() -> Iterator[bytes]:
        yield head
        for _ in range(64):  # more than a reader that honours the claim would buffer
            pulled.append(1)
            yield bytes(1 << 20)

    with pytest.raises(PcapError, match=f"record at byte 24 claims {incl} bytes"):
        list(Reader(source(), "fuzz.pcap"))
    assert pulled == []


@FUZZ
@given(st.sampled_from("<>"), st.booleans(), st.integers(0, U32))
def test_a_timestamp_fraction_out_of_range_is_refused(endian, nanosecond, frac):
    scale = 10**9 if nanosecond else 10**6
    data = pcap_bytes([], endian=endian, nanosecond=nanosecond) + struct.pack(
        endian + "IIII", U32, frac, 0, 0
    )
    got = read(data)
    if frac < scale:
        assert got == [Packet(U32 * 10**9 + frac * (10**9 // scale), 0, b"")]
        # …and it survives a merge, which must write it back in range.
        merged = b"".join(merge([Reader([data])]))
        assert read(merged) == got
    else:
        assert isinstance(got, PcapError) and "timestamp" in str(got)


@FUZZ
@given(st.lists(files, min_size=1, max_size=3))
def test_merge_keeps_every_packet_in_time_order(fs):
    for f in fs:  # as machines write them: one link type, each file in time order
        f["linktype"] = fs[0]["linktype"]
        f["packets"].sort(key=lambda p: p.ts_ns)
    nanosecond = any(f["nanosecond"] for f in fs)
    merged = b"".join(merge([Reader(chunks_of(pcap_bytes(**f), 11)) for f in fs]))
    got = read(merged)
    assert isinstance(got, list)
    assert [p.ts_ns for p in got] == sorted(p.ts_ns for p in got)
    want = [as_read(as_read(p, f["nanosecond"]), nanosecond) for f in fs for p in f["packets"]]
    key = lambda p: (p.ts_ns, p.orig_len, p.data)  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)


@FUZZ
@given(files, files)
def test_merging_files_of_different_link_types_is_refused_at_once(a, b):
    a["linktype"], b["linktype"] = LINKTYPE_RAW, LINKTYPE_ETHERNET
    readers = [Reader([pcap_bytes(**f)], n) for f, n in ((a, "a.pcap"), (b, "b.pcap"))]
    with pytest.raises(PcapError, match="different link types"):
        merge(readers)  # before the first byte, so a download can still answer an error


@FUZZ
@given(
    st.tuples(st.integers(0, 255), st.binary(max_size=100)).map(lambda t: bytes([t[0]]) + t[1])
    | st.tuples(st.sampled_from([0x45, 0x4F, 0x40, 0x60]), st.binary(min_size=19, max_size=80)).map(
        lambda t: bytes([t[0]]) + t[1]
    )
    | ip_packets,
    st.sampled_from([LINKTYPE_RAW, LINKTYPE_ETHERNET, 0, 113]),
    st.integers(0, LAST_NS),
)
def test_the_decoder_takes_any_bytes(data, linktype, ts):
    d = decode(Packet(ts, len(data), data), linktype)
    assert (d.time_ns, d.length, d.captured) == (ts, len(data), len(data))
    for address in (d.source, d.destination):
        assert address == "?" or ipaddress.ip_address(address)
    for port in (d.source_port, d.destination_port):
        assert port is None or 0 <= port <= 65535
    assert d.protocol


@FUZZ
@given(files, st.integers(1, 10))
def test_preview_and_summary_account_for_every_packet(f, count):
    want = [as_read(p, f["nanosecond"]) for p in f["packets"]]
    rows = preview(Reader([pcap_bytes(**f)]), count)
    assert [r["hex"] for r in rows] == [p.data.hex() for p in want[:count]]
    assert [r["time_ns"] for r in rows] == [p.ts_ns for p in want[:count]]
    reader = Reader([pcap_bytes(**f)])
    summary = summarise(reader, reader.header.linktype)
    assert summary["packets"] == len(want)
    assert summary["bytes"] == sum(p.orig_len for p in want)
    assert sum(p["packets"] for p in summary["protocols"]) == len(want)
    if want:
        assert summary["first_ns"] == min(p.ts_ns for p in want)
        assert summary["last_ns"] == max(p.ts_ns for p in want)


def test_a_preview_reads_no_further_than_it_shows():
    good = pcap_bytes([Packet(10**18 + i, 60, b"\x45" + bytes(59)) for i in range(3)])
    broken = good + b"\x00" * 5  # the fourth record is cut short
    assert len(preview(Reader([broken]), 3)) == 3
    with pytest.raises(PcapError, match="truncated record header at byte"):
        preview(Reader([broken]), 4)
