"""Sample-capture memory: a window of 3 M stored samples answered with its newest 10 000.

One account's 3 M samples over 300 s (~640 MB of records) in the embedded store; a fresh
process (`python -m bench.sample_memory ROOT ACCOUNT MODE END_NS`) answers the sample query
and reports its peak RSS. The baseline is the same query answered the way the store did
before it read chunk by chunk: every segment of the window concatenated, then filtered.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgepcap.control.samples.segments import SegmentStore
from edgepcap.control.samples.store import SampleQuery, matching, newest
from edgepcap.formats import samples as records
from edgepcap.formats.filters import FilterV1

WINDOW_S = 300
LIMIT = 10_000
ACCOUNT = "e" * 32


def _high_water_kib() -> int:
    """This process's peak RSS (VmHWM: getrusage's ru_maxrss keeps the parent's across
    fork and exec, which for the bench is the filled store's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def answer(root: Path, mode: str, end: int, nets: tuple) -> dict[str, int]:
    """The query in this process, `ours` or the `whole` window at once; its peak RSS. This
    process imports what an API process needs for it, not the bench's own modules."""
    start = end - WINDOW_S * 1_000_000_000
    q = SampleQuery(ACCOUNT, start, end, FilterV1(protocol=17), LIMIT, nets)
    before = _high_water_kib()
    if mode == "ours":
        rows = SegmentStore(root, dt.timedelta(hours=25)).query(q)
    else:
        files = sorted(root.glob(f"*/{ACCOUNT}/*.seg"))
        whole = np.concatenate([np.fromfile(f, records.STORED) for f in files])
        rows = newest(matching(whole, q), q.limit)
    peak = _high_water_kib()
    return {"rows": len(rows), "start_kib": before, "peak_kib": peak}


def measure(n: int) -> dict[str, Any]:
    from bench import samples

    nets = ",".join(str(samples.account_net(i)) for i in range(samples.ACCOUNTS))
    with tempfile.TemporaryDirectory(prefix="edgepcap-bench-memory-") as tmp:
        root = Path(tmp) / "samples"
        store = SegmentStore(root, retention=dt.timedelta(hours=25), partition_seconds=60)
        end = time.time_ns()
        span = WINDOW_S * 1_000_000_000
        # One account: every sample under its id, a slice at a time (bounded memory here).
        for k in range(10):
            ids = [ACCOUNT] * samples.ACCOUNTS
            wire = samples.synth(n // 10, end - span, span, ids, seed=k)
            parts = wire["ts"] // (60 * 1_000_000_000)
            for p in np.unique(parts):
                store.append(wire[parts == p], "bench01")
            del wire
        out = {}
        for mode in ("ours", "whole"):
            argv = [sys.executable, "-m", "bench.sample_memory", str(root), mode, str(end), nets]
            r = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
            out[mode] = json.loads(r.stdout)
    return {"samples": n, "window_s": WINDOW_S, "limit": LIMIT, **out}


def figure(quick: bool) -> Any:
    from bench.figures import Figure

    r = measure(300_000 if quick else 3_000_000)
    ours, whole = (r[m]["peak_kib"] / 1024 for m in ("ours", "whole"))
    return Figure(
        f"sample capture memory: newest {LIMIT} of {r['samples'] / 1e6:g} M samples / 300 s",
        ours,
        whole,
        "< 200 MiB peak RSS",
        ours < 200 and r["ours"]["rows"] == LIMIT,
        "MiB",
        "the interpreter and numpy, a chunk of records (~7 MB) and the answer; the baseline "
        "concatenates the whole window",
        r,
    )


if __name__ == "__main__":
    given = tuple(ipaddress.ip_network(n) for n in sys.argv[4].split(","))
    print(json.dumps(answer(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), given)))
