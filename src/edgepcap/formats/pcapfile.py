"""PCAP files: streaming reader, the record writers and a time-ordered merge of several files.

Every record edgepcap writes has its header laid out here, once: `record` writes one packet,
`RECORD_HEADER.pack` serves the agent's per-message loop, and `records` writes a batch with
numpy.

Written by hand because the format is two fixed headers, and what we need — reading
from an object store's byte chunks and merging many files with memory bounded by one
chunk per input — is not what the pcap libraries (which want seekable files) offer.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

LINKTYPE_RAW = 101  # raw IPv4/IPv6, no link-layer header
LINKTYPE_ETHERNET = 1
MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
GLOBAL_HEADER = struct.Struct("<IHHiIII")
# A record header: seconds, fraction of a second (µs, or ns under MAGIC_NSEC), included
# length, original length; little-endian like the global header we write.
RECORD_FIELDS = ("sec", "frac", "incl", "orig")
RECORD_HEADER = struct.Struct("<IIII")
MAX_SNAPLEN = 262_144  # tcpdump's largest: no record is read longer, whatever a header says


class PcapError(ValueError):
    """The input is not a PCAP file we can read; the message says where and why."""


@dataclass(frozen=True)
class Header:
    linktype: int
    snaplen: int
    nanosecond: bool


@dataclass(slots=True)
class Packet:
    ts_ns: int
    orig_len: int
    data: bytes
    # pcapng's epb_flags direction (pcapng.INBOUND, pcapng.OUTBOUND) where the reader of
    # the kernel knows it; a PCAP record has no room for it (see protocol.Outbound).
    direction: int | None = None


def global_header(
    linktype: int = LINKTYPE_RAW, snaplen: int = MAX_SNAPLEN, nanosecond: bool = False
) -> bytes:
    magic = MAGIC_NSEC if nanosecond else MAGIC_USEC
    return GLOBAL_HEADER.pack(magic, 2, 4, 0, 0, snaplen, linktype)


def record(packet: Packet, nanosecond: bool = False) -> bytes:
    sec, frac = divmod(packet.ts_ns, 1_000_000_000)
    if not nanosecond:
        frac //= 1000
    return RECORD_HEADER.pack(sec, frac, len(packet.data), packet.orig_len) + packet.data


def walk_records(chunk: bytes | bytearray | memoryview) -> Iterator[tuple[int, int, int, int]]:
    """(offset of its data, end, stamp in ns, original length) of each whole microsecond
    record of `chunk` (records as edgepcap writes them, no file header), in order; it
    stops at the first record cut short."""
    pos, size = 0, RECORD_HEADER.size
    while pos + size <= len(chunk):
        sec, usec, incl, orig = RECORD_HEADER.unpack_from(chunk, pos)
        start = pos + size
        if start + incl > len(chunk):
            return
        yield start, start + incl, sec * 1_000_000_000 + usec * 1000, orig
        pos = start + incl


def records_before(chunk: bytes | bytearray, ts_ns: int) -> tuple[int, int]:
    """How many microsecond records at the start of `chunk` (whole records, no file
    header) are stamped before `ts_ns`, and the offset of the first one that is not."""
    count = pos = 0
    for start, end, ts, _orig in walk_records(chunk):
        if ts >= ts_ns:
            return count, start - RECORD_HEADER.size
        count, pos = count + 1, end
    return count, pos


def records(
    ts_ns: np.ndarray, cap_len: np.ndarray, orig_len: np.ndarray, data: np.ndarray
) -> bytes:
    """Microsecond records of a batch of packets in a few numpy passes, no per-packet Python
    work: packet i is the first `cap_len[i]` bytes of row i of `data` (n rows of any width)."""
    import numpy as np  # here, not at the top: readers of PCAP files need no numpy

    n = len(ts_ns)
    header = np.zeros(n, dtype=[(name, "<u4") for name in RECORD_FIELDS])
    header["sec"] = ts_ns // 1_000_000_000
    header["frac"] = (ts_ns % 1_000_000_000) // 1000
    header["incl"] = cap_len
    header["orig"] = orig_len
    size = RECORD_HEADER.size
    full = np.concatenate([header.view(np.uint8).reshape(n, size), data], axis=1)
    keep = np.arange(full.shape[1])[None, :] < (size + cap_len.astype(np.int64))[:, None]
    return full[keep].tobytes()


def parse_global_header(raw: bytes, name: str = "pcap") -> tuple[Header, struct.Struct]:
    """A file's global header, and the struct its record headers read with (its byte
    order: either is allowed)."""
    if len(raw) < GLOBAL_HEADER.size:
        raise PcapError(f"{name}: too short for a PCAP header ({len(raw)} bytes)")
    magic = struct.unpack("<I", raw[:4])[0]
    if magic in (MAGIC_USEC, MAGIC_NSEC):
        endian = "<"
    elif struct.unpack(">I", raw[:4])[0] in (MAGIC_USEC, MAGIC_NSEC):
        endian = ">"
        magic = struct.unpack(">I", raw[:4])[0]
    elif raw[:4] == b"\x0a\x0d\x0d\x0a":
        raise PcapError(f"{name}: a pcapng file; this reads PCAP (download with --format pcap)")
    else:
        raise PcapError(f"{name}: not a PCAP file (magic {raw[:4].hex()})")
    _, major, _minor, _, _, snaplen, linktype = struct.unpack(endian + "IHHiIII", raw[:24])
    if major != 2:
        raise PcapError(f"{name}: unsupported PCAP version {major}")
    header = Header(linktype=linktype & 0x0FFFFFFF, snaplen=snaplen, nanosecond=magic == MAGIC_NSEC)
    return header, struct.Struct(endian + RECORD_HEADER.format[1:])


class _Chunks:
    """Exact-size reads over an iterator of byte chunks, holding at most one chunk."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = bytearray()
        self.offset = 0

    def read(self, size: int) -> bytes:
        while len(self._buf) < size:
            try:
                chunk = next(self._it)
            except StopIteration:
                break
            self._buf += chunk
        out = bytes(self._buf[:size])
        del self._buf[:size]
        self.offset += len(out)
        return out


