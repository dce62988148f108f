"""The `filter_v1` capture filter: typed, validated fields, the protocols whose ports it can
match, and its one-line summary for people."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# tcp, udp, dccp, sctp, udplite: their headers start with the source and destination port,
# so a port filter can match them, and only them.
PORT_PROTOCOLS = (6, 17, 33, 132, 136)


def integral(value: Any) -> int:
    """Accept a JSON integer or a float with no fraction (the Cloudflare SDK sends floats)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(f"must be a whole number, got {value!r}")
    raise ValueError(f"must be a JSON number, got {type(value).__name__}")


def _ranged(low: int, high: int) -> BeforeValidator:
    def check(value: Any) -> int:
        number = integral(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return BeforeValidator(check)


Integral = Annotated[int, BeforeValidator(integral)]
Port = Annotated[int, _ranged(0, 65535), Field(ge=0, le=65535)]
Protocol = Annotated[int, _ranged(0, 255), Field(ge=0, le=255)]


def parse_host(value: Any) -> IPAddress:
    if not isinstance(value, str):
        raise ValueError("must be an IP address in a JSON string")
    if "/" in value:
        raise ValueError(
            f"{value!r} is a prefix: give one host address such as 203.0.113.7 or 2001:db8::7"
        )
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            raise ValueError(
                f"{value!r} is an IPv4-mapped IPv6 address: use the IPv4 form {addr.ipv4_mapped}"
            )
        if addr.scope_id:
            raise ValueError(f"{value!r} has a zone index, which a capture filter cannot use")
    return addr


class FilterV1(BaseModel):
    """Fields of `filter_v1`; an absent or null field matches everything."""

    model_config = ConfigDict(extra="forbid")

    source_address: str | None = None
    destination_address: str | None = None
    source_port: Port | None = None
    destination_port: Port | None = None
    protocol: Protocol | None = None

    @field_validator("source_address", "destination_address", mode="before")
    @classmethod
    def _address(cls, value: Any) -> str | None:
        if value is None:
            return None
        return str(parse_host(value))

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)

    @property
    def source(self) -> IPAddress | None:
        return ipaddress.ip_address(self.source_address) if self.source_address else None

    @property
    def destination(self) -> IPAddress | None:
        return ipaddress.ip_address(self.destination_address) if self.destination_address else None


def summary(f: dict[str, Any]) -> str:
    """A `filter_v1` as given in the API (a dict, fields absent when unset) in one line,
    such as `192.0.2.1:53 → any proto 17`. The dashboard's `filterSummary` (app.js) is a
    copy of this in JavaScript: change both together."""
    if not f:
        return "all packets"
    src = f.get("source_address", "any") + (f":{f['source_port']}" if "source_port" in f else "")
    dst = f.get("destination_address", "any") + (
        f":{f['destination_port']}" if "destination_port" in f else ""
    )
    proto = f" proto {f['protocol']}" if "protocol" in f else ""
    return f"{src} → {dst}{proto}"
