"""Bucket URLs (`destination_conf`): what policy accepts, their parts, and their one
canonical spelling. Needs no server settings and reaches no store (`destinations` does)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

SCHEMES = ("file", "s3", "gs", "az")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,62}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._\-]+$")


class DestinationError(ValueError):
    """A destination that cannot be used; the message names the cause."""


def _clean_prefix(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", "..") or not _SEGMENT.match(part):
            raise DestinationError(
                f"path segment {part!r} is not allowed: use letters, digits, '.', '-' and '_'"
            )
    return "/".join(parts)


@dataclass(frozen=True)
class Parts:
    """A `destination_conf` taken apart, within policy."""

    scheme: str
    bucket: str  # empty for file://
    prefix: str  # no leading, trailing or doubled slashes
    region: str | None

    def canonical(self) -> str:
        if self.scheme == "file":
            return f"file:///{self.prefix}"
        path = f"/{self.prefix}" if self.prefix else ""
        query = f"?region={self.region}" if self.region else ""
        return f"{self.scheme}://{self.bucket}{path}{query}"


def split(conf: str) -> Parts:
    """The parts of a `destination_conf`, refusing anything outside policy (no settings)."""
    if not isinstance(conf, str) or not conf or len(conf) > 1024:
        raise DestinationError("destination_conf must be a bucket URL of at most 1024 characters")
    try:
        url = urlsplit(conf)
    except ValueError as exc:
        raise DestinationError(f"destination_conf {conf!r} is not a URL: {exc}") from exc
    scheme = url.scheme.lower()
    if scheme not in SCHEMES:
        raise DestinationError(
            f"destination_conf scheme {url.scheme or '(none)'!r} is not supported: "
            "use file:///dir, s3://bucket/dir, gs://bucket/dir or az://container/dir"
        )
    if url.fragment or "@" in url.netloc:
        raise DestinationError(
            "destination_conf must not carry credentials, ports or fragments: "
            "credentials and endpoints are server configuration"
        )
    if ":" in url.netloc:
        raise DestinationError(
            f"destination_conf must not carry credentials, ports or fragments: "
            f"{url.netloc!r} names a port; endpoints are server configuration"
        )
    try:
        pairs = parse_qsl(url.query, keep_blank_values=True, strict_parsing=bool(url.query))
    except ValueError as exc:
        raise DestinationError(f"destination_conf parameters {url.query!r} do not parse") from exc
    query = dict(pairs)
    if len(query) != len(pairs):
        raise DestinationError("destination_conf names a parameter twice")
    if scheme == "file":
        if url.netloc or query:
            raise DestinationError("file destinations look like file:///absolute/dir")
        if not url.path.startswith("/"):
            raise DestinationError("file destinations need an absolute path: file:///dir")
        return Parts("file", "", _clean_prefix(url.path), None)
    bucket = url.netloc
    if not _BUCKET_NAME.match(bucket):
        raise DestinationError(f"{bucket!r} is not a valid bucket name")
    prefix = _clean_prefix(url.path)
    if scheme != "s3" and query:
        raise DestinationError(f"{scheme}:// destinations take no parameters")
    unknown = set(query) - {"region"}
    if unknown:
        raise DestinationError(
            f"unknown destination_conf parameter(s) {sorted(unknown)}: only region is accepted"
        )
    region = query.get("region") or None
    if region is not None and not re.fullmatch(r"[a-z0-9\-]{2,32}", region):
        raise DestinationError(f"region {region!r} is not a region name")
    return Parts(scheme, bucket, prefix, region)


def canonical(conf: str) -> str:
    """The one spelling of a bucket: lower-case scheme, no empty, trailing or doubled path
    separators, the region only when given. Stored and compared in this form, so that
    `file:///r//B/` and `file:///r/B` are one bucket. Needs no server settings (the
    migration that rewrote older rows uses it too)."""
    return split(conf).canonical()
