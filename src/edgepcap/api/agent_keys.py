"""Agent keys verified by this API process, kept in memory while revocations reach it.

Every agent request presents its key; reading it from the database each time was most of
a heartbeat's cost and a round trip on the event loop (BENCHMARKS.md, fleet). A key
found valid and bound to a machine is kept, by its hash, while this process hears other
processes' word over PostgreSQL's LISTEN/NOTIFY (`control.changes`): a revocation
announces itself in the revoking transaction and every process forgets what it kept.
While the listener is away (and on SQLite, where nothing announces), every request reads
the key again. KEEP_FOR bounds how long a key is trusted without a look even so: word
lost on a connection not yet found dead.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Row

from edgepcap.control import fleet
from edgepcap.control.changes import Channel
from edgepcap.control.credentials import hash_secret
from edgepcap.control.db import Database

KEEP_FOR = 60.0


class AgentKeys:
    def __init__(self, db: Database, channel: Channel | None = None) -> None:
        self.db = db
        self.channel = channel
        self._kept: dict[str, tuple[float, Row[Any]]] = {}  # key hash: (until, binding)
        # Bumped by every `forget`: a read that began before it is not kept.
        self._generation = 0

    def forget(self) -> None:
        """Keys were revoked (or word of it may have been lost): read each one again.
        From the listener's thread."""
        self._generation += 1
        self._kept = {}

    def binding(self, key: str) -> Row[Any] | None:
        """The key's id, revocation and machine (`fleet.agent_key_binding`), or None."""
        listening = self.channel is not None and self.channel.listening
        digest = hash_secret(key)
        now = time.monotonic()
        if listening:
            kept = self._kept.get(digest)
            if kept is not None and kept[0] > now:
                return kept[1]
        generation = self._generation
        row = self.db.read(lambda conn: fleet.agent_key_binding(conn, key))
        usable = row is not None and row.revoked is None and row.machine is not None
        if listening and usable and generation == self._generation:
            self._kept[digest] = (now + KEEP_FOR, row)
        return row
