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
    """Fields of `filter_v1`; an absent or null field matches everything, and a packet
    must match every field given.

    `address` and `port` are edgepcap's own (Cloudflare's filter has a source and a
    destination only): they match a packet whichever way it goes, as `host` and `port` do
    in a capture filter (tcpdump's, Wireshark's).
    """

    model_config = ConfigDict(extra="forbid")

    source_address: str | None = None
    destination_address: str | None = None
    source_port: Port | None = None
    destination_port: Port | None = None
    protocol: Protocol | None = None
    address: str | None = None
    port: Port | None = None

    @field_validator("source_address", "destination_address", "address", mode="before")
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

    @property
    def either(self) -> IPAddress | None:
        """`address`: the source or the destination."""
        return ipaddress.ip_address(self.address) if self.address else None

    @property
    def has_ports(self) -> bool:
        return any(p is not None for p in (self.source_port, self.destination_port, self.port))


def summary(f: dict[str, Any]) -> str:
    """A `filter_v1` as given in the API (a dict, fields absent when unset) in one line,
    such as `192.0.2.1:53 → any proto 17`, or `203.0.113.9:80 either way proto 6` with the
    fields that match either direction. The dashboard's `filterSummary` (app.js) is a
    copy of this in JavaScript: change both together."""
    if not f:
        return "all packets"
    src = f.get("source_address", "any") + (f":{f['source_port']}" if "source_port" in f else "")
    dst = f.get("destination_address", "any") + (
        f":{f['destination_port']}" if "destination_port" in f else ""
    )
    if "address" in f or "port" in f:
        if "address" in f:
            either = f["address"] + (f":{f['port']}" if "port" in f else "")
        else:
            either = f"port {f['port']}"
        parts = [f"{either} either way"]
        if src != "any" or dst != "any":
            parts.insert(0, f"{src} → {dst}")
    else:
        parts = [f"{src} → {dst}"]
    if "protocol" in f:
        parts.append(f"proto {f['protocol']}")
    return " ".join(parts)
