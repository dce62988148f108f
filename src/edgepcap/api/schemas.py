"""Request and response bodies of the PCAPs API, shaped like Cloudflare's."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Generic, Literal, TypeVar, get_type_hints

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model, model_validator

from edgepcap.formats.filters import PORT_PROTOCOLS, FilterV1, Integral
from edgepcap.formats.packets import Decoded

T = TypeVar("T")

SIMPLE_TIME_LIMIT = 300
FULL_TIME_LIMIT = 86_400
MAX_PACKET_LIMIT = 10_000
MAX_BYTE_LIMIT = 1_000_000_000
SAMPLE_HISTORY = dt.timedelta(hours=24)
CLOCK_SKEW = dt.timedelta(seconds=5)
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def hex_id(what: str) -> Any:
    """A path id: the pattern is documented, not enforced here, so each route can answer a
    malformed id its own way (400 with code 1006 for captures and buckets, 403 for accounts)."""
    return Path(
        description=f"The {what}: 32 lowercase hexadecimal digits",
        max_length=64,
        json_schema_extra={"pattern": ID_PATTERN.pattern},
    )


PcapId = Annotated[str, hex_id("capture id")]
# Where the route itself judges the credentials first, then the id (the GET of one capture).
UncheckedPcapId = Annotated[
    str,
    Path(
        description="The capture id: 32 lowercase hexadecimal digits",
        json_schema_extra={"pattern": ID_PATTERN.pattern},
    ),
]
AccountId = Annotated[str, hex_id("account id")]
BucketId = Annotated[str, hex_id("bucket id")]


def _range(low: int, high: int) -> dict[str, Any]:
    return {"minimum": low, "maximum": high}


def _in_range(name: str, value: int | None, low: int, high: int, unit: str, kind: str) -> None:
    if value is not None and not low <= value <= high:
        raise ValueError(
            f"`{name}` must be between {low} and {high} {unit} for {kind} captures (got {value})"
        )


class CreatePcap(BaseModel):
    """Body of `POST /accounts/{account_id}/pcaps` (sample: type simple; full: type full)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    system: Literal["magic-transit"]
    type: Literal["simple", "full"]
    # The widest ranges, documented; _rules_of_type enforces each type's own.
    time_limit: Integral = Field(json_schema_extra=_range(1, FULL_TIME_LIMIT))
    packet_limit: Integral | None = Field(None, json_schema_extra=_range(1, MAX_PACKET_LIMIT))
    byte_limit: Integral | None = Field(None, json_schema_extra=_range(1, MAX_BYTE_LIMIT))
    colo_name: str | None = Field(default=None, max_length=64)
    colo: str | None = Field(default=None, max_length=64, description="Alias of colo_name")
    destination_conf: str | None = Field(default=None, max_length=1024)
    offset_time: AwareDatetime | None = None
    filter_v1: FilterV1 | None = None

    @model_validator(mode="after")
    def _rules_of_type(self) -> CreatePcap:
        f = self.filter_v1
        if (
            f is not None
            and f.protocol is not None
            and f.has_ports
            and f.protocol not in PORT_PROTOCOLS
        ):
            raise ValueError(
                f"`filter_v1.protocol` {f.protocol} has no ports: a port filter needs TCP (6), "
                "UDP (17), DCCP (33), SCTP (132) or UDP-Lite (136)"
            )
        if self.type == "simple":
            _in_range("time_limit", self.time_limit, 1, SIMPLE_TIME_LIMIT, "seconds", "sample")
            if self.packet_limit is None:
                raise ValueError(
                    f"`packet_limit` is required for sample captures (1 to {MAX_PACKET_LIMIT})"
                )
            _in_range("packet_limit", self.packet_limit, 1, MAX_PACKET_LIMIT, "packets", "sample")
            for name in ("byte_limit", "colo_name", "colo", "destination_conf"):
                if getattr(self, name) is not None:
                    raise ValueError(f"`{name}` applies only to full captures (type: full)")
            if self.offset_time is not None:
                now = dt.datetime.now(dt.UTC)
                if self.offset_time > now + CLOCK_SKEW:
                    raise ValueError(
                        "`offset_time` is in the future: give a time within the last 24 h"
                    )
                if self.offset_time < now - SAMPLE_HISTORY:
                    raise ValueError(
                        "`offset_time` is older than 24 h: sample history keeps the last 24 hours"
                    )
        else:
            _in_range("time_limit", self.time_limit, 1, FULL_TIME_LIMIT, "seconds", "full")
            _in_range("packet_limit", self.packet_limit, 1, MAX_PACKET_LIMIT, "packets", "full")
            _in_range("byte_limit", self.byte_limit, 1, MAX_BYTE_LIMIT, "bytes", "full")
            if self.colo_name and self.colo and self.colo_name != self.colo:
                raise ValueError("`colo_name` and its alias `colo` disagree: send one of them")
            self.colo_name = self.colo_name or self.colo
            self.colo = None
            if not self.colo_name:
                raise ValueError(
                    "`colo_name` is required for full captures: a colo (ORD) or a machine (ord02)"
                )
            if not self.destination_conf:
                raise ValueError(
                    "`destination_conf` is required for full captures: a bucket you have "
                    "validated with POST /pcaps/ownership"
                )
            if self.offset_time is not None:
                raise ValueError("`offset_time` applies only to sample captures (type: simple)")
        return self


