"""Files of `file://` buckets, reached below the server's bucket root without following links.

Customers can write into their bucket directories, and the agent writes there as root.
So nothing below the bucket root is trusted: every path is walked one component at a
time from a descriptor of the root, each directory opened with O_NOFOLLOW|O_DIRECTORY,
and files are opened with O_NOFOLLOW (reads also check that they are regular files).
A symlink anywhere below the root, planted before or during a capture, makes the
operation fail naming the component; it is never written or read through.

Why descriptor walking and not openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): the walk
gives the same guarantee with plain `os` calls on every kernel and libc, needs no ctypes,
and tells which component was the link. `..` and empty components never reach it: paths
are canonical (bucket_urls.canonical) and object names are checked here as well.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from edgepcap.direct_io import Chunk, DirectFile

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted under a file's name must not hang the reader.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# The bucket is the customer's: its directory's own mode decides who reads it, not the
# umask of the agent (`up` and the lab run theirs with 077 to keep their data dir private).
FILE_MODE = 0o644
DIR_MODE = 0o755


class BeneathError(OSError):
    """A path below a bucket root that cannot be used; str() names the cause."""

    def __str__(self) -> str:
        return str(self.strerror)


def _parts(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise BeneathError(errno.EINVAL, f"{rel!r} is not a plain relative path")
    return parts


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _why(exc: OSError, name: str, link: bool = False) -> OSError:
    """The OSError of one component, said so that a customer knows what to fix."""
    if link or exc.errno == errno.ELOOP:
        text = f"{name!r} is a symbolic link: this server follows no links in a bucket"
    elif exc.errno == errno.ENOTDIR:
        text = f"{name!r} is not a directory"
    elif exc.errno == errno.ENOENT:
        text = f"{name!r} does not exist"
    else:
        return exc  # no space, access denied, read-only: destinations.describe_failure
    return BeneathError(exc.errno, text)


def open_dir(root: Path, rel: str, create: bool = False) -> int:
    """A descriptor of directory `rel` below `root`; `create` makes missing ones (0755)."""
    return _walk(os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW), rel, create)  # root: operator's


def _walk(fd: int, rel: str, create: bool) -> int:
    """From directory descriptor `fd` (taken over) down `rel`, one component at a time."""
    walked = ""
    try:
        for part in _parts(rel):
            walked = f"{walked}/{part}" if walked else part
            try:
                made = False
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, DIR_MODE, dir_fd=fd)
                        made = True
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _why(exc, walked, _is_link(fd, part)) from None
            os.close(fd)
            fd = child
            if made:
                os.fchmod(fd, DIR_MODE)  # whatever the process's umask
    except BaseException:
        os.close(fd)
        raise
    return fd


def identity(root: Path, rel: str) -> tuple[int, int] | None:
    """(device, inode) of directory `rel` below `root`, or None when it cannot be opened."""
    try:
        fd = open_dir(root, rel)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        return st.st_dev, st.st_ino
    finally:
        os.close(fd)


def _split(name: str) -> tuple[str, str]:
    parts = _parts(name)
    if not parts:
        raise BeneathError(errno.EINVAL, "an object needs a name")
    return "/".join(parts[:-1]), parts[-1]


class OpenFile:
    """A regular file opened for reading. Iterating gives its bytes in chunks, up to the
    size it had when opened; the end of the file, or `close`, releases the descriptor,
    whether or not reading ever began (a download that fails on its third file closes
    the two before it)."""

    def __init__(self, fd: int, size: int, chunk_size: int = 256 * 1024) -> None:
        self.fd: int | None = fd
        self.size = size
        self.left = size
        self.chunk_size = chunk_size

    def chunks(self, chunk_size: int = 256 * 1024) -> OpenFile:
        self.chunk_size = chunk_size
        return self

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.fd is None or self.left <= 0:
            self.close()
            raise StopIteration
        try:
            data = os.read(self.fd, min(self.chunk_size, self.left))
        except BaseException:
            self.close()
            raise
        if not data:
            self.close()
            raise StopIteration
        self.left -= len(data)
        return data

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.close()


def open_file(root: Path, bucket: str, name: str) -> OpenFile:
    """Object `name` of the bucket directory `bucket` (both relative to `root`), for reading."""
    where, leaf = _split(name)
    dir_fd = _walk(open_dir(root, bucket), where, create=False)
    try:
        try:
            fd = os.open(leaf, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise _why(exc, name, _is_link(dir_fd, leaf)) from None
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BeneathError(errno.EINVAL, f"{name!r} is not a regular file")
    os.set_blocking(fd, True)
    return OpenFile(fd, st.st_size)


def read_file(root: Path, bucket: str, name: str, max_bytes: int) -> bytes:
    found = open_file(root, bucket, name)
    try:
        if found.size > max_bytes:
            raise BeneathError(errno.EFBIG, f"{name!r} is larger than {max_bytes} bytes")
        return b"".join(found.chunks())
    finally:
        found.close()


def unlink(root: Path, bucket: str, name: str) -> None:
    """Remove object `name` (a link is removed itself, never its target); missing is fine."""
    where, leaf = _split(name)
    try:
        dir_fd = _walk(open_dir(root, bucket), where, create=False)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leaf, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


class Writer:
    """Writes object `name` into a staging file created next to it (O_CREAT|O_EXCL, so never
    through a planted link), renamed over the name when complete; `abort` removes it.

    The directories are held open from the start: a link swapped in later changes nothing.
    """

    def __init__(self, root: Path, bucket: str, name: str) -> None:
        where, self.leaf = _split(name)
        self.name = name
        self.root = root
        self.folder = "/".join(p for p in (bucket, where) if p)
        self.dir_fd = _walk(open_dir(root, bucket), where, create=True)
        self.staging = f".{self.leaf}.{secrets.token_hex(6)}.part"
        self.fd: int | None = None
        self.file: DirectFile | None = None
        self._created = False
        try:
            self.fd = os.open(self.staging, _CREATE_FLAGS, FILE_MODE, dir_fd=self.dir_fd)
            self._created = True
            self.file = DirectFile(self.fd)
            os.fchmod(self.fd, FILE_MODE)  # whatever the process's umask
        except OSError as exc:
            self.abort()
            raise _why(exc, f"{where}/{self.staging}".lstrip("/")) from None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self.file is not None
        self.file.write(data)

    def write_chunk(self, chunk: Chunk) -> None:
        """Append a `Chunk` filled from this object's position (see `direct_io`)."""
        assert self.file is not None
        self.file.write_chunk(chunk)

    def close(self) -> None:
        """Complete the object: its bytes on disk, then the staging file renamed over it."""
        assert self.fd is not None and self.file is not None
        try:
            self.file.finish()
            os.close(self.fd)
            self.fd = None
            # The folder held open must still be the one at its name: a customer who moved
            # it away meanwhile would otherwise get a part reported done where it is not.
            held = os.fstat(self.dir_fd)
            if identity(self.root, self.folder) != (held.st_dev, held.st_ino):
                raise BeneathError(
                    errno.ESTALE, f"{self.folder!r} was moved or replaced during the write"
                )
            os.rename(self.staging, self.leaf, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except BaseException:
            self.abort()
            raise
        os.close(self.dir_fd)
        self.dir_fd = -1

    def abort(self) -> None:
        self.file = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.dir_fd >= 0:
            if self._created:
                with contextlib.suppress(OSError):
                    os.unlink(self.staging, dir_fd=self.dir_fd)
            os.close(self.dir_fd)
            self.dir_fd = -1


def put(root: Path, bucket: str, name: str, data: bytes) -> None:
    writer = Writer(root, bucket, name)
    try:
        writer.write(data)
    except BaseException:
        writer.abort()
        raise
    writer.close()
