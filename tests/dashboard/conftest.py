"""Fixtures of the dashboard tests: Debian's Chromium, once per module; a server with an
hour of sampled traffic."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import sync_playwright

from tests.dashboard.traffic_data import fill
from tests.support.browsers import CHROMIUM_ARGS
from tests.support.servers import register_machine, start_server, stop_server
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists("/usr/bin/chromium"):
        pytest.fail("chromium is not installed: run scripts/bootstrap.sh test")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def traffic_stack(tmp_path_factory):
    """An API server (SQLite, segment store) with machines ord01 of ORD and ams01 of AMS and
    one account, its validated bucket and an hour of its sampled traffic (traffic_data)."""
    server = start_server(
        tmp_path_factory.mktemp("traffic"), None, {"EDGEPCAP_SAMPLE_INTERVAL": "0"}
    )
    ord01 = register_machine(server, "ORD", "ord01")
    ams01 = register_machine(server, "AMS", "ams01")
    stack = Stack(server=server, machine=ord01)
    try:
        acct = stack.account()
        bucket = stack.validated_bucket(acct)
        assert fill(server.data_dir, vars(acct), acct.host, ord01, ams01) > 1000
        yield stack, acct, bucket
    finally:
        ams01.stop()
        ord01.stop()
        stop_server(server)
        if stack._db is not None:
            stack._db.close()
