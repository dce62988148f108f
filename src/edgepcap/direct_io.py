"""Appending a long stream to a file past the page cache (O_DIRECT), from reused buffers.

A capture writes hundreds of MB/s. Through the page cache each byte is copied once more
on the writing core into freshly allocated pages, which on a VM costs more than the rest
of the capture path (BENCHMARKS.md, full capture: `copy_folio_from_iter_atomic`); with
O_DIRECT the device reads the writer's buffer itself. Direct writes need the buffer's
address, the length and the file offset aligned (ALIGN covers every logical block size
up to 4 KiB), so the stream comes in `Chunk`s: page-aligned buffers, each filled from
`Chunk.start`, which the filler sets to the stream's position modulo ALIGN; the bytes of
the last partial block before it are copied into the room in front, and each write is
whole blocks. Only the stream's last partial block is written through the page cache.
A file system without O_DIRECT gets ordinary writes of the same bytes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

ALIGN = 4096
O_DIRECT = getattr(os, "O_DIRECT", 0)


class Chunk:
    """A page-aligned buffer of `size` bytes for `DirectFile`: the bytes of the stream are
    `view[start:end]`; the ALIGN bytes in front of `start` belong to the writer."""

    def __init__(self, size: int) -> None:
        self.mem = mmap.mmap(-1, ALIGN * 2 + size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self.mem)
        self.start = self.end = ALIGN
        self.written = False  # the writer is done with it

    def reset(self, position: int) -> None:
        """Empty, for the bytes that start at `position` of the stream."""
        self.start = self.end = ALIGN + position % ALIGN
        self.written = False

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def room(self) -> int:
        return len(self.view) - self.end

    def data(self) -> memoryview:
        return self.view[self.start : self.end]

    def __iadd__(self, data: bytes | bytearray | memoryview) -> Chunk:
        """Append `data` (like a bytearray's +=; a chunk never grows)."""
        end = self.end + len(data)
        self.view[self.end : end] = data
        self.end = end
        return self


class DirectFile:
    """Appends to the open file `fd` (taken over: `close` closes it) with direct writes
    where the file system allows them."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.position = 0  # of the stream: bytes given so far
        self.carry = b""  # the stream's last partial block, not yet written
        self.direct = False
        if O_DIRECT:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | O_DIRECT)
                self.direct = True
            except OSError:
                pass  # no direct I/O here (tmpfs before Linux 6.6, some FUSE)
        self._scratch: Chunk | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append any bytes (copied once more when direct)."""
        if not self.direct:
            self._flush_carry()
            self._write_all(memoryview(data))
            self.position += len(data)
            return
        data = memoryview(data)
        while data:
            if self._scratch is None:
                self._scratch = Chunk(1 << 20)
            chunk = self._scratch
            chunk.reset(self.position)
            take = min(len(data), chunk.room)
            chunk.view[chunk.end : chunk.end + take] = data[:take]
            chunk.end += take
            self.write_chunk(chunk)
            data = data[take:]

    def write_chunk(self, chunk: Chunk) -> None:
        """Append `chunk`'s bytes; when direct, with no copy but the carried partial block."""
        size = chunk.size
        if not self.direct:
            self._flush_carry()
            self._write_all(chunk.data())
        else:
            carry = len(self.carry)
            if chunk.start % ALIGN != self.position % ALIGN or carry > chunk.start:
                raise ValueError("a chunk not filled from the stream's position")
            first = chunk.start - carry
            chunk.view[first : chunk.start] = self.carry
            whole = (chunk.end - first) // ALIGN * ALIGN
            if whole:
                self._write_all(chunk.view[first : first + whole])
            self.carry = bytes(chunk.view[first + whole : chunk.end])
        self.position += size

    def _write_all(self, view: memoryview) -> None:
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                self._buffered()  # a device with other alignment rules: no direct I/O

    def _buffered(self) -> None:
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~O_DIRECT)
        self.direct = False

    def _flush_carry(self) -> None:
        """The carried partial block, written through the page cache (it ends the file's
        direct part: the offsets after it are no longer aligned)."""
        if self.carry:
            if self.direct:
                self._buffered()
            carry, self.carry = self.carry, b""
            self._write_all(memoryview(carry))

    def finish(self) -> None:
        """Write the last partial block and sync the file."""
        self._flush_carry()
        os.fsync(self.fd)
