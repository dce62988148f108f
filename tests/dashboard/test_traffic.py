"""The Traffic and Triggers pages in Debian's headless Chromium, against a real API server
holding an hour of sampled traffic (traffic_data): chart and table from the samples,
re-queries on a new group or range, "Capture this" into the wizard and a sample capture;
a trigger armed, fired, listed and deleted. Screenshots: test-artifacts/dashboard/traffic.png
and triggers.png (docs/images/dashboard-{traffic,triggers}.png are copies of them).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import expect

from tests.dashboard.traffic_data import BURST
from tests.support.browsers import shot
from tests.support.packets import udp
from tests.support.samples import owned_by, ship

RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def signed_in(browser, stack, acct):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.add_init_script(RECORD_VIOLATIONS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(stack.server.url + "/")
    page.get_by_label("Account ID").fill(acct.id)
    page.get_by_label("API token").fill(acct.api_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Network packet captures")).to_be_visible()
    return page, errors


def query_of(response) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.url).query).items()}


def traffic_request(page, **want):
    return page.expect_response(
        lambda r: "/traffic?" in r.url and all(query_of(r).get(k) == v for k, v in want.items())
    )


def drag(page, start: float, end: float) -> None:
    """Drags across the plot from `start` to `end`, fractions of its width."""
    box = page.locator("#chart .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * end, y, steps=8)
    page.mouse.up()


def test_the_traffic_page_charts_samples_and_captures_a_selection(traffic_stack, browser):
    stack, acct, _bucket = traffic_stack
    page, errors = signed_in(browser, stack, acct)

    with traffic_request(page, group_by="destination_port") as first:
        page.get_by_role("link", name="Traffic").click()
    assert first.value.ok
    expect(page.locator("#traffic")).to_have_attribute("data-loaded", "destination_port 1h")
    expect(page.locator("#chart canvas")).to_have_count(1)
    table = page.locator("#top tbody")
    for port in ("53", "443", "80", "5555", "none (no ports)"):
        expect(table.get_by_role("button", name=port, exact=True)).to_be_visible()
    expect(page.locator("#legend button")).to_have_count(5)
    # The table's estimates are the API's: 100 packets per sample.
    result = first.value.json()["result"]
    assert result["samples"] > 1000
    top = result["series"][0]
    assert top["packets"] == 100 * top["samples"]

    # Another group, another range: each a new query, and the page shows its answer.
    with traffic_request(page, group_by="protocol"):
        page.get_by_label("Group by").select_option("protocol")
    expect(page.locator("#traffic")).to_have_attribute("data-loaded", "protocol 1h")
    expect(table).to_contain_text("17 (UDP)")
    expect(table).to_contain_text("6 (TCP)")
    expect(table).to_contain_text("1 (ICMP)")
    with traffic_request(page, group_by="protocol") as six:
        page.get_by_label("Time range").select_option("6h")
    assert abs(time.time() - int(query_of(six.value)["since"]) - 6 * 3600) < 60
    expect(page.locator("#traffic")).to_have_attribute("data-loaded", "protocol 6h")
    page.get_by_text("bits/s", exact=True).click()
    expect(table).to_contain_text("b/s")

    # Colo: "Capture this" from now is a full capture in that colo.
    with traffic_request(page, group_by="colo"):
        page.get_by_label("Group by").select_option("colo")
    expect(page.locator("#traffic")).to_have_attribute("data-loaded", "colo 6h")
    page.locator("#top").get_by_role("button", name="ORD", exact=True).click()
    page.get_by_label("Full capture from now in ORD").check()
    page.get_by_role("button", name="Capture this").click()
    expect(page.get_by_role("heading", name="Start a full capture")).to_be_visible()
    expect(page.get_by_label("Colo or machine")).to_have_value("ORD")
    expect(page.get_by_label("Destination port")).to_have_value("")

    # The flood: its port in the table, its span dragged on the chart, a sample of it.
    page.get_by_role("link", name="Traffic").click()
    with traffic_request(page, group_by="destination_port"):
        page.get_by_label("Group by").select_option("destination_port")
    with traffic_request(page, group_by="destination_port"):
        page.get_by_label("Time range").select_option("1h")
    expect(page.locator("#traffic")).to_have_attribute("data-loaded", "destination_port 1h")
    page.get_by_text("packets/s", exact=True).click()
    page.locator("#top").get_by_role("button", name="5555", exact=True).click()
    expect(page.locator("#top tr.selected")).to_contain_text("5555")
    # 1 h wide: the flood is from 35 to 25 minutes before the end; take a part of it.
    start, end = 1 - (BURST[0] - 60) / 3600, 1 - (BURST[1] + 300) / 3600
    drag(page, start, end)
    selection = page.locator("#selection")
    expect(selection).to_contain_text("destination port 5555")
    expect(selection).to_contain_text("UTC (")
    page.mouse.move(10, 10)
    shot(page, "traffic")

    page.get_by_role("button", name="Capture this").click()
    expect(page.get_by_role("heading", name="Start a sample capture")).to_be_visible()
    expect(page.get_by_label("Destination port")).to_have_value("5555")
    limit = int(page.get_by_label("Time limit (s)").input_value())
    assert 200 <= limit <= 300
    offset = page.get_by_label("Window ends at (UTC, optional)").input_value()
    assert offset.endswith("Z")
    page.get_by_role("button", name="Start").click()
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("success")
    expect(facts).to_contain_text("any → any:5555")
    captured = int(facts.locator("dt:text-is('Packets captured') + dd").inner_text())
    assert captured > 50  # ~60 samples per 10 s of the flood
    assert page.evaluate("window.__violations") == []
    assert errors == []
    page.close()


def arm(page, protocol: str, port: str, threshold: str, colo: str, bucket: str) -> None:
    page.get_by_label("Protocol").fill(protocol)
    page.get_by_label("Destination port").fill(port)
    page.get_by_label("Threshold (packets/s)").fill(threshold)
    page.get_by_label("Colo or machine").select_option(colo)
    page.get_by_label("Bucket").select_option(bucket)
    page.get_by_role("button", name="Arm").click()
    expect(page.locator(".notice")).to_contain_text("armed")


def test_triggers_are_armed_fire_a_capture_and_are_deleted(traffic_stack, browser):
    stack, acct, bucket = traffic_stack
    page, errors = signed_in(browser, stack, acct)
    page.get_by_role("link", name="Triggers").click()
    expect(page.get_by_role("heading", name="Capture triggers")).to_be_visible()
    rows = page.locator("#triggers tbody tr")
    expect(rows).to_have_text(["No triggers yet."])

    arm(page, "17", "5555", "1000", "ORD", bucket)
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("any → any:5555 proto 17")
    expect(rows.first).to_contain_text("1000 pps over 10 s")
    expect(rows.first).to_contain_text("armed")  # not fired yet
    arm(page, "6", "443", "50000", "ams01", bucket)
    expect(rows).to_have_count(2)

    # The flood again, now: ~3000 packets/s estimated over the last seconds.
    now = time.time_ns()
    flood = [udp(f"100.64.7.{i % 250 + 1}", acct.host(2), 1024 + i, 5555) for i in range(400)]
    ship(stack.machine, owned_by(acct.id, flood, [now - i * 10**7 for i in range(400)]))
    first = page.locator("#triggers tbody tr", has_text="proto 17")
    fired = first.locator("a[href^='#/captures/']")
    expect(fired).to_have_count(1, timeout=60_000)
    page.mouse.move(0, 0)
    shot(page, "triggers")

    # The fired trigger links to its capture, which links back to it.
    fired.click()
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("any → any:5555 proto 17")
    expect(facts).to_contain_text("ORD")
    facts.get_by_role("link", name="trigger").click()
    expect(page.locator("#fired tbody tr")).to_have_count(1)

    page.get_by_role("link", name="Triggers", exact=True).click()
    page.get_by_role("button", name="Delete trigger").last.click()
    expect(page.locator(".notice")).to_contain_text("Trigger deleted")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("proto 17")
    assert page.evaluate("window.__violations") == []
    assert errors == []
    page.close()
