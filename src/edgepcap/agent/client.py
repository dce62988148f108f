"""HTTP client of the agent protocol (`/agent/v1`) for one machine."""

from __future__ import annotations

import secrets
from typing import Any

import httpx


class ControlPlaneError(RuntimeError):
    pass


class ControlPlane:
    def __init__(self, api: str, key: str, colo: str, machine: str) -> None:
        self.colo = colo
        self.machine = machine
        self.boot_id = secrets.token_hex(16)
        self.http = httpx.Client(
            base_url=api.rstrip("/") + "/agent/v1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(10.0, read=40.0),
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        r = self.http.request(method, path, **kwargs)
        if r.status_code == 409:
            raise ControlPlaneError("re-register")
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

    def register(self) -> dict[str, Any]:
        return self._call("POST", "/register", json={"colo": self.colo, **self.me})

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

    def jobs(self, wait: float, running: list[str] | None = None) -> dict[str, Any]:
        """New jobs, and stops for the `running` captures: {"jobs": [...], "stop": [...]}."""
        params = {**self.me, "wait": wait, "running": ",".join(running or [])}
        answer = self._call("GET", "/jobs", params=params, timeout=wait + 15)
        answer.setdefault("stop", [])
        return answer

    def report(self, pcap_id: str, report: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/captures/{pcap_id}/report", json={**self.me, **report})

    def close(self) -> None:
        self.http.close()