class MachinePart(BaseModel):
    """One machine's part of a full capture (beyond Cloudflare's fields)."""

    machine: str
    state: Literal["assigned", "running", "done", "failed"]
    packets: int
    bytes: int
    kernel_matched: int
    dropped: int
    overruns: int
    object: str | None
    error: str | None


class PcapOut(BaseModel):
    """A capture as the API reports it (the fields of the SDK's PCAP and full response models)."""

    id: str
    submitted: str
    filter_v1: dict[str, Any]
    time_limit: int
    packet_limit: int | None
    byte_limit: int | None
    colo_name: str | None
    destination_conf: str | None
    status: Literal["pending", "running", "success", "failed"]
    type: Literal["simple", "full"]
    system: Literal["magic-transit"]
    packets_captured: int
    error_message: str | None
    stop_requested: str | None
    offset_time: str | None
    trigger_id: str | None = Field(
        None, description="The trigger that started this capture (null: made by hand)"
    )
    machines: list[MachinePart] = Field(
        default_factory=list, description="Per-machine progress and kernel drops (full captures)"
    )


class OwnershipCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    destination_conf: str = Field(max_length=1024)


class OwnershipValidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    destination_conf: str = Field(max_length=1024)
    ownership_challenge: str = Field(max_length=4096)


class OwnershipOut(BaseModel):
    id: str
    destination_conf: str
    filename: str
    status: Literal["pending", "success", "failed"]
    submitted: str
    validated: str | None


class ColoMachine(BaseModel):
    name: str
    live: bool


class ColoOut(BaseModel):
    """A colo, its machines and how many of them are live (beyond Cloudflare)."""

    colo: str
    machines: list[ColoMachine]
    live: int


# A preview row is a decoded packet and its bytes in hex: derived from `packets.Decoded`,
# so that the documented schema cannot drift from what the endpoint returns.
PreviewPacket = create_model(
    "PreviewPacket",
    **{name: (kind, ...) for name, kind in get_type_hints(Decoded).items()},
    hex=(str, ...),
)


class PreviewOut(BaseModel):
    linktype: int
    snaplen: int
    packets: list[PreviewPacket]


class DeletedOut(BaseModel):
    id: str


class ErrorItem(BaseModel):
    code: int = Field(ge=1000, description="An edgepcap error code (docs/api.md)")
    message: str


class Envelope(BaseModel, Generic[T]):
    result: T | None
    success: bool
    errors: list[ErrorItem]
    messages: list[Any]


class ErrorEnvelope(BaseModel):
    """Every refusal: `success` false, at least one error, `result` null."""

    result: None
    success: Literal[False]
    errors: list[ErrorItem] = Field(min_length=1)
    messages: list[Any]


_SECONDS = {"schema": {"type": "integer", "minimum": 1}}
_ERRORS: dict[int, dict[str, Any]] = {
    400: {"description": "Malformed JSON, an unknown, missing or invalid field, a malformed id"},
    401: {
        "description": "Missing or invalid credentials",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: {"description": "The credentials are not valid for this account"},
    404: {"description": "No such capture or bucket in this account"},
    409: {"description": "The capture is not in a state that allows this"},
    413: {"description": "The request body is larger than 64 KiB"},
    415: {"description": "The request body is not `application/json`"},
    429: {
        "description": "One sample capture per minute, or a full capture already active",
        "headers": {"Retry-After": {**_SECONDS, "description": "Seconds to wait"}},
    },
    502: {"description": "The capture's bucket could not be read"},
    503: {
        "description": "The metadata database is unreachable (code 1501); retry",
        "headers": {"Retry-After": {**_SECONDS, "description": "Seconds to wait"}},
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these error statuses, each with the error envelope."""
    return {status: {"model": ErrorEnvelope, **_ERRORS[status]} for status in statuses}