class Reader:
    """Streams the packets of one PCAP file from byte chunks."""

    def __init__(self, chunks: Iterable[bytes], name: str = "pcap") -> None:
        self.name = name
        self._src = _Chunks(chunks)
        self.header, self._record = parse_global_header(self._src.read(GLOBAL_HEADER.size), name)

    def __iter__(self) -> Iterator[Packet]:
        scale = 1 if self.header.nanosecond else 1000
        fractions = 1_000_000_000 // scale
        while True:
            at = self._src.offset
            raw = self._src.read(self._record.size)
            if not raw:
                return
            if len(raw) < self._record.size:
                raise PcapError(f"{self.name}: truncated record header at byte {at}")
            sec, frac, incl, orig = self._record.unpack(raw)
            # Checked before reading: a corrupt length must not make us buffer the file.
            if incl > MAX_SNAPLEN:
                raise PcapError(
                    f"{self.name}: record at byte {at} claims {incl} bytes (at most {MAX_SNAPLEN})"
                )
            # Only a corrupt record has one, and the merge could not write it back.
            if frac >= fractions:
                unit = "ns" if self.header.nanosecond else "µs"
                raise PcapError(
                    f"{self.name}: record at byte {at} has a timestamp fraction of "
                    f"{frac} {unit}, not below one second"
                )
            data = self._src.read(incl)
            if len(data) < incl:
                raise PcapError(f"{self.name}: truncated packet data at byte {at}")
            yield Packet(ts_ns=sec * 1_000_000_000 + frac * scale, orig_len=orig, data=data)


def merge(readers: list[Reader], empty_linktype: int = LINKTYPE_RAW) -> Iterator[bytes]:
    """One PCAP stream of all readers' packets in timestamp order (each reader's own
    order kept). Headers that cannot be merged are refused here, before any byte."""
    linktypes = {r.header.linktype for r in readers}
    if len(linktypes) > 1:
        raise PcapError(f"cannot merge files of different link types {sorted(linktypes)}")
    linktype = linktypes.pop() if linktypes else empty_linktype
    nanosecond = any(r.header.nanosecond for r in readers)
    snaplen = max((r.header.snaplen for r in readers), default=MAX_SNAPLEN)
    return _merged(readers, global_header(linktype, snaplen, nanosecond), nanosecond)


def _merged(readers: list[Reader], header: bytes, nanosecond: bool) -> Iterator[bytes]:
    yield header
    batch = bytearray()
    for packet in heapq.merge(*readers, key=lambda p: p.ts_ns):
        batch += record(packet, nanosecond)
        if len(batch) >= 64 * 1024:
            yield bytes(batch)
            batch.clear()
    if batch:
        yield bytes(batch)
