"""SQLite's write-ahead log, read as the tests check it."""

from __future__ import annotations

import struct
from pathlib import Path


def wal_frames(db_file: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of them copied back into the database), read from the
    WAL index (https://www.sqlite.org/walformat.html: mxFrame at byte 16 of the header,
    nBackfill at byte 96; native byte order) without taking part in any checkpoint."""
    shm = Path(f"{db_file}-shm").read_bytes()
    return struct.unpack_from("=I", shm, 16)[0], struct.unpack_from("=I", shm, 96)[0]
