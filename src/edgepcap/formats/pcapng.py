"""pcapng files: the blocks edgepcap writes, and PCAP streams turned into one pcapng stream.

A download of a capture from many machines is one pcapng file with one interface per
machine (`ord01`, described "edgepcap ORD ord01"), so that Wireshark shows where each
packet was seen, keeps each machine's own timestamp resolution (nanoseconds where its
PCAP file has them) and can carry a comment on the capture and statistics (how many
packets a live viewer lost). `from_pcaps` merges the machines' PCAP streams by time
into it, streaming: memory is one packet per machine plus one output batch.

Written by hand, like `pcapfile`, from the block layouts of the IETF draft
draft-ietf-opsawg-pcapng (little-endian, one section), because the Python libraries
do not do what we need: dpkt's writer declares every interface up front, takes float
seconds rounded to microseconds and writes the captured length as the original one;
python-pcapng builds an object graph per block and writes to a file object, with float
timestamps on its reading side. Both want a file to write to, not an iterator of chunks
a response streams, and neither is cheap per packet.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat

from edgepcap.formats.pcapfile import Packet, Reader

# Block types.
SHB = 0x0A0D0D0A
IDB = 0x00000001
ISB = 0x00000005
EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D

# Option codes: 0 and 1 in every block, the others per block type.
OPT_ENDOFOPT = 0
OPT_COMMENT = 1
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
EPB_FLAGS = 2
ISB_STARTTIME = 2
ISB_ENDTIME = 3
ISB_IFRECV = 4
ISB_IFDROP = 5

# Direction of a packet, bits 0-1 of epb_flags (0: not known).
INBOUND = 1
OUTBOUND = 2

# if_tsresol: timestamps count 10^-9 or 10^-6 seconds (the top bit clear: a power of ten).
TSRESOL_NS = 9
TSRESOL_US = 6

APPLICATION = "edgepcap"
CHUNK = 64 * 1024  # output batch: one bytes object per packet would cost more than the packet

_U32 = struct.Struct("<I")
_BLOCK_HEAD = struct.Struct("<II")  # block type, block total length
_OPTION_HEAD = struct.Struct("<HH")  # option code, value length (padding not counted)
_END_OF_OPTIONS = _OPTION_HEAD.pack(OPT_ENDOFOPT, 0)
_U64 = struct.Struct("<Q")
_TIMESTAMP = struct.Struct("<II")  # upper 32 bits, then lower 32 bits, as in an EPB
# An SHB's fixed part: byte-order magic, version 1.0, section length -1 (not known: we
# stream, and nobody skips sections by it).
_SHB_FIXED = struct.Struct("<IHHq")
_IDB_FIXED = struct.Struct("<HHI")  # link type, reserved, snap length
_ISB_FIXED = struct.Struct("<III")  # interface, timestamp upper and lower 32 bits
# An EPB up to its packet data: block type, total length, interface, timestamp upper and
# lower 32 bits, captured length, original length. Then the data padded to 32 bits,
# options, and the total length again.
_EPB_HEAD = struct.Struct("<7I")
_EPB_FIXED = _EPB_HEAD.size + _U32.size
# epb_flags (4 bytes), opt_endofopt, then the block's trailing total length.
_EPB_FLAGS_TAIL = struct.Struct("<HHIHHI")
_EPB_FLAGS_SIZE = _EPB_FLAGS_TAIL.size - _U32.size
# Zero bytes that take a length to the next multiple of 4: every block and option is
# 32-bit aligned.
_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")


def _option(code: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"pcapng option {code}: {len(value)} bytes, at most 65535")
    return _OPTION_HEAD.pack(code, len(value)) + value + _PADDING[len(value) & 3]


def _options(options: list[bytes]) -> bytes:
    # A list of options ends with opt_endofopt; a block with none has no list at all.
    return b"".join(options) + _END_OF_OPTIONS if options else b""


def _block(block_type: int, body: bytes) -> bytes:
    # The total length is written at both ends, so that a reader can walk backwards too.
    total = _BLOCK_HEAD.size + len(body) + _U32.size
    return _BLOCK_HEAD.pack(block_type, total) + body + _U32.pack(total)


def _text(code: int, text: str) -> bytes:
    # Strings are UTF-8, not zero-terminated.
    return _option(code, text.encode())


def _units(ts_ns: int, nanosecond: bool) -> int:
    # A timestamp counts units of its interface's if_tsresol since the epoch.
    return ts_ns if nanosecond else ts_ns // 1000


def _timestamp(ts_ns: int, nanosecond: bool) -> tuple[int, int]:
    units = _units(ts_ns, nanosecond)
    return units >> 32, units & 0xFFFFFFFF


def section_header(comment: str | None = None, application: str = APPLICATION) -> bytes:
    """A Section Header Block: little-endian, version 1.0, length not known; the capture's
    comment (Wireshark's "capture file comment") and the application that wrote it."""
    options = [] if comment is None else [_text(OPT_COMMENT, comment)]
    options.append(_text(SHB_USERAPPL, application))
    body = _SHB_FIXED.pack(BYTE_ORDER_MAGIC, 1, 0, -1) + _options(options)
    return _block(SHB, body)


def interface_block(
    linktype: int, snaplen: int, name: str, description: str, tsresol_ns: bool
) -> bytes:
    """An Interface Description Block. Interfaces are numbered from 0 in the order their
    blocks appear, and may appear anywhere before their first packet."""
    if not 0 <= linktype <= 0xFFFF:
        raise ValueError(f"pcapng link type {linktype}: at most 16 bits")
    resolution = TSRESOL_NS if tsresol_ns else TSRESOL_US
    options = [
        _text(IF_NAME, name),
        _text(IF_DESCRIPTION, description),
        _option(IF_TSRESOL, bytes([resolution])),
    ]
    return _block(IDB, _IDB_FIXED.pack(linktype, 0, snaplen) + _options(options))


def write_packet(
    out: bytearray,
    interface_id: int,
    ts_ns: int,
    data: bytes | memoryview,
    orig_len: int,
    direction: int | None = None,
    nanosecond: bool = True,
) -> None:
    """Appends an Enhanced Packet Block to `out`: the per-packet path, no bytes object of
    its own. `nanosecond` is the interface's resolution (its IDB's if_tsresol)."""
    units = _units(ts_ns, nanosecond)
    size = len(data)
    padding = _PADDING[size & 3]
    total = _EPB_FIXED + size + len(padding)
    if direction is not None:
        total += _EPB_FLAGS_SIZE
    out += _EPB_HEAD.pack(EPB, total, interface_id, units >> 32, units & 0xFFFFFFFF, size, orig_len)
    out += data
    out += padding
    if direction is None:
        out += _U32.pack(total)
    else:
        # Only bits 0-1 are ours to set: the others say reception type, FCS length, errors.
        if direction not in (0, INBOUND, OUTBOUND):
            raise ValueError(f"packet direction {direction}: 0, INBOUND (1) or OUTBOUND (2)")
        out += _EPB_FLAGS_TAIL.pack(EPB_FLAGS, 4, direction, OPT_ENDOFOPT, 0, total)


def packet_block(
    interface_id: int,
    ts_ns: int,
    data: bytes | memoryview,
    orig_len: int,
    direction: int | None = None,
    nanosecond: bool = True,
) -> bytes:
    """One Enhanced Packet Block; `direction` (INBOUND, OUTBOUND) is written as epb_flags,
    None writes no flags."""
    out = bytearray()
    write_packet(out, interface_id, ts_ns, data, orig_len, direction, nanosecond)
    return bytes(out)


def statistics_block(
    interface_id: int,
    ts_ns: int,
    ifdrop: int | None = None,
    *,
    nanosecond: bool = True,
    ifrecv: int | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    comment: str | None = None,
) -> bytes:
    """An Interface Statistics Block of `interface_id` at `ts_ns`: isb_ifdrop is what the
    interface lost (for a live viewer: packets it was not sent), isb_ifrecv what it saw,
    start and end the time they count over. Stamps are in the interface's resolution."""
    options = [] if comment is None else [_text(OPT_COMMENT, comment)]
    if start_ns is not None:
        options.append(_option(ISB_STARTTIME, _TIMESTAMP.pack(*_timestamp(start_ns, nanosecond))))
    if end_ns is not None:
        options.append(_option(ISB_ENDTIME, _TIMESTAMP.pack(*_timestamp(end_ns, nanosecond))))
    if ifrecv is not None:
        options.append(_option(ISB_IFRECV, _U64.pack(ifrecv)))
    if ifdrop is not None:
        options.append(_option(ISB_IFDROP, _U64.pack(ifdrop)))
    body = _ISB_FIXED.pack(interface_id, *_timestamp(ts_ns, nanosecond)) + _options(options)
    return _block(ISB, body)


@dataclass(frozen=True)
class Source:
    """One PCAP stream, written as one interface: its link type, snap length and timestamp
    resolution are its PCAP header's."""

    name: str  # the interface's name: the machine, e.g. "ord01"
    description: str  # e.g. "edgepcap ORD ord01"
    reader: Reader
    # A packet's direction (INBOUND, OUTBOUND) or None for no epb_flags. The PCAP files
    # the agents write do not carry one yet, so nothing passes this today.
    direction: Callable[[Packet], int | None] | None = None


def from_pcaps(sources: Sequence[Source], comment: str | None = None) -> Iterator[bytes]:
    """One pcapng stream of all sources: the section header with `comment` and one
    interface per source (interface i is sources[i], packets or not) in the first chunk,
    then every packet in timestamp order (each source's own order kept) in chunks of
    about CHUNK bytes. The blocks before the packets are built here, before any byte, so
    that an error in them comes before the response starts."""
    head = bytearray(section_header(comment))
    for s in sources:
        h = s.reader.header
        head += interface_block(h.linktype, h.snaplen, s.name, s.description, h.nanosecond)
    return _stream(sources, bytes(head))


def from_pcap(
    reader: Reader, name: str, description: str, comment: str | None = None
) -> Iterator[bytes]:
    """One PCAP stream (a sample capture's file) as pcapng with one interface."""
    return from_pcaps([Source(name, description, reader)], comment)


def _time_of(tagged: tuple[int, Packet]) -> int:
    return tagged[1].ts_ns


def _stream(sources: Sequence[Source], head: bytes) -> Iterator[bytes]:
    yield head
    nanosecond = [s.reader.header.nanosecond for s in sources]
    directions = [s.direction for s in sources]
    # Each packet tagged with its interface; heapq.merge holds one packet per source and
    # breaks ties by source order, as pcapfile.merge does.
    tagged = [zip(repeat(i), s.reader) for i, s in enumerate(sources)]
    batch = bytearray()
    for i, packet in heapq.merge(*tagged, key=_time_of):
        hook = directions[i]
        direction = None if hook is None else hook(packet)
        write_packet(batch, i, packet.ts_ns, packet.data, packet.orig_len, direction, nanosecond[i])
        if len(batch) >= CHUNK:
            yield bytes(batch)
            batch.clear()
    if batch:
        yield bytes(batch)
