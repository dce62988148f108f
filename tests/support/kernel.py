"""A veth pair in a namespace of the test's own, and packets sent across it."""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
from collections.abc import Iterator

from edgepcap.agent.kernel import netns
from edgepcap.lab.topology import link
from tests.support.packets import udp

A_MAC, B_MAC = "02:00:00:00:10:01", "02:00:00:00:10:02"

OUTSIDE = "198.51.100.1"


@contextlib.contextmanager
def wire() -> Iterator[tuple[socket.socket, str]]:
    """A sender's raw socket on a veth whose other end is in namespace `b` (yielded)."""
    tag = secrets.token_hex(3)
    a, b = f"epnft{tag}-a", f"epnft{tag}-b"
    sender = None
    try:
        for n in (a, b):
            netns.add(n)
        link(a, "a0", b, "b0")
        netns.ip(a, "link", "set", "a0", "address", A_MAC)
        netns.ip(b, "link", "set", "b0", "address", B_MAC)
        netns.ip(b, "addr", "add", "198.18.210.2/30", "dev", "b0")
        sender = netns.run_in(a, socket.socket, socket.AF_PACKET, socket.SOCK_RAW)
        sender.bind(("a0", 0))
        yield sender, b
    finally:
        if sender is not None:
            sender.close()
        for n in (a, b):
            netns.delete(n)


def send(sender: socket.socket, src: str, dst: str, dport: int = 5000, sport: int = 4000) -> None:
    kind = b"\x08\x00" if ipaddress.ip_address(src).version == 4 else b"\x86\xdd"
    frame = bytes.fromhex(B_MAC.replace(":", "") + A_MAC.replace(":", "")) + kind
    sender.send(frame + udp(src, dst, sport, dport))
