"""Live viewers of a capture in tests: a reader of `…/stream` on a thread, and traffic
sent through the lab's machines from its client namespace."""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

# Sends argv[3] UDP datagrams to each address in argv[1] (comma-separated), port argv[2].
SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for _ in range(int(sys.argv[3])):\n"
    "    for host in sys.argv[1].split(','): s.sendto(b'x' * 32, (host, int(sys.argv[2])))\n"
)
BLOCK = struct.Struct("<II")
IDB, EPB = 1, 6


def send_udp(
    lab: Any, port: int, count: int, ns: str | None = None, hosts: list[str] | None = None
) -> None:
    """`count` datagrams to each of `hosts` (default: every customer host; host i is
    reached through machine i), sent from namespace `ns` (default: the lab's client)."""
    to = ",".join(hosts or [h["v4"] for h in lab["hosts"]])
    ns = ns or lab["namespaces"]["client"]
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", SEND, to, str(port), str(count)]
    subprocess.run(argv, check=True, timeout=30)


def until(lab: Any, done: Callable[[], bool], what: str, rounds: int = 100) -> None:
    """One datagram to each customer host's port 6000 at a time until `done()`: at most
    `rounds` rounds, 0.1 s apart."""
    for _ in range(rounds):
        send_udp(lab, 6000, 1)
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not after {rounds} rounds of traffic")


def blocks(data: bytes) -> list[int]:
    """The types of the whole pcapng blocks in `data` (a stream read so far)."""
    types, pos = [], 0
    while pos + 12 <= len(data):
        kind, length = BLOCK.unpack_from(data, pos)
        if length < 12 or pos + length > len(data):
            break
        types.append(kind)
        pos += length
    return types


class Watch(threading.Thread):
    """Reads `url` (a capture's stream) into `path` until the server ends it."""

    def __init__(self, url: str, token: str, path: Path) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.path = url, token, path
        self.data = bytearray()
        self.status: int | None = None
        self.error: BaseException | None = None
        self.started = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with httpx.stream("GET", self.url, headers=headers, timeout=60) as r:
                self.status = r.status_code
                self.started.set()
                for chunk in r.iter_raw():
                    self.data += chunk
        except BaseException as exc:
            self.error = exc
        finally:
            self.started.set()
            self.path.write_bytes(bytes(self.data))

    def interfaces(self) -> int:
        return blocks(bytes(self.data)).count(IDB)

    def packets(self) -> int:
        return blocks(bytes(self.data)).count(EPB)
