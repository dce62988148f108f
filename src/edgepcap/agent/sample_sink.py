"""Where the sampler's batches go when the control plane says so at registration: straight
into ClickHouse (`protocol.SampleSink`), as this machine's insert-only user.

A batch's WIRE bytes are ClickHouse RowBinary rows as they are (`samples.ROW_BINARY`), so a
batch is one POST of the bytes the API path would have been sent: no per-record work here.
"""

from __future__ import annotations

import httpx

from edgepcap.formats import protocol

TIMEOUT = 30.0


class ClickHouseSink:
    """Inserts batches into the machine's table over ClickHouse's HTTP interface."""

    def __init__(self, sink: protocol.SampleSink) -> None:
        self.sink = sink
        self.http = httpx.Client(auth=(sink["user"], sink["password"]), timeout=TIMEOUT)

    def insert(self, body: bytes) -> None:
        """One batch, all of it or (an exception) none of it."""
        r = self.http.post(
            self.sink["url"],
            params={"query": f"INSERT INTO {self.sink['table']} FORMAT RowBinary"},
            content=body,
        )
        if r.status_code != 200:
            # ClickHouse's message, not the body: it names the table, never the password.
            raise RuntimeError(f"ClickHouse refused a sample batch: {r.status_code} {r.text[:300]}")

    def close(self) -> None:
        self.http.close()
