"""Live copies between API processes: machines' copies reach whichever process their
agent talks to, and viewers may be on any other one sharing the database.

Each process listens on a relay port of its own (`EDGEPCAP_RELAY_HOST`, any free port),
advertised in the database with a per-run token (`control.live`). A process that gets
copies of a capture hands them to its own viewers and sends them to every other process
with viewers of it, over one TCP connection per peer, framed as a length-prefixed JSON
header and the records. Sends never wait: a peer that does not keep up loses whole
pieces, which its viewers see as a gap in the machine's ordinals and are told of.

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

log = logging.getLogger("edgepcap.api")
FRAME = struct.Struct("!II")  # header length, records length
MAX_HEADER = 1 << 20
MAX_RECORDS = 64 << 20
PEER_BUFFER = 8 << 20  # bytes waiting to a peer beyond which pieces are dropped
WATCHERS_FOR = 0.5  # seconds a capture's list of watching processes is reused


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
        self._watchers: dict[tuple[str, ...], tuple[float, list[tuple[str, str, str]]]] = {}
        self.dropped = 0

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

    async def _send(self, address: str, token: str, pcap_id: str, piece: Piece) -> None:
        writer = self._peers.get(address)
        if writer is None or writer.is_closing():
            host, _, port = address.rpartition(":")
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host.strip("[]"), int(port)), 1
                )
            except (OSError, TimeoutError) as exc:
                self.dropped += piece.count
                log.warning("relay to %s: %s", address, exc)
                return
            self._peers[address] = writer
        if writer.transport.get_write_buffer_size() > PEER_BUFFER:
            self.dropped += piece.count
            return
        header = json.dumps({"token": token, "pcap_id": pcap_id, **_meta(piece)}).encode()
        writer.write(FRAME.pack(len(header), len(piece.records)) + header + piece.records)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(FRAME.size)
                header_len, records_len = FRAME.unpack(head)
                if header_len > MAX_HEADER or records_len > MAX_RECORDS:
                    return
                header = json.loads(await reader.readexactly(header_len))
                records = await reader.readexactly(records_len)
                if not hmac.compare_digest(str(header.get("token", "")), self.token):
                    log.warning("relay: a connection without this process's token, closed")
                    return
                piece = Piece(
                    machine=str(header["machine"]),
                    colo=str(header["colo"]),
                    first=int(header["first"]),
                    count=int(header["count"]),
                    records=records,
                    runs=[[int(a), int(b)] for a, b in header["runs"]],
                )
                self.hub.publish(str(header["pcap_id"]), piece)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError, TypeError):
            return
        finally:
            writer.close()


def _meta(piece: Piece) -> dict[str, object]:
    return {
        "machine": piece.machine,
        "colo": piece.colo,
        "first": piece.first,
        "count": piece.count,
        "runs": piece.runs,
    }
