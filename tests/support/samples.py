"""Sample records as an agent would ship them, for the sample-store and ingest tests."""

from __future__ import annotations

import numpy as np

from edgepcap.formats import samples as records
from tests.support.packets import udp


def claim(specs: list[tuple[str, str]], account_id: str, ts_ns: int) -> np.ndarray:
    """Wire records of UDP packets (src, dst) all filed under `account_id`, whatever their
    addresses: what a wrong attribution, or a forging agent, would send."""
    snaps = [udp(src, dst, 1000, 53, b"p" * 200) for src, dst in specs]
    rows = records.parse(snaps, [ts_ns] * len(snaps), [len(s) for s in snaps])
    wire = np.zeros(len(rows), dtype=records.WIRE)
    for name in records.STORED.names:
        wire[name] = rows[name]
    wire["account"] = np.frombuffer(bytes.fromhex(account_id), dtype=f"V{records.ACCOUNT_BYTES}")[0]
    return wire
