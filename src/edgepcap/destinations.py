"""Customer buckets (`destination_conf`): parsing, confinement and object I/O through obstore."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import obstore
from obstore.store import AzureStore, GCSStore, LocalStore, S3Store

SCHEMES = ("file", "s3", "gs", "az")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,62}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._\-]+$")


class DestinationError(ValueError):
    """A destination that cannot be used; the message names the cause."""


@dataclass(frozen=True)
class StoreSettings:
    """Server-side configuration of object stores; never taken from requests."""

    bucket_root: Path
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, data_dir: Path) -> StoreSettings:
        root = os.environ.get("EDGEPCAP_BUCKET_ROOT") or str(data_dir / "buckets")
        return cls(
            bucket_root=Path(root).resolve(),
            s3_endpoint=os.environ.get("EDGEPCAP_S3_ENDPOINT") or None,
            s3_region=os.environ.get("EDGEPCAP_S3_REGION", "us-east-1"),
        )


@dataclass(frozen=True)
class Destination:
    """A parsed, confined `destination_conf` with the store that reaches it."""

    conf: str
    scheme: str
    store: Any

    def bucket_identity(self) -> tuple[int, int] | None:
        """What tells this bucket from a new one of the same name (file: the directory)."""
        if self.scheme != "file":
            return None  # object stores refuse writes into a deleted bucket themselves
        try:
            st = os.stat(urlsplit(self.conf).path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def check_same_bucket(self, identity: tuple[int, int] | None, name: str) -> None:
        """Refuse to finish writing into a bucket that was removed or replaced meanwhile.

        A local upload recreates missing directories, so without this check a removed
        bucket directory would quietly come back holding the capture.
        """
        if self.scheme != "file" or identity is None:
            return
        root = urlsplit(self.conf).path
        now = self.bucket_identity()
        if now is None:
            cause = f"the bucket directory {root} does not exist (removed during the capture)"
        elif now != identity:
            cause = f"the bucket directory {root} was replaced during the capture"
        else:
            return
        raise DestinationError(f"could not write {name!r} in {self.conf}: {cause}")

    def put(self, name: str, data: bytes) -> None:
        try:
            obstore.put(self.store, name, data)
        except Exception as exc:
            raise DestinationError(describe_failure(self, "write", name, exc)) from exc

    def get(self, name: str, max_bytes: int = 1 << 20) -> bytes:
        try:
            result = obstore.get(self.store, name)
            if result.meta["size"] > max_bytes:
                raise DestinationError(f"{name} in {self.conf} is larger than {max_bytes} bytes")
            return bytes(result.bytes())
        except DestinationError:
            raise
        except Exception as exc:
            raise DestinationError(describe_failure(self, "read", name, exc)) from exc

    def stream(self, name: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        """The object's bytes in chunks; the first chunk is fetched before this returns."""
        try:
            chunks = iter(obstore.get(self.store, name).stream(min_chunk_size=chunk_size))
            first = next(chunks, b"")
        except Exception as exc:
            raise DestinationError(describe_failure(self, "read", name, exc)) from exc

        def rest() -> Iterator[bytes]:
            yield bytes(first)
            for chunk in chunks:
                yield bytes(chunk)

        return rest()

    def delete(self, name: str) -> None:
        try:
            obstore.delete(self.store, name)
        except FileNotFoundError:
            pass
        except Exception as exc:
            if type(exc).__name__ != "NotFoundError":
                raise DestinationError(describe_failure(self, "delete", name, exc)) from exc

    def list(self, prefix: str | None = None) -> list[str]:
        try:
            return [m["path"] for batch in obstore.list(self.store, prefix) for m in batch]
        except Exception as exc:
            raise DestinationError(describe_failure(self, "list", prefix or "", exc)) from exc


_S3_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")
_S3_BUCKET = re.compile(r"<BucketName>([^<]{1,255})</BucketName>")


def _missing(dest: Destination, full: str) -> str:
    """What is missing when a store answers 'not found'."""
    code = _S3_CODE.search(full)
    if code and code.group(1) == "NoSuchBucket":
        found = _S3_BUCKET.search(full)
        bucket = found.group(1) if found else urlsplit(dest.conf).netloc
        return f"bucket {bucket!r} does not exist"
    if code and code.group(1) == "NoSuchUpload":
        return "the upload was aborted in the bucket (NoSuchUpload)"
    if dest.scheme == "file":
        root = urlsplit(dest.conf).path
        if not os.path.isdir(root):
            return f"the bucket directory {root} does not exist"
    return "it does not exist"


