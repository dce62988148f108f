"""What the control plane refuses of an agent's sample batch, before any tenancy check.

A sample's timestamp decides which partition keeps it and when retention drops it: one
from the future would be kept for ever, and one from long ago is not what the agent just
saw. Its `cap_len` decides how many bytes of `data` a sample PCAP writes: over SNAPLEN it
would read past the record, over `orig_len` it claims bytes the packet never had.
"""

from __future__ import annotations

import numpy as np

from edgepcap.formats.samples import SNAPLEN

# Agents ship every 0.5 s and keep a backlog while the control plane is away; clocks are
# NTP-synchronised. Five minutes both ways covers short outages and skew, not forgeries.
MAX_SKEW_NS = 300 * 1_000_000_000
# Why records are refused: the reasons /metrics counts (`edgepcap_samples_refused_total`).
# `machine` and `boot` refuse a whole batch (another machine's name, no current boot).
REASONS = ("machine", "boot", "future", "stale", "cap_len")


def refusals(wire: np.ndarray, now_ns: int) -> tuple[np.ndarray, dict[str, int]]:
    """The mask of records that may be kept, and how many of the others each reason took
    (each refused record counted once, under its first reason)."""
    ts = wire["ts"]
    bad = {
        "cap_len": (wire["cap_len"] > SNAPLEN) | (wire["cap_len"] > wire["orig_len"]),
        "future": ts > now_ns + MAX_SKEW_NS,
        "stale": ts < now_ns - MAX_SKEW_NS,
    }
    ok = np.ones(len(wire), dtype=bool)
    counts: dict[str, int] = {}
    for reason, mask in bad.items():
        counts[reason] = int((mask & ok).sum())
        ok &= ~mask
    return ok, counts
