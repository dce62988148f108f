"""Customer buckets (`destination_conf`): server settings, confinement and object I/O
through obstore (`file://` through `beneath`). URL parsing is in `bucket_urls`."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.store import AzureStore, GCSStore, S3Store

from edgepcap import beneath
from edgepcap.bucket_urls import DestinationError, split
from edgepcap.direct_io import Chunk

# What one download or preview of a full capture may read from its bucket (the API's
# defaults; EDGEPCAP_READ_MAX_OBJECTS, EDGEPCAP_READ_MAX_BYTES, EDGEPCAP_READS_PER_ACCOUNT):
READ_MAX_OBJECTS = 64  # machines' files merged at once (each holds a descriptor and a buffer)
READ_MAX_BYTES = 16 << 30  # bytes of one merged download (the files stay in the bucket)
READS_PER_ACCOUNT = 4  # downloads and previews of one account at once, per API process


@dataclass(frozen=True)
class StoreSettings:
    """Server-side configuration of object stores; never taken from requests."""

    bucket_root: Path
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    extra: dict[str, Any] = field(default_factory=dict)
    read_max_objects: int = READ_MAX_OBJECTS
    read_max_bytes: int = READ_MAX_BYTES
    reads_per_account: int = READS_PER_ACCOUNT
    # Schemes whose credentials obstore will find in the environment, or every scheme's
    # when the cloud's instance metadata provides them (EDGEPCAP_CLOUD_METADATA=1).
    credentials: frozenset[str] = frozenset()

    @classmethod
    def from_env(
        cls,
        data_dir: Path,
        environ: Mapping[str, str] = os.environ,
        bucket_root: str | None = None,
    ) -> StoreSettings:
        """The settings of this process's environment, read once at its start."""
        whole = whole_setting
        root = bucket_root or environ.get("EDGEPCAP_BUCKET_ROOT") or str(data_dir / "buckets")
        env = environ.get
        if env("EDGEPCAP_CLOUD_METADATA") == "1":
            credentials = frozenset(CREDENTIAL_ENV)
        else:
            credentials = frozenset(
                scheme for scheme, names in CREDENTIAL_ENV.items() if any(map(env, names))
            )
        return cls(
            bucket_root=Path(root).resolve(),
            s3_endpoint=env("EDGEPCAP_S3_ENDPOINT") or None,
            s3_region=env("EDGEPCAP_S3_REGION", "us-east-1"),
            read_max_objects=whole(environ, "EDGEPCAP_READ_MAX_OBJECTS", READ_MAX_OBJECTS),
            read_max_bytes=whole(environ, "EDGEPCAP_READ_MAX_BYTES", READ_MAX_BYTES),
            reads_per_account=whole(environ, "EDGEPCAP_READS_PER_ACCOUNT", READS_PER_ACCOUNT),
            credentials=credentials,
        )


def whole_setting(
    environ: Mapping[str, str], name: str, default: int, least: int = 1, what: str = ""
) -> int:
    """The whole number in variable `name` (`default` when unset), at least `least`;
    ValueError naming the variable (and `what` it counts) otherwise. ASCII digits only:
    `²` is a digit to str.isdigit but not to int."""
    value = environ.get(name, "").strip()
    if not value:
        return default
    if not (value.isascii() and value.isdigit()) or int(value) < least:
        kind = f"a whole number of {what}" if what else f"a whole number, at least {least}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Destination:
    """A parsed, confined `destination_conf` (canonical) with the store that reaches it.

    `file://` buckets are reached through `beneath` (no link followed below the server's
    bucket root, `root`; the bucket is `bucket` below it); the others through obstore.
    """

    conf: str
    scheme: str
    store: Any
    root: Path | None = None
    bucket: str = ""

    @property
    def path(self) -> str:
        """The bucket directory of a `file://` bucket."""
        return urlsplit(self.conf).path

    def bucket_identity(self) -> tuple[int, int] | None:
        """What tells this bucket from a new one of the same name (file: the directory)."""
        if self.root is None:
            return None  # object stores refuse writes into a deleted bucket themselves
        return beneath.identity(self.root, self.bucket)

    def check_same_bucket(self, identity: tuple[int, int] | None, name: str) -> None:
        """Refuse to finish writing into a bucket that was removed or replaced meanwhile.

        Without this check a capture would complete into a directory that is no longer
        the bucket (its descriptors are held from the start).
        """
        if self.root is None or identity is None:
            return
        now = self.bucket_identity()
        if now is None:
            cause = f"the bucket directory {self.path} does not exist (removed during the capture)"
        elif now != identity:
            cause = f"the bucket directory {self.path} was replaced during the capture"
        else:
            return
        raise DestinationError(f"could not write {name!r} in {self.conf}: {cause}")

    def put(self, name: str, data: bytes) -> None:
        try:
            if self.root is not None:
                beneath.put(self.root, self.bucket, name, data)
            else:
                obstore.put(self.store, name, data)
        except Exception as exc:
            raise DestinationError(describe_failure(self, "write", name, exc)) from exc

    def get(self, name: str, max_bytes: int = 1 << 20) -> bytes:
        try:
            if self.root is not None:
                return beneath.read_file(self.root, self.bucket, name, max_bytes)
            result = obstore.get(self.store, name)
            if result.meta["size"] > max_bytes:
                raise DestinationError(f"{name} in {self.conf} is larger than {max_bytes} bytes")
            return bytes(result.bytes())
        except DestinationError:
            raise
        except Exception as exc:
            raise DestinationError(describe_failure(self, "read", name, exc)) from exc

    def open(self, name: str, chunk_size: int = 256 * 1024) -> tuple[int, Iterator[bytes]]:
        """The object's size and its bytes in chunks (opened, nothing read yet).

        Closing the iterator (or reading it to its end) releases what it holds.
        """
        try:
            if self.root is not None:
                found = beneath.open_file(self.root, self.bucket, name)
                return found.size, found.chunks(chunk_size)
            result = obstore.get(self.store, name)
        except Exception as exc:
            raise DestinationError(describe_failure(self, "read", name, exc)) from exc

        def chunks() -> Iterator[bytes]:
            try:
                for chunk in result.stream(min_chunk_size=chunk_size):
                    yield bytes(chunk)
            except Exception as exc:
                raise DestinationError(describe_failure(self, "read", name, exc)) from exc

        return int(result.meta["size"]), chunks()

    def writer(self, name: str) -> Any:
        """A writer of object `name`: write(), close() completes it, abort() drops it."""
        try:
            if self.root is not None:
                return beneath.Writer(self.root, self.bucket, name)
            return _StoreWriter(
                obstore.open_writer(self.store, name, buffer_size=5 << 20, max_concurrency=2)
            )
        except Exception as exc:
            raise DestinationError(describe_failure(self, "write", name, exc)) from exc

    def delete(self, name: str) -> None:
        try:
            if self.root is not None:
                beneath.unlink(self.root, self.bucket, name)
            else:
                obstore.delete(self.store, name)
        except FileNotFoundError:
            pass
        except Exception as exc:
            if type(exc).__name__ != "NotFoundError":
                raise DestinationError(describe_failure(self, "delete", name, exc)) from exc


