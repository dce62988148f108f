"""Bodies of edgepcap's own endpoints beyond Cloudflare's API: the sampled-traffic view
and capture triggers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class TrafficSeries(BaseModel):
    """One group's estimated traffic: totals over the window and a point per step."""

    key: str = Field(description="The group's value (`other`: every group below the top N)")
    samples: int = Field(description="Samples counted (the estimate's basis)")
    packets: int = Field(description="Estimated packets: samples * sample_rate")
    bits: int = Field(description="Estimated bits: sampled original bytes * 8 * sample_rate")
    packets_error_95: int = Field(
        description="95 % bound of `packets` (binomial): ± 1.96 · rate · √(samples (1 - 1/rate))"
    )
    points: list[tuple[int, float, float]] = Field(
        description="[unix seconds of the step's start, est. packets/s, est. bits/s]"
    )


class TrafficOut(BaseModel):
    """An account's sampled traffic, estimated from its 1-in-`sample_rate` samples."""

    since: str
    until: str
    step: int
    sample_rate: int
    group_by: str
    filter_v1: dict[str, Any]
    samples: int
    estimated: Literal[True] = True
    series: list[TrafficSeries]
