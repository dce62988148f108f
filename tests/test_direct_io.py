"""A stream written past the page cache holds exactly the bytes given, in order."""

from __future__ import annotations

import os
import random

from edgepcap.direct_io import ALIGN, Chunk, DirectFile


def test_chunks_and_bytes_in_any_sizes_make_the_same_file(tmp_path):
    rng = random.Random(7)
    path = tmp_path / "x.pcap"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    out = DirectFile(fd)
    assert out.direct  # this file system takes direct writes: the test uses them
    expected = bytearray()
    chunk = Chunk(256 << 10)
    for i in range(60):
        assert out.direct
        data = rng.randbytes(rng.choice([1, 24, ALIGN - 1, ALIGN, 5000, 100_000]))
        expected += data
        if i % 3 == 0:
            out.write(data)  # bytes: copied
            continue
        chunk.reset(out.position)
        chunk += data  # a chunk filled from the stream's position: written as it is
        out.write_chunk(chunk)
    out.finish()
    os.close(fd)
    assert path.read_bytes() == expected


def test_a_chunk_not_filled_from_the_streams_position_is_refused(tmp_path):
    fd = os.open(tmp_path / "y", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        out = DirectFile(fd)
        out.write(b"abc")
        chunk = Chunk(ALIGN)
        chunk.reset(0)
        chunk += b"def"
        if out.direct:
            try:
                out.write_chunk(chunk)
            except ValueError:
                return
            raise AssertionError("a misplaced chunk was written")
    finally:
        os.close(fd)
