"""The dashboard and the API docs in Chromium under their Content-Security-Policy: both
work, nothing is refused, nothing is fetched from another origin."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.support.servers import start_server, stop_server

# Playwright's init scripts run outside the page's policy: this one records what it refused.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("csp"), None)
    try:
        yield running
    finally:
        stop_server(running)


def visit(browser, url: str):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.add_init_script(RECORD_VIOLATIONS)
    seen = {"requests": [], "console": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("console", lambda m: seen["console"].append(m.text))
    page.on("pageerror", lambda e: seen["console"].append(str(e)))
    page.goto(url)
    return page, seen


def check_clean(page, seen, origin: str) -> None:
    assert page.evaluate("window.__violations") == []
    assert not [m for m in seen["console"] if "Content Security Policy" in m], seen["console"]
    foreign = [
        u
        for u in seen["requests"]
        if not u.startswith(("data:", "blob:"))
        and f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" != origin
    ]
    assert foreign == []
    # And the policy is in force: an injected inline script does not run.
    ran = page.evaluate("""() => {
      const s = document.createElement("script");
      s.textContent = "window.__inline = true";
      document.body.append(s);
      return window.__inline === true;
    }""")
    assert not ran
    assert any(v.startswith("script-src") for v in page.evaluate("window.__violations"))


def test_the_dashboard_runs_under_its_policy(server, browser):
    page, seen = visit(browser, server.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Account ID").fill("0" * 32)
    page.get_by_label("API token").fill("ept_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_be_visible()
    check_clean(page, seen, server.url)
    page.close()


def test_the_api_docs_run_under_their_policy(server, browser):
    page, seen = visit(browser, server.url + "/client/v4/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("edgepcap")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    check_clean(page, seen, server.url)
    page.close()
