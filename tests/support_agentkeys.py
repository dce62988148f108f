"""Agent keys bound to one machine, minted through the CLI as an operator does."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from tests.conftest import Stack


def mint_key(stack: Stack, colo: str, machine: str) -> dict[str, Any]:
    """`edgepcap agents create-key --colo COLO --machine MACHINE`: {"id", "agent_key", …}."""
    out = stack.cli("agents", "create-key", "--colo", colo, "--machine", machine)
    return json.loads(out.stdout)


def agent_client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.server.url + "/agent/v1",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def new_boot() -> str:
    return os.urandom(16).hex()


def refused(stack: Stack, machine: str) -> dict[str, int]:
    """`edgepcap_samples_refused_total` of `machine` on /metrics, by reason."""
    text = httpx.get(stack.server.url + "/metrics", timeout=10).text
    prefix = f'edgepcap_samples_refused_total{{machine="{machine}",reason="'
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(prefix) : -2]] = int(value)
    return out
