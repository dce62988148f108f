"""Agent keys bound to one machine, minted through the CLI as an operator does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import EDGEPCAP
from tests.support.stack import Stack


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
    text = stack.server.metrics()
    prefix = f'edgepcap_samples_refused_total{{machine="{machine}",reason="'
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(prefix) : -2]] = int(value)
    return out


@contextmanager
def run_agent(
    stack: Stack, key: str, colo: str, machine: str, ns: str, *extra: str
) -> Iterator[Path]:
    """`edgepcap agent` for `machine` of `colo` in namespace `ns`; yields its log's path."""
    log = stack.server.data_dir / f"agent-{machine}.log"
    argv = [EDGEPCAP, "agent", "--api", stack.server.url, "--colo", colo, "--machine", machine]
    argv += ["--netns", ns, "--sample-rate", "0", "--bucket-root", str(stack.server.data_dir)]
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [*argv, *extra],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "EDGEPCAP_AGENT_KEY": key},
        )
    try:
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def machine_up(stack: Stack, machine: str) -> bool:
    text = stack.server.metrics(verify=stack.verify)
    return any(
        line.startswith(f'edgepcap_machine_up{{machine="{machine}",') and line.endswith(" 1")
        for line in text.splitlines()
    )
