"""Live copies between API processes: machines' copies reach whichever process their
agent talks to, and viewers may be on any other one sharing the database.

Each process listens on a relay port of its own (`EDGEPCAP_RELAY_HOST`, any free port),
advertised in the database with a per-run token (`control.live`). A process that gets
copies of a capture hands them to its own viewers and sends them to every other process
with viewers of it, over one TCP connection per peer: the peer's token first, then frames
of a length-prefixed JSON header and the records. Sends never wait: a peer that does not
keep up loses whole pieces, which its viewers see as a gap in the machine's ordinals and
are told of. The copies cross the network in clear: put the API hosts on a private
network (as their database is).

Written with asyncio streams rather than HTTP: one long-lived connection per peer, no
request per piece, and nothing a customer reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import struct
import time

from edgepcap.api.live import Hub, Piece
from edgepcap.control.credentials import new_id
from edgepcap.control.live import Process
from edgepcap.formats import protocol

log = logging.getLogger("edgepcap.api")
FRAME = struct.Struct("!II")  # header length, records length
TOKEN = struct.Struct("!H")  # the token's length, before the token, once per connection
MAX_HEADER = 64 << 10
PEER_BUFFER = 8 << 20  # bytes waiting to a peer beyond which pieces are dropped
WATCHERS_FOR = 0.5  # seconds a capture's list of watching processes is reused
MAX_PEERS = 256  # connections from other processes at once
READ_TIMEOUT = 10.0  # seconds a frame (or the token) may take to arrive once begun
HELLO_TIMEOUT = 5.0
WARN_EVERY = 60.0  # seconds between warnings about one unreachable peer


class Relay:
    """This process's relay: its listener, its connections to peers, and where a
    machine's copies go."""

    def __init__(self, hub: Hub, host: str) -> None:
        self.hub = hub
        self.host = host
        self.id = new_id()
        self.token = secrets.token_urlsafe(32)
        self.address = ""
        self._server: asyncio.Server | None = None
        self._peers: dict[str, asyncio.StreamWriter] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._warned: dict[str, float] = {}
        self._watchers: dict[tuple[str, ...], tuple[float, list[tuple[str, str, str]]]] = {}
        self._serving = 0
        self.dropped = 0

    def process(self) -> Process:
        return Process(self.id, self.address, self.token)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        port = self._server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.address = f"{host}:{port}"
        return self.address

    async def stop(self) -> None:
        for writer in self._peers.values():
            writer.close()
        self._peers.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def publish(
        self, pcap_id: str, piece: Piece, watchers: list[tuple[str, str, str]]
    ) -> None:
        """Hand `piece` to this process's viewers and send it to the other processes in
        `watchers` (id, address, token)."""
        for process_id, address, token in watchers:
            if process_id == self.id:
                self.hub.publish(pcap_id, piece)
            else:
                await self._send(address, token, pcap_id, piece)

    def cached_watchers(self, key: tuple[str, ...]) -> list[tuple[str, str, str]] | None:
        """The watchers looked up for `key` (capture, machine, run) in the last moment."""
        found = self._watchers.get(key)
        if found is None or time.monotonic() - found[0] > WATCHERS_FOR:
            return None
        return found[1]

    def remember_watchers(self, key: tuple[str, ...], watchers: list[tuple[str, str, str]]) -> None:
        now = time.monotonic()
        if len(self._watchers) > 10_000:  # old runs' entries
            self._watchers = {k: v for k, v in self._watchers.items() if now - v[0] <= WATCHERS_FOR}
        self._watchers[key] = (now, watchers)

    async def _peer(self, address: str, token: str) -> asyncio.StreamWriter | None:
        writer = self._peers.get(address)
        if writer is not None and not writer.is_closing():
            return writer
        lock = self._connecting.setdefault(address, asyncio.Lock())
        async with lock:  # one connection per peer, however many pieces wait for it
            writer = self._peers.get(address)
            if writer is not None and not writer.is_closing():
                return writer
            host, _, port = address.rpartition(":")
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host.strip("[]"), int(port)), 1
                )
            except (OSError, TimeoutError, ValueError) as exc:
                if time.monotonic() - self._warned.get(address, -WARN_EVERY) >= WARN_EVERY:
                    self._warned[address] = time.monotonic()
                    log.warning("relay to %s: %s", address, exc)
                return None
            secret = token.encode()
            writer.write(TOKEN.pack(len(secret)) + secret)
            self._peers[address] = writer
            return writer

    async def _send(self, address: str, token: str, pcap_id: str, piece: Piece) -> None:
        writer = await self._peer(address, token)
        if writer is None or writer.transport.get_write_buffer_size() > PEER_BUFFER:
            self.dropped += piece.count
            return
        header = json.dumps({"pcap_id": pcap_id, **_meta(piece)}).encode()
        writer.write(FRAME.pack(len(header), len(piece.records)) + header + piece.records)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._serving >= MAX_PEERS:
            writer.close()
            return
        self._serving += 1
        try:
            # The token before anything else: nothing is buffered for a stranger.
            (size,) = TOKEN.unpack(await asyncio.wait_for(reader.readexactly(2), HELLO_TIMEOUT))
            given = await asyncio.wait_for(reader.readexactly(size), HELLO_TIMEOUT)
            if not hmac.compare_digest(given, self.token.encode()):
                log.warning("relay: a connection without this process's token, closed")
                return
            while True:
                head = await reader.readexactly(FRAME.size)  # idle peers may wait here
                header_len, records_len = FRAME.unpack(head)
                if header_len > MAX_HEADER or records_len > protocol.LIVE_MAX_BYTES:
                    return
                header = json.loads(
                    await asyncio.wait_for(reader.readexactly(header_len), READ_TIMEOUT)
                )
                records = await asyncio.wait_for(reader.readexactly(records_len), READ_TIMEOUT)
                if not isinstance(header, dict):
                    return
                piece = Piece(
                    machine=str(header["machine"]),
                    colo=str(header["colo"]),
                    first=int(header["first"]),
                    count=int(header["count"]),
                    records=records,
                    runs=[[int(a), int(b)] for a, b in header["runs"]],
                    known=None if header.get("known") is None else int(header["known"]),
                )
                self.hub.publish(str(header["pcap_id"]), piece)
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            TimeoutError,
            ValueError,
            KeyError,
            TypeError,
        ):
            return
        finally:
            self._serving -= 1
            writer.close()


def _meta(piece: Piece) -> dict[str, object]:
    return {
        "machine": piece.machine,
        "colo": piece.colo,
        "first": piece.first,
        "count": piece.count,
        "runs": piece.runs,
        "known": piece.known,
    }
