"""Agents reach the API over TLS: a private CA (`--ca-file`) end to end, and without it a
clear refusal. The CA is made here (trustme); traffic stays in the test's namespaces."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trustme

from edgepcap.agent.kernel import netns, nft
from edgepcap.formats.pcapfile import Reader
from tests.support.agentkeys import machine_up, mint_key, run_agent
from tests.support.api import full
from tests.support.kernel import OUTSIDE, send, wire
from tests.support.processes import wait_for
from tests.support.servers import start_server, stop_server
from tests.support.stack import Stack

pytestmark = pytest.mark.root  # agents in namespaces, nftables


@pytest.fixture
def tls_stack(tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key, ca_file = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(chain), append=i > 0)
    ca.cert_pem.write_to_path(str(ca_file))
    verify = ssl.create_default_context(cafile=str(ca_file))
    args = ("--tls-cert", str(chain), "--tls-key", str(key))
    server = start_server(tmp_path / "api", None, args=args, verify=verify)
    try:
        yield Stack(server=server, verify=verify), ca_file
    finally:
        stop_server(server)


@contextmanager
def agent(stack: Stack, machine: str, ns: str, *extra: str) -> Iterator[Path]:
    """`edgepcap agent` for `machine` of colo TLS with its own key; yields its log's path."""
    key = mint_key(stack, "TLS", machine)["agent_key"]
    with run_agent(stack, key, "TLS", machine, ns, *extra) as log:
        yield log


def test_an_agent_with_the_ca_file_registers_and_captures_over_tls(tls_stack):
    stack, ca_file = tls_stack
    account = stack.account()
    conf = stack.validated_bucket(account)
    with wire() as (sender, ns), agent(stack, "tls01", ns, "--ca-file", str(ca_file)) as log:
        wait_for(lambda: machine_up(stack, "tls01"), 30, "tls01 to register over TLS")
        with stack.client(account) as c:
            r = c.post("/pcaps", json=full(conf, time_limit=60, colo_name="tls01"))
            assert r.status_code == 200, r.text
            pcap_id = r.json()["result"]["id"]
            wait_for(
                lambda: c.get(f"/pcaps/{pcap_id}").json()["result"]["status"] == "running",
                15,
                "the capture to start",
            )
            for port in range(5000, 5005):
                send(sender, OUTSIDE, account.host(1), port)
            # Progress reports (over TLS) carry the count; then the customer stops it.
            wait_for(
                lambda: c.get(f"/pcaps/{pcap_id}").json()["result"]["packets_captured"] == 5,
                15,
                "the agent to report its 5 packets",
            )
            assert c.put(f"/pcaps/{pcap_id}/stop").status_code == 200
            done = wait_for(
                lambda: (
                    (p := c.get(f"/pcaps/{pcap_id}").json()["result"])["status"]
                    in ("success", "failed")
                    and p
                ),
                30,
                "the capture to end",
            )
        assert done["status"] == "success", (done, log.read_text())
        assert done["packets_captured"] == 5
        files = list(Path(conf.removeprefix("file://")).glob(f"tls01/pcap_{pcap_id}.pcap"))
        assert len(files) == 1
        assert len(list(Reader([files[0].read_bytes()]))) == 5
        wait_for(lambda: not any(t.endswith(pcap_id) for t in nft.list_tables(ns)), 10, "tables")
    # The plain-HTTP port does not exist: the agent key never crossed in clear.
    with pytest.raises(httpx.HTTPError):
        httpx.get(stack.server.url.replace("https", "http") + "/metrics", timeout=5)


def test_an_agent_without_the_ca_file_refuses_the_api_and_says_why(tls_stack):
    stack, _ca_file = tls_stack
    ns = f"eptls{secrets.token_hex(3)}"
    netns.add(ns)
    try:
        with agent(stack, "tls02", ns) as log:
            wait_for(lambda: "--ca-file" in log.read_text(), 30, "the agent to say why")
            text = log.read_text()
            assert "does not trust" in text and "CERTIFICATE_VERIFY_FAILED" in text, text
            assert not machine_up(stack, "tls02")
            assert "Traceback" not in text
    finally:
        netns.delete(ns)
