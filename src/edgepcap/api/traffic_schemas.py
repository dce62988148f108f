"""Bodies of edgepcap's own endpoints beyond Cloudflare's API: the sampled-traffic view
and capture triggers."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from edgepcap.api.schemas import CreatePcap
from edgepcap.formats.filters import FilterV1, Integral

MAX_PPS = 1_000_000_000
MIN_WINDOW, MAX_WINDOW = 10, 300
MAX_COOLDOWN = 7 * 86_400
DEFAULT_LIFE = dt.timedelta(hours=24)
MAX_LIFE = dt.timedelta(days=30)


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


class CreateTrigger(BaseModel):
    """Body of `POST /accounts/{account_id}/pcaps/triggers`."""

    model_config = ConfigDict(extra="forbid")

    filter_v1: FilterV1 = Field(default_factory=FilterV1)
    threshold_pps: Integral = Field(json_schema_extra={"minimum": 1, "maximum": MAX_PPS})
    window: Integral = Field(10, json_schema_extra={"minimum": MIN_WINDOW, "maximum": MAX_WINDOW})
    cooldown: Integral = Field(300, json_schema_extra={"minimum": 0, "maximum": MAX_COOLDOWN})
    expires: AwareDatetime | None = Field(
        None, description="Default: 24 h from now; at most 30 days ahead"
    )
    capture: CreatePcap = Field(
        description="A full capture's body; filter_v1 defaults to this one's"
    )

    @model_validator(mode="after")
    def _check(self) -> CreateTrigger:
        if not 1 <= self.threshold_pps <= MAX_PPS:
            raise ValueError(f"`threshold_pps` must be between 1 and {MAX_PPS}")
        if not MIN_WINDOW <= self.window <= MAX_WINDOW:
            raise ValueError(f"`window` must be between {MIN_WINDOW} and {MAX_WINDOW} seconds")
        if not 0 <= self.cooldown <= MAX_COOLDOWN:
            raise ValueError(f"`cooldown` must be between 0 and {MAX_COOLDOWN} seconds")
        now = dt.datetime.now(dt.UTC)
        if self.expires is None:
            self.expires = now + DEFAULT_LIFE
        if self.expires <= now:
            raise ValueError("`expires` is in the past")
        if self.expires > now + MAX_LIFE:
            raise ValueError("`expires` is more than 30 days ahead")
        if self.capture.type != "full":
            raise ValueError("`capture.type` must be full: a trigger starts a full capture")
        return self


class TriggerFire(BaseModel):
    at: str
    pcap_id: str
    estimated_pps: int


class TriggerRefusal(BaseModel):
    at: str
    estimated_pps: int
    message: str = Field(description="Why the capture could not be made then")


class TriggerOut(BaseModel):
    """A trigger and what it did."""

    id: str
    filter_v1: dict[str, Any]
    threshold_pps: int
    window: int
    cooldown: int
    expires: str
    created: str
    status: Literal["armed", "cooling_down", "expired"]
    capture: dict[str, Any]
    fired: list[TriggerFire]
    refused: list[TriggerRefusal]
