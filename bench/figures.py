"""What every figure of the suite is made of: the `Figure` row, percentiles, ports."""

from __future__ import annotations

import math
import socket
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EDGEPCAP = str(Path(sys.executable).parent / "edgepcap")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Figure:
    def __init__(
        self,
        name: str,
        ours: float,
        baseline: float | None,
        target: str,
        ok: bool,
        unit: str,
        limits: str,
        detail: Any,
        judged_on: str | None = None,
    ) -> None:
        self.name, self.ours, self.baseline, self.target = name, ours, baseline, target
        self.ok, self.unit, self.limits, self.detail = ok, unit, limits, detail
        # The measure PASS/FAIL is decided on, when not the ratio of the two values.
        self.judged_on = judged_on

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.baseline else None

    def line(self) -> str:
        base = "-" if self.baseline is None else f"{self.baseline:.4g}"
        ratio = "-" if self.ratio is None else f"{self.ratio:.3f}"
        return (
            f"{self.name}\t{self.ours:.4g} {self.unit}\t{base}\t{ratio}\t{self.target}\t"
            f"{'PASS' if self.ok else 'FAIL'}" + (f"\t{self.judged_on}" if self.judged_on else "")
        )


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def percentile(xs: list[float], p: float) -> float:
    """The nearest-rank percentile: the smallest value with p % of them at or below it
    (of 100 values, p99 is the 99th smallest; the suite once took the 100th, the maximum)."""
    ordered = sorted(xs)
    return ordered[max(0, math.ceil(p * len(ordered) / 100) - 1)]
