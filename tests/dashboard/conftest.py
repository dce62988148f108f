"""Fixtures of the dashboard tests: Debian's Chromium, once per module."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import sync_playwright

from tests.support.browsers import CHROMIUM_ARGS


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
