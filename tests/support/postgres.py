"""A throwaway PostgreSQL server on loopback (Debian's binaries).

PostgreSQL refuses to run as root: as root the server runs as the postgres user
(`runuser`); as anyone else, as that user (a laptop's `pytest -m "not root"`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import free_port


@dataclass
class Postgres:
    port: int
    socket_dir: Path
    bindir: Path
    data: Path | None = None
    counter: int = 0
    settings: tuple[str, ...] = ()  # more `-c name=value` for the server

    def run(self, *args: str) -> None:
        subprocess.run(
            _as_server_user(
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                *args,
            ),
            check=True,
            capture_output=True,
        )

    def new_database(self) -> str:
        self.counter += 1
        name = f"edgepcap_test_{os.getpid()}_{self.counter}"
        self.run("-c", f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _pg_ctl(self, *args: str) -> None:
        assert self.data is not None
        pg_ctl = str(self.bindir / "pg_ctl")
        subprocess.run(
            _as_server_user(pg_ctl, "-D", str(self.data), *args),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        """Start the server (again) on its data directory and port; returns when it accepts."""
        assert self.data is not None
        self._pg_ctl(
            "-l",
            str(self.data.parent / "pg.log"),
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off -c max_connections=200"
            + "".join(f" -c {setting}" for setting in self.settings),
            "start",
        )

    def crash(self) -> None:
        """Stop the server at once, as a crash would (`-m immediate`: no clean shutdown)."""
        self._pg_ctl("-m", "immediate", "-w", "stop")


def _as_server_user(*argv: str) -> list[str]:
    """`argv` run as the server's user: postgres when we are root, else ourselves."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: run scripts/bootstrap.sh test")
    return Path(found[-1]).parent


def start_postgres(settings: tuple[str, ...] = ()) -> tuple[Postgres, Callable[[], None]]:
    """A throwaway PostgreSQL server on loopback (with `settings`, `name=value` each),
    and the function that removes it."""
    bindir = _pg_bindir()
    # Not under pytest's 0700 temp dir: the postgres user must reach its files.
    base = Path(tempfile.mkdtemp(prefix="edgepcap-pg-"))
    data = base / "data"
    sock = base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        for path in (base, sock):
            shutil.chown(path, "postgres")
    subprocess.run(
        _as_server_user(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ),
        check=True,
        capture_output=True,
    )
    server = Postgres(
        port=free_port(), socket_dir=sock, bindir=bindir, data=data, settings=settings
    )
    server.start()

    def stop() -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            server.crash()
        shutil.rmtree(base, ignore_errors=True)

    return server, stop