def describe_failure(dest: Destination, verb: str, name: str, exc: BaseException) -> str:
    kind = type(exc).__name__
    full = str(exc)
    text = full.splitlines()[0] if full else kind
    if kind in ("NotFoundError",) or isinstance(exc, FileNotFoundError):
        cause = _missing(dest, full)
    elif kind in ("PermissionDeniedError", "UnauthenticatedError") or isinstance(
        exc, PermissionError
    ):
        cause = "access denied"
    elif (isinstance(exc, OSError) and exc.errno == 28) or "os error 28" in text:
        cause = "no space left on the device"
    elif "os error 13" in text or "Permission denied" in text or "os error 1)" in text:
        cause = "access denied"
    elif "os error 30" in text:
        cause = "access denied: the bucket is read-only"
    else:
        cause = text[:300]
    return f"could not {verb} {name!r} in {dest.conf}: {cause}"


def _clean_prefix(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", "..") or not _SEGMENT.match(part):
            raise DestinationError(
                f"path segment {part!r} is not allowed: use letters, digits, '.', '-' and '_'"
            )
    return "/".join(parts)


def parse(conf: str, settings: StoreSettings) -> Destination:
    """Parse a `destination_conf` URL into a Destination, refusing anything outside policy."""
    if not isinstance(conf, str) or not conf or len(conf) > 1024:
        raise DestinationError("destination_conf must be a bucket URL of at most 1024 characters")
    try:
        url = urlsplit(conf)
    except ValueError as exc:
        raise DestinationError(f"destination_conf {conf!r} is not a URL") from exc
    scheme = url.scheme.lower()
    if scheme not in SCHEMES:
        raise DestinationError(
            f"destination_conf scheme {url.scheme or '(none)'!r} is not supported: "
            "use file:///dir, s3://bucket/dir, gs://bucket/dir or az://container/dir"
        )
    if url.fragment or url.username or url.password or url.port:
        raise DestinationError(
            "destination_conf must not carry credentials, ports or fragments: "
            "credentials and endpoints are server configuration"
        )
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    if scheme == "file":
        if url.netloc or query:
            raise DestinationError("file destinations look like file:///absolute/dir")
        return _file_destination(conf, url.path, settings)
    bucket = url.netloc
    if not _BUCKET_NAME.match(bucket):
        raise DestinationError(f"{bucket!r} is not a valid bucket name")
    prefix = _clean_prefix(url.path) or None
    if scheme != "s3" and query:
        raise DestinationError(f"{scheme}:// destinations take no parameters")
    _require_credentials(scheme)
    if scheme == "s3":
        unknown = set(query) - {"region"}
        if unknown:
            raise DestinationError(
                f"unknown destination_conf parameter(s) {sorted(unknown)}: only region is accepted"
            )
        region = query.get("region") or settings.s3_region
        if not re.fullmatch(r"[a-z0-9\-]{2,32}", region):
            raise DestinationError(f"region {region!r} is not a region name")
        config: dict[str, Any] = {"region": region}
        client: dict[str, Any] = {"timeout": "30s", "connect_timeout": "5s"}
        if settings.s3_endpoint:
            config["endpoint"] = settings.s3_endpoint
            config["virtual_hosted_style_request"] = False
            if settings.s3_endpoint.startswith("http://"):
                client["allow_http"] = True
        retry: Any = {
            "max_retries": 2,
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=1),
            },
            "retry_timeout": timedelta(seconds=10),
        }
        store: Any = S3Store(
            bucket, prefix=prefix, config=config, client_options=client, retry_config=retry
        )
    elif scheme == "gs":
        store = GCSStore(bucket, prefix=prefix)
    else:
        store = AzureStore(bucket, prefix=prefix)
    return Destination(conf=conf, scheme=scheme, store=store)


# Without configured credentials the cloud SDKs fall back to instance-metadata
# endpoints (169.254.169.254 and friends). A server that was not given credentials
# must say so instead of probing addresses nobody configured.
CREDENTIAL_ENV = {
    "s3": (
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ),
    "gs": (
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_PATH",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ),
    "az": (
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_STORAGE_USE_EMULATOR",
    ),
}


def _require_credentials(scheme: str) -> None:
    if os.environ.get("EDGEPCAP_CLOUD_METADATA") == "1":
        return
    names = CREDENTIAL_ENV[scheme]
    if not any(os.environ.get(n) for n in names):
        raise DestinationError(
            f"this server has no credentials for {scheme}:// buckets (set one of "
            f"{', '.join(names)} in its environment, or EDGEPCAP_CLOUD_METADATA=1 to use "
            "the cloud's instance metadata)"
        )


def _file_destination(conf: str, path: str, settings: StoreSettings) -> Destination:
    if not path.startswith("/"):
        raise DestinationError("file destinations need an absolute path: file:///dir")
    _clean_prefix(path)
    root = settings.bucket_root
    target = Path(path).resolve()
    if target != root and root not in target.parents:
        raise DestinationError(f"file destinations must lie under this server's bucket root {root}")
    if not target.is_dir():
        raise DestinationError(f"bucket directory {target} does not exist")
    return Destination(conf=conf, scheme="file", store=LocalStore(prefix=target))
