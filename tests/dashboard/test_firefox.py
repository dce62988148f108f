"""The dashboard's main flow, and the Traffic and Triggers pages, in Firefox too (Debian's
firefox-esr, over WebDriver BiDi)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.dashboard.traffic_data import BURST
from tests.support.browsers import ARTIFACTS

pytestmark = pytest.mark.browser  # Debian's firefox-esr

HERE = Path(__file__).resolve().parent / "firefox"


def test_sign_in_bucket_inline_error_and_sample_in_firefox(stack, tmp_path):
    if not os.path.exists("/usr/bin/firefox-esr") or not (HERE / "node_modules").is_dir():
        pytest.fail("firefox-esr or puppeteer-core missing: run scripts/bootstrap.sh test")
    acct = stack.account()
    bucket = stack.server.data_dir / "buckets" / f"firefox-{acct.id}"
    bucket.mkdir(parents=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [
            "node",
            "flow.mjs",
            stack.server.url + "/",
            acct.id,
            acct.api_token,
            str(bucket),
            str(ARTIFACTS),
        ],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["signedIn"] == "Network packet captures"
    assert "success" in seen["bucket"] and f"file://{bucket}" in seen["bucket"]
    assert "between 1 and 300 seconds" in seen["inlineError"] and seen["invalid"] == "true"
    assert "success" in seen["sample"] and "sample" in seen["sample"]
    assert acct.api_token not in seen["url"]


def test_traffic_and_triggers_in_firefox(traffic_stack, tmp_path):
    if not os.path.exists("/usr/bin/firefox-esr") or not (HERE / "node_modules").is_dir():
        pytest.fail("firefox-esr or puppeteer-core missing: run scripts/bootstrap.sh test")
    stack, acct, bucket = traffic_stack
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The flood is from 35 to 25 minutes before the hour's end: drag over part of it.
    start, end = 1 - (BURST[0] - 60) / 3600, 1 - (BURST[1] + 300) / 3600
    args = [stack.server.url + "/", acct.id, acct.api_token, str(start), str(end), bucket]
    out = subprocess.run(
        ["node", "traffic.mjs", *args, str(ARTIFACTS)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["errors"] == []
    assert seen["canvases"] == 1
    assert all(port in seen["ports"] for port in ("443", "5555", "53", "80", "none"))
    assert all(p in seen["protocols"] for p in ("17 (UDP)", "6 (TCP)", "1 (ICMP)"))
    assert "destination port 5555" in seen["selection"] and "UTC (" in seen["selection"]
    assert 200 <= int(seen["timeLimit"]) <= 300 and seen["offsetTime"].endswith("Z")
    assert "success" in seen["sample"] and "any → any:5555" in seen["sample"]
    assert "armed" in seen["armed"] and "any → any:5555 proto 17" in seen["armed"]
    assert "No triggers yet." in seen["afterDelete"]
    assert acct.api_token not in seen["url"]
