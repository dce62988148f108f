"""Real agents with bound keys: another machine's key is refused, a revoked key stops its
agent at once (the protocol's answers are tested in tests/api/test_agent_keys.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgepcap.agent.kernel import netns
from tests.support.agentkeys import machine_up, mint_key, run_agent
from tests.support.processes import wait_for
from tests.support.servers import start_server, stop_server
from tests.support.stack import Stack

pytestmark = pytest.mark.root  # agents in namespaces


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    """An api, and an empty namespace for the agents to (not) capture in."""
    server = start_server(tmp_path / "api", None)
    ns = f"epkey{secrets.token_hex(3)}"
    netns.add(ns)
    try:
        yield Stack(server=server), ns
    finally:
        netns.delete(ns)
        stop_server(server)


def test_an_agent_runs_only_as_the_machine_of_its_key_until_revoked(fleet):
    stack, ns = fleet
    key = mint_key(stack, "ORD", "ord01")
    with run_agent(stack, key["agent_key"], "ORD", "ord02", ns) as log:
        wait_for(lambda: "HTTP 403" in log.read_text(), 30, "the agent to be refused")
        assert "is for machine 'ord01' of ORD only, not 'ord02' of ORD" in log.read_text()
        assert not machine_up(stack, "ord02")
    with run_agent(stack, key["agent_key"], "DFW", "ord01", ns) as log:
        wait_for(lambda: "HTTP 403" in log.read_text(), 30, "the agent to be refused")
        assert not machine_up(stack, "ord01")

    with run_agent(stack, key["agent_key"], "ORD", "ord01", ns) as log:
        wait_for(lambda: machine_up(stack, "ord01"), 30, "ord01 to register")
        stack.cli("agents", "revoke-key", key["id"])
        wait_for(lambda: "has been revoked" in log.read_text(), 30, "the agent to hear it")
        assert "HTTP 401" in log.read_text()
        wait_for(lambda: not machine_up(stack, "ord01"), 30, "ord01 to go down")
