"""Which heavy keys the traffic tally names: ties at the floor go by label, in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from edgepcap.control.samples import tally, traffic
from edgepcap.formats import samples as records


def addresses(n: int, v6_share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keys = np.zeros(n, dtype=tally.ADDRESS)
    keys["fam"] = 4
    keys["lo"] = records.MAPPED | rng.integers(0, 2**32, n, dtype=np.uint64)
    edge = np.array([0, 1, 10, 16, 17, 100, 255, 0xFFFFFFFF], dtype=np.uint64)
    keys["lo"][: len(edge)] = records.MAPPED | edge
    v6 = rng.random(n) < v6_share
    keys["fam"][v6] = 6
    keys["hi"][v6] = rng.integers(0, 2**64, int(v6.sum()), dtype=np.uint64)
    keys["hi"][:20][v6[:20]] = 0  # some ::ffff:a.b.c.d of family 6: IPv6 text
    return keys


def text(key) -> str:
    if isinstance(key, tuple):
        return traffic.label(records.join(key[1], key[2], key[0]))
    return traffic.label(key)


@pytest.mark.parametrize(
    ("n", "v6_share", "count"), [(5000, 0.0, 200), (5000, 0.3, 150), (300, 0.5, 300), (50, 0.0, 0)]
)
def test_label_order_is_the_labels_order(n, v6_share, count):
    keys = addresses(n, v6_share, seed=n)
    labels = [text(k) for k in keys.tolist()]
    want = sorted(labels)[:count]
    assert [labels[i] for i in tally.label_order(keys, count)] == want
    ports = np.array([-1, 53, 1000, 443, 0, 65535, 9])
    got = [traffic.label(p) for p in ports[tally.label_order(ports, 5)].tolist()]
    assert got == ["0", "1000", "443", "53", "65535"]


def test_heaviest_keeps_the_top_by_total_then_label():
    keys = addresses(3000, 0.1, seed=4)
    keys = np.sort(keys, order=("fam", "hi", "lo"))
    rng = np.random.default_rng(5)
    totals = np.where(rng.random(len(keys)) < 0.02, rng.integers(2, 9, len(keys)), 1)
    index = np.flatnonzero(rng.random(len(keys)) < 0.9)
    got = tally.heaviest(keys, totals, index)
    ranked = sorted(index.tolist(), key=lambda i: (-totals[i], text(keys[i].item())))
    assert sorted(got.tolist()) == sorted(ranked[: tally.MAX_GROUPS])


def test_a_heavy_other_takes_no_named_group_s_place():
    from edgepcap.control.samples.traffic import TrafficQuery
    from edgepcap.formats.filters import FilterV1

    q = TrafficQuery("a" * 32, 0, 60 * traffic.NS, 60 * traffic.NS, "source_port", FilterV1(), ())
    t = tally.Tally(q)
    ports = np.arange(1000, 1000 + tally.MAX_GROUPS + 50, dtype=np.int64)
    keys = np.concatenate([ports, [tally.INT_OTHER]])
    samples = np.concatenate([np.arange(len(ports), 0, -1), [10**6]])
    t.add(keys, np.zeros(len(keys), dtype=np.int64), samples, samples * 100)
    groups = t.groups()
    assert traffic.OTHER in groups
    assert sorted(k for k in groups if k != traffic.OTHER) == ports[: tally.MAX_GROUPS].tolist()
    assert sum(int(c.samples.sum()) for c in groups.values()) == int(samples.sum())
