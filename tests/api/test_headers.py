"""Security headers on every kind of answer, and the API docs served without a CDN."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.servers import start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("headers"), None)
    try:
        yield running
    finally:
        stop_server(running)


def policy(response: httpx.Response) -> dict[str, str]:
    csp = response.headers.get("content-security-policy", "")
    return {d.split()[0]: d.strip() for d in csp.split(";") if d.strip()}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/static/app.js"),
        ("GET", "/client/v4/docs"),
        ("GET", "/client/v4/health"),
        ("GET", "/client/v4/accounts/0123/pcaps"),  # refused: no credentials
        ("POST", "/client/v4/accounts/0123/pcaps"),  # refused by the guard: no JSON type
    ],
)
def test_every_answer_carries_the_security_headers(server, method, path):
    r = httpx.request(method, server.url + path, timeout=10)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    csp = policy(r)
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert csp["default-src"] == "default-src 'none'"
    # Scripts and styles from the server only: nothing inline, nothing third-party.
    assert csp["script-src"] == "script-src 'self'"
    assert csp["style-src"] == "style-src 'self'"


def test_the_docs_page_loads_everything_from_the_server(server):
    page = httpx.get(server.url + "/client/v4/docs", timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "<script>" not in page.text.replace(" ", "")  # no inline script
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs, page.text
    for ref in refs:
        assert ref.startswith("/"), f"{ref} is not on this server"
        asset = httpx.get(server.url + ref, timeout=10)
        assert asset.status_code == 200, ref
        assert asset.headers["x-content-type-options"] == "nosniff"
    assert any(ref.endswith("swagger-ui-bundle.js") for ref in refs)
    api_doc = re.search(r'data-openapi="([^"]+)"', page.text)
    assert api_doc and httpx.get(server.url + api_doc.group(1), timeout=10).status_code == 200
