"""The dashboard in Debian's headless Chromium (Playwright), against the lab, end to end."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from tests.support.browsers import shot
from tests.support.captures import packets_in


def test_the_whole_flow_in_a_browser(lab, browser, tmp_path):
    page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(lab["api"] + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Account ID").fill(lab["account_id"])
    page.get_by_label("API token").fill("ept_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("invalid API token")
    page.get_by_label("API token").fill(lab["api_token"])
    shot(page, "01-sign-in")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Network packet captures")).to_be_visible()

    # Add and validate a file:// bucket.
    bucket = Path(lab["destination_conf"].removeprefix("file://")).parent / "dashboard"
    bucket.mkdir(exist_ok=True)
    page.get_by_role("link", name="Buckets").click()
    page.get_by_label("Bucket URL").fill(f"file://{bucket}")
    page.get_by_role("button", name="Add").click()
    notice = page.locator(".notice")
    expect(notice).to_contain_text("ownership-challenge-")
    challenge = next(bucket.glob("ownership-challenge-*.txt")).read_text()
    shot(page, "02-bucket-added")
    page.get_by_label("Bucket", exact=True).select_option(f"file://{bucket}")
    page.get_by_label("Contents of the challenge file").fill(challenge)
    page.get_by_role("button", name="Validate").click()
    expect(notice).to_contain_text("Bucket validated")
    expect(page.locator("#buckets")).to_contain_text("success")
    shot(page, "03-bucket-validated")

    # An inline validation error, with the API's own message under the field.
    page.get_by_role("link", name="Start a capture").click()
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Time limit (s)").fill("301")
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#e-time_limit")).to_contain_text("between 1 and 300 seconds")
    expect(page.get_by_label("Time limit (s)")).to_have_attribute("aria-invalid", "true")
    shot(page, "04-inline-error")

    # A full capture in the lab: start, watch it run, stop, preview, download.
    page.get_by_role("link", name="Start a capture").click()
    page.get_by_label("Full").check()
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Protocol").fill("17")
    page.get_by_label("Colo or machine").select_option("ORD")
    page.get_by_label("Bucket", exact=True).select_option(f"file://{bucket}")
    page.get_by_role("button", name="Start").click()
    expect(page.locator("dl.facts")).to_contain_text("running")
    lab.traffic("--count", "40", "--proto", "udp", "--tenant", "customer")
    expect(page.locator("#machines")).to_contain_text("40")
    shot(page, "05-full-running")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("dl.facts")).to_contain_text("success")
    expect(page.locator("#packets tbody tr")).to_have_count(100)
    page.locator("#packets tbody tr").first.click()
    expect(page.locator("#hex")).to_contain_text("0000  ")
    shot(page, "06-full-preview")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download").click()
    saved = tmp_path / "full.pcap"
    info.value.save_as(saved)
    assert len(packets_in(saved)) == 160  # 40 per flow: 2 hosts x IPv4/IPv6

    # A sample capture: answered at once.
    page.get_by_role("link", name="Start a capture").click()
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Start").click()
    expect(page.locator("dl.facts")).to_contain_text("success")
    shot(page, "07-sample")

    page.get_by_role("link", name="Captures").click()
    expect(page.locator("#captures tbody tr")).to_have_count(2)
    expect(page.locator("#captures")).to_contain_text("full")
    shot(page, "08-captures")
    assert lab["api_token"] not in page.url