class _StoreWriter:
    """obstore's writer with the `abort` of beneath.Writer."""

    def __init__(self, writer: Any) -> None:
        self._writer: Any = writer

    def write(self, data: bytes | bytearray) -> None:
        self._writer.write(data)

    def write_chunk(self, chunk: Chunk) -> None:
        # A copy: the chunk is filled again once this returns, whatever the uploader keeps.
        self._writer.write(bytes(chunk.data()))

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        # Dropping the writer without closing it abandons the upload: an S3 multipart
        # upload is never completed.
        self._writer = None


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
    if dest.root is not None and dest.bucket_identity() is None:
        return f"the bucket directory {dest.path} does not exist"
    return "it does not exist"


def describe_failure(dest: Destination, verb: str, name: str, exc: BaseException) -> str:
    kind = type(exc).__name__
    full = str(exc)
    text = full.splitlines()[0] if full else kind
    if isinstance(exc, beneath.BeneathError) and exc.errno != errno.ENOENT:
        cause = text  # names the link, the non-directory or the non-regular file
    elif (
        kind in ("NotFoundError",)
        or isinstance(exc, FileNotFoundError)
        or (isinstance(exc, OSError) and exc.errno == errno.ENOENT)
    ):
        cause = _missing(dest, full)
    elif kind in ("PermissionDeniedError", "UnauthenticatedError") or isinstance(
        exc, PermissionError
    ):
        cause = "access denied"
    elif (isinstance(exc, OSError) and exc.errno == 28) or "os error 28" in text:
        cause = "no space left on the device"
    elif "os error 13" in text or "Permission denied" in text or "os error 1)" in text:
        cause = "access denied"
    elif "os error 30" in text or (isinstance(exc, OSError) and exc.errno == errno.EROFS):
        cause = "access denied: the bucket is read-only"
    else:
        cause = text[:300]
    return f"could not {verb} {name!r} in {dest.conf}: {cause}"


def parse(conf: str, settings: StoreSettings) -> Destination:
    """Parse a `destination_conf` URL into a Destination, refusing anything outside policy.

    Nothing is looked up here: whether the bucket exists shows when it is used.
    """
    parts = split(conf)
    conf = parts.canonical()
    if parts.scheme == "file":
        return _file_destination(conf, parts.prefix, settings)
    _require_credentials(parts.scheme, settings)
    prefix = parts.prefix or None
    bucket = parts.bucket
    if parts.scheme == "s3":
        if settings.s3_endpoint and parts.region not in (None, settings.s3_region):
            # The operator's S3-compatible store has one region; any other name would only
            # be another spelling of the same bucket (another row, another challenge file).
            raise DestinationError(
                f"region {parts.region!r}: this server's S3 store has one region, "
                f"{settings.s3_region}: leave ?region= out"
            )
        region = parts.region or settings.s3_region
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
    else:
        kind = GCSStore if parts.scheme == "gs" else AzureStore
        try:
            store = kind(bucket, prefix=prefix)
        except Exception as exc:  # obstore refuses a configuration it cannot complete
            raise DestinationError(
                f"this server cannot reach {parts.scheme}:// buckets: {str(exc)[:300]}"
            ) from None
    return Destination(conf=conf, scheme=parts.scheme, store=store)


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


def _require_credentials(scheme: str, settings: StoreSettings) -> None:
    if scheme not in settings.credentials:
        names = CREDENTIAL_ENV[scheme]
        raise DestinationError(
            f"this server has no credentials for {scheme}:// buckets (set one of "
            f"{', '.join(names)} in its environment, or EDGEPCAP_CLOUD_METADATA=1 to use "
            "the cloud's instance metadata)"
        )


def _file_destination(conf: str, rel: str, settings: StoreSettings) -> Destination:
    # A textual check: the path is canonical (no `..`), and links below the root are
    # refused when the bucket is used (beneath), not resolved here.
    root = settings.bucket_root
    target = Path("/" + rel)
    if root not in target.parents:  # the root itself holds every tenant's buckets
        raise DestinationError(
            f"file destinations must be a directory below this server's bucket root {root}"
        )
    bucket = target.relative_to(root).as_posix()
    return Destination(conf=conf, scheme="file", store=None, root=root, bucket=bucket)
