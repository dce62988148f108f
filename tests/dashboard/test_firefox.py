"""The dashboard's main flow in Firefox too (Debian's firefox-esr, over WebDriver BiDi)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

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
