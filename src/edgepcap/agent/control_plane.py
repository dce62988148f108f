"""HTTP client of the agent protocol (`/agent/v1`) for one machine."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path
from typing import Any

import httpx

from edgepcap.formats.protocol import KEEP_ALIVE, JobsAnswer, ReportWire, Welcome


class ControlPlaneError(RuntimeError):
    """A call the control plane refused or failed; the message says why."""


class ReRegister(ControlPlaneError):
    """HTTP 409: the control plane does not know this machine or this boot of its agent;
    the agent registers again and carries on."""

    def __init__(self) -> None:
        super().__init__("re-register")


class ControlPlane:
    def __init__(
        self, api: str, key: str, colo: str, machine: str, ca_file: Path | None = None
    ) -> None:
        self.api = api
        self.colo = colo
        self.machine = machine
        self.boot_id = secrets.token_hex(16)
        # A private CA (`--ca-file`) is trusted instead of the system's, not besides them:
        # the control plane's certificate is the operator's own.
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        )
        self.http = httpx.Client(
            base_url=api.rstrip("/") + "/agent/v1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(10.0, read=40.0),
            limits=httpx.Limits(keepalive_expiry=KEEP_ALIVE),
            verify=verify,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ControlPlaneError(
                    f"{self.api} presents a TLS certificate this agent does not trust "
                    f"({exc}): give `edgepcap agent` --ca-file with the CA that signed it"
                ) from exc
            raise
        if r.status_code == 409:
            raise ReRegister()
        if r.status_code >= 400:
            try:
                message = r.json()["errors"][0]["message"]
            except Exception:
                message = r.text[:200]
            raise ControlPlaneError(f"{method} {path}: HTTP {r.status_code}: {message}")
        return r.json()

    @property
    def me(self) -> dict[str, str]:
        return {"machine": self.machine, "boot_id": self.boot_id}

    def register(self) -> Welcome:
        return self._call("POST", "/register", json={"colo": self.colo, **self.me})  # type: ignore[return-value]

    def heartbeat(self, stats: dict[str, int] | None = None) -> None:
        self._call("POST", "/heartbeat", json={**self.me, "stats": stats or {}})

    def prefixes(self) -> dict[str, Any]:
        return self._call("GET", "/prefixes")

    def samples(self, body: bytes) -> dict[str, Any]:
        return self._call(
            "POST",
            "/samples",
            params=self.me,
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )

    def jobs(self, wait: float, running: list[str] | None = None) -> JobsAnswer:
        """New jobs, and stops for the `running` captures."""
        params = {**self.me, "wait": wait, "running": ",".join(running or [])}
        answer = self._call("GET", "/jobs", params=params, timeout=wait + 15)
        return {"jobs": answer.get("jobs", []), "stop": answer.get("stop", [])}

    def live(self, pcap_id: str, body: bytes, first: int, known: int | None = None) -> None:
        """Copies of packets first… of the capture's object (`protocol.live_body`), for
        its live viewers."""
        params: dict[str, Any] = {**self.me, "first": first}
        if known is not None:
            params["known"] = known
        self._call(
            "POST",
            f"/captures/{pcap_id}/live",
            params=params,
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )

    def report(self, pcap_id: str, report: ReportWire) -> dict[str, Any]:
        return self._call("POST", f"/captures/{pcap_id}/report", json={**self.me, **report})

    def close(self) -> None:
        self.http.close()
