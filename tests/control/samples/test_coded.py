"""An hour's codes cut to their heaviest: `coded._heaviest` against the plain rule."""

from __future__ import annotations

import numpy as np
import pytest

from edgepcap.control.samples import coded


def plain_rule(totals: np.ndarray, top: int | None) -> np.ndarray:
    """The codes with samples, or the `top` heaviest of them, ties by lowest code."""
    live = np.flatnonzero(totals)
    if top is None or len(live) <= top:
        return live
    ranked = sorted(live.tolist(), key=lambda c: (-totals[c], c))
    return np.array(sorted(ranked[:top]))


@pytest.mark.parametrize(
    "shape",
    [
        "random sources",  # most keys one sample, under `top` more: the floor is 1
        "busier sources",  # over `top` keys with more than one sample
        "ports",  # a few heavy keys, then a long tail
        "flat",  # every key the same total
        "few",  # fewer keys than top
    ],
)
def test_heaviest_is_the_top_by_total_then_code(shape):
    rng = np.random.default_rng(5)
    n, top = 200_000, 1000
    if shape.endswith("sources"):
        samples = 20_000 if shape == "random sources" else 60_000
        totals = np.bincount(rng.integers(0, n, samples), minlength=n)
        assert (np.count_nonzero(totals > 1) < top) == (shape == "random sources")
    elif shape == "ports":
        totals = np.bincount(rng.zipf(1.3, 300_000) % n, minlength=n)
    elif shape == "flat":
        totals = np.where(rng.random(n) < 0.3, 4, 0)
    else:
        totals = np.zeros(n, dtype=np.int64)
        totals[rng.choice(n, 500, replace=False)] = rng.integers(1, 9, 500)
    got = coded._heaviest(totals, top)
    assert (got == plain_rule(totals, top)).all()
    assert (coded._heaviest(totals, None) == np.flatnonzero(totals)).all()
