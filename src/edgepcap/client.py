"""A small typed client of the edgepcap (Cloudflare-compatible) PCAPs API, for the CLI."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


class ClientError(Exception):
    """The API refused a request; the message is the API's own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Settings:
    api: str
    account: str
    token: str

    @classmethod
    def resolve(cls, api: str | None, account: str | None, token: str | None) -> Settings:
        api = api or os.environ.get("EDGEPCAP_API")
        account = account or os.environ.get("EDGEPCAP_ACCOUNT")
        token = token or os.environ.get("EDGEPCAP_TOKEN") or _token_file()
        missing = [
            name
            for name, value in (
                ("EDGEPCAP_API / --api", api),
                ("EDGEPCAP_ACCOUNT / --account", account),
                ("EDGEPCAP_TOKEN / EDGEPCAP_TOKEN_FILE / --token", token),
            )
            if not value
        ]
        if missing:
            raise ClientError(0, "missing " + ", ".join(missing))
        base = api.rstrip("/")  # type: ignore[union-attr]
        if not base.endswith("/client/v4"):
            base += "/client/v4"
        return cls(api=base, account=account, token=token)  # type: ignore[arg-type]


def _token_file() -> str | None:
    """The token in the file EDGEPCAP_TOKEN_FILE names: a secret kept out of `ps` and
    out of the environment of everything the shell starts."""
    path = os.environ.get("EDGEPCAP_TOKEN_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        raise ClientError(0, f"cannot read EDGEPCAP_TOKEN_FILE {path}: {exc.strerror}") from exc


class Client:
    def __init__(self, settings: Settings, verify: ssl.SSLContext | bool = True) -> None:
        self.http = httpx.Client(
            base_url=f"{settings.api}/accounts/{settings.account}",
            headers={"Authorization": f"Bearer {settings.token}"},
            timeout=httpx.Timeout(30.0, read=120.0),
            verify=verify,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(0, f"cannot reach the API: {exc}") from exc
        return _result(r)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/pcaps", json=body)

    def list(self) -> list[dict[str, Any]]:
        return self._call("GET", "/pcaps")

    def get(self, pcap_id: str) -> dict[str, Any]:
        return self._call("GET", f"/pcaps/{pcap_id}")

    def stop(self, pcap_id: str) -> dict[str, Any]:
        return self._call("PUT", f"/pcaps/{pcap_id}/stop")

    def download(self, pcap_id: str, format: str = "pcap") -> Iterator[tuple[int | None, bytes]]:
        """Chunks of the capture's file (`pcap` or `pcapng`), with the total size when the
        server knows it."""
        try:
            with self.http.stream(
                "GET", f"/pcaps/{pcap_id}/download", params={"format": format}
            ) as r:
                if r.status_code != 200:
                    r.read()
                    _result(r)
                total = int(r.headers["content-length"]) if "content-length" in r.headers else None
                for chunk in r.iter_bytes(256 * 1024):
                    yield total, chunk
        except httpx.HTTPError as exc:
            raise ClientError(0, f"download interrupted: {exc}") from exc

    def stream(self, pcap_id: str) -> Iterator[bytes]:
        """A running full capture's packets as they come (pcapng), until it ends."""
        try:
            # No read timeout: a capture of quiet traffic may send nothing for minutes.
            timeout = httpx.Timeout(30.0, read=None)
            with self.http.stream("GET", f"/pcaps/{pcap_id}/stream", timeout=timeout) as r:
                if r.status_code != 200:
                    r.read()
                    _result(r)
                yield from r.iter_raw()
        except httpx.HTTPError as exc:
            raise ClientError(0, f"stream interrupted: {exc}") from exc

    def buckets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/pcaps/ownership")

    def add_bucket(self, conf: str) -> dict[str, Any]:
        return self._call("POST", "/pcaps/ownership", json={"destination_conf": conf})

    def validate_bucket(self, conf: str, challenge: str) -> dict[str, Any]:
        return self._call(
            "POST",
            "/pcaps/ownership/validate",
            json={"destination_conf": conf, "ownership_challenge": challenge},
        )

    def prove_bucket(self, conf: str, read_challenge: Callable[[str], str]) -> dict[str, Any]:
        """Add the bucket `conf` and prove it is the caller's: `read_challenge(filename)`
        reads the challenge file back from the bucket, as its owner can. Returns the
        validated bucket."""
        challenge = read_challenge(self.add_bucket(conf)["filename"])
        return self.validate_bucket(conf, challenge)

    def delete_bucket(self, bucket_id: str) -> Any:
        return self._call("DELETE", f"/pcaps/ownership/{bucket_id}")

    def traffic(self, params: dict[str, Any]) -> dict[str, Any]:
        """The account's sampled traffic: `params` are the query's (`since`, `until`,
        `step`, `group_by`, `limit`, the `filter_v1` fields); None values are left out."""
        return self._call(
            "GET", "/traffic", params={k: v for k, v in params.items() if v is not None}
        )

    def create_trigger(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/pcaps/triggers", json=body)

    def triggers(self) -> list[dict[str, Any]]:
        return self._call("GET", "/pcaps/triggers")

    def trigger(self, trigger_id: str) -> dict[str, Any]:
        return self._call("GET", f"/pcaps/triggers/{trigger_id}")

    def delete_trigger(self, trigger_id: str) -> Any:
        return self._call("DELETE", f"/pcaps/triggers/{trigger_id}")

    def close(self) -> None:
        self.http.close()


def _result(r: httpx.Response) -> Any:
    try:
        body = r.json()
    except ValueError:
        raise ClientError(r.status_code, f"HTTP {r.status_code}: {r.text[:200]}") from None
    if r.status_code >= 400 or not body.get("success"):
        messages = "; ".join(e.get("message", "") for e in body.get("errors") or [])
        raise ClientError(r.status_code, messages or f"HTTP {r.status_code}")
    return body["result"]
