"""The control plane's settings: read from the environment once, at process start.

`Settings.from_environ` is the one place an API process reads `EDGEPCAP_*` variables
(`edgepcap api` before its workers start, so that a bad value stops the start rather than
each worker or each request; every worker again when it starts, from the same variables).
Everything below takes plain values from the frozen object, never the environment.

| variable | field | default |
|---|---|---|
| EDGEPCAP_DATA_DIR (workers only; `--data-dir`) | data_dir | (none) |
| EDGEPCAP_DATABASE (`--database`) | database | SQLite in the data dir |
| EDGEPCAP_SAMPLE_STORE (`--sample-store`) | sample_store | segments in the data dir |
| EDGEPCAP_SAMPLE_INTERVAL | limits.sample_interval | 60 s (0: none) |
| EDGEPCAP_FULL_CAPTURE_RATE | limits.full_capture_rate | 10 a minute (0: none) |
| EDGEPCAP_HEARTBEAT_INTERVAL | heartbeat_interval (to agents; lost after 5 missed) | 1 s |
| EDGEPCAP_CAPTURE_RETENTION | capture_retention | 30 days |
| EDGEPCAP_SAMPLE_RETENTION | sample_retention | 24 h |
| EDGEPCAP_SAMPLE_PARTITION | sample_partition | 60 s (3600 s with ClickHouse) |
| EDGEPCAP_SAMPLE_INGEST | sample_ingest (ClickHouse HTTP URL agents insert at) | via the API |
| EDGEPCAP_SAMPLE_INGEST_KEY_FILE | sample_ingest_key (agents' passwords derive from it) | (none) |
| EDGEPCAP_METRICS_TOKEN(_FILE) | metrics_token | none: no `/metrics` |
| EDGEPCAP_RELAY_HOST | relay_host (live copies between API processes) | 127.0.0.1 |
| EDGEPCAP_BUCKET_ROOT, EDGEPCAP_S3_*, … | stores | see destinations.StoreSettings |
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgepcap.destinations import StoreSettings, whole_setting

SAMPLE_INTERVAL = dt.timedelta(minutes=1)  # Cloudflare's: one sample capture a minute
FULL_CAPTURE_RATE = 10
CAPTURE_RETENTION = dt.timedelta(days=30)
SAMPLE_RETENTION = dt.timedelta(hours=24)  # the history sample captures draw on
SAMPLE_PARTITION = 60
HEARTBEAT_INTERVAL = dt.timedelta(seconds=1)

TOKEN_ENV = "EDGEPCAP_METRICS_TOKEN"  # noqa: S105 - the variable's name
TOKEN_FILE_ENV = "EDGEPCAP_METRICS_TOKEN_FILE"  # noqa: S105 - the variable's name
MIN_TOKEN = 16


class SettingError(ValueError):
    """A setting the process cannot start with; the message names the variable."""


@dataclass(frozen=True)
class Limits:
    """What one account may start: the pace of sample and of full captures."""

    sample_interval: dt.timedelta = SAMPLE_INTERVAL
    full_capture_rate: int = FULL_CAPTURE_RATE  # a minute; 0: no limit


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    stores: StoreSettings
    database: str | None = None
    sample_store: str | None = None
    limits: Limits = field(default_factory=Limits)
    capture_retention: dt.timedelta = CAPTURE_RETENTION
    sample_retention: dt.timedelta = SAMPLE_RETENTION
    sample_partition: int = SAMPLE_PARTITION
    metrics_token: str | None = None
    relay_host: str = "127.0.0.1"  # where other API processes reach this one's live relay
    heartbeat_interval: dt.timedelta = HEARTBEAT_INTERVAL
    sample_ingest: str | None = None  # samples.direct: where agents insert into ClickHouse
    sample_ingest_key: str | None = None

    @classmethod
    def from_environ(
        cls,
        data_dir: Path | None = None,
        database: str | None = None,
        sample_store: str | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> Settings:
        """Every setting, options first (the CLI's), then the environment; SettingError on
        the first bad one."""
        if data_dir is None:
            if not environ.get("EDGEPCAP_DATA_DIR"):
                raise SettingError("EDGEPCAP_DATA_DIR is not set")
            data_dir = Path(environ["EDGEPCAP_DATA_DIR"])
        try:
            stores = StoreSettings.from_env(data_dir, environ)
        except ValueError as exc:
            raise SettingError(str(exc)) from None
        ingest = _sample_ingest(environ)
        store = sample_store or environ.get("EDGEPCAP_SAMPLE_STORE") or ""
        if ingest["sample_ingest"] and not store.startswith("clickhouse://"):
            raise SettingError("EDGEPCAP_SAMPLE_INGEST needs a ClickHouse EDGEPCAP_SAMPLE_STORE")
        return cls(
            data_dir=data_dir,
            stores=stores,
            database=database or environ.get("EDGEPCAP_DATABASE") or None,
            sample_store=sample_store or environ.get("EDGEPCAP_SAMPLE_STORE") or None,
            limits=Limits(
                sample_interval=_seconds(
                    environ, "EDGEPCAP_SAMPLE_INTERVAL", SAMPLE_INTERVAL, zero=True
                ),
                full_capture_rate=_count(
                    environ,
                    "EDGEPCAP_FULL_CAPTURE_RATE",
                    FULL_CAPTURE_RATE,
                    "full captures per minute (0: no limit)",
                ),
            ),
            capture_retention=_seconds(environ, "EDGEPCAP_CAPTURE_RETENTION", CAPTURE_RETENTION),
            sample_retention=_seconds(environ, "EDGEPCAP_SAMPLE_RETENTION", SAMPLE_RETENTION),
            sample_partition=_count(
                environ,
                "EDGEPCAP_SAMPLE_PARTITION",
                # ClickHouse: an hour a part, not 1 440 parts a day (clickhouse.py).
                3600 if store.startswith("clickhouse://") else SAMPLE_PARTITION,
                "seconds, at least 1",
                1,
            ),
            metrics_token=metrics_token(environ),
            relay_host=_relay_host(environ),
            heartbeat_interval=_seconds(environ, "EDGEPCAP_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL),
            **ingest,
        )


def _seconds(
    environ: Mapping[str, str], name: str, default: dt.timedelta, zero: bool = False
) -> dt.timedelta:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not ((seconds >= 0 if zero else seconds > 0) and seconds < 1e10):
        least = "0 <=" if zero else "0 <"
        raise SettingError(f"{name} must be a number of seconds, {least} n < 1e10, got {value!r}")
    return dt.timedelta(seconds=seconds)


def _count(environ: Mapping[str, str], name: str, default: int, what: str, least: int = 0) -> int:
    try:
        return whole_setting(environ, name, default, least, what)
    except ValueError as exc:
        raise SettingError(str(exc)) from None


def metrics_token(environ: Mapping[str, str] = os.environ) -> str | None:
    """The token `/metrics` asks for: the contents of the file EDGEPCAP_METRICS_TOKEN_FILE
    names, or EDGEPCAP_METRICS_TOKEN; None when neither is set (no `/metrics`)."""
    path = environ.get(TOKEN_FILE_ENV)
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise SettingError(f"cannot read the metrics token file {path}: {exc}") from exc
        where = f"the metrics token file {path}"
    else:
        token = environ.get(TOKEN_ENV, "").strip()
        where = TOKEN_ENV
        if not token:
            return None
    if len(token) < MIN_TOKEN or not token.isprintable() or " " in token:
        raise SettingError(f"{where}: the token must be {MIN_TOKEN} or more printable characters")
    return token


def _sample_ingest(environ: Mapping[str, str]) -> dict[str, str | None]:
    """Where agents insert samples into ClickHouse themselves, and the key their passwords
    derive from (`samples.direct`): both or neither."""
    url = environ.get("EDGEPCAP_SAMPLE_INGEST", "").strip() or None
    path = environ.get("EDGEPCAP_SAMPLE_INGEST_KEY_FILE", "").strip()
    if url is None:
        return {"sample_ingest": None, "sample_ingest_key": None}
    if not url.startswith(("http://", "https://")):
        raise SettingError(f"EDGEPCAP_SAMPLE_INGEST is ClickHouse's HTTP URL, got {url!r}")
    if not path:
        raise SettingError("EDGEPCAP_SAMPLE_INGEST needs EDGEPCAP_SAMPLE_INGEST_KEY_FILE")
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise SettingError(f"cannot read the sample ingest key file {path}: {exc}") from exc
    if len(key) < MIN_TOKEN:
        raise SettingError(f"the sample ingest key must be {MIN_TOKEN} or more characters")
    return {"sample_ingest": url, "sample_ingest_key": key}


def _relay_host(environ: Mapping[str, str]) -> str:
    value = environ.get("EDGEPCAP_RELAY_HOST", "").strip() or "127.0.0.1"
    if value in ("0.0.0.0", "::", "*"):  # noqa: S104 - the value refused here
        raise SettingError(
            "EDGEPCAP_RELAY_HOST is advertised to the other API processes: give an address "
            f"they reach this host at, not the wildcard {value!r}"
        )
    return value
