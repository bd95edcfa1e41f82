"""The web console in a real browser: Debian's Chromium driven by Playwright, against the deployment's
Envoy, with readings sent through the public API. Every test also checks that the page logged no
error or warning and threw nothing."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from stack import system
from testkit.http import http, http_bytes
from testkit.webhooks import Webhook, webhook
from tests import front_door
from tests.helpers import eventually, only_alarm, rules_in_force
from tests.services import in_place_of_the_stack_s
from tests.target import Target

# The default rule: temperature at or above 95, three times in a row, raises an event.
WARM = (96.0, 97.0, 98.0)


@dataclass
class Tab:
    """A page, and what it complained about: console errors and warnings, uncaught exceptions."""

    page: Page
    problems: list[str] = field(default_factory=list)
    # Console messages that are expected in a test: e.g. the browser's own line for a 503.
    expected: Callable[[ConsoleMessage], bool] = lambda _: False

    def log(self, message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"} and not self.expected(message):
            self.problems.append(f"{message.type}: {message.text} ({message.location.get('url')})")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    chromium = await asyncio.to_thread(system.ensure_browser)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture
async def tab(browser: Browser, target: Target) -> AsyncIterator[Tab]:
    context = await browser.new_context(
        base_url=target.envoy_url, locale="en-GB", viewport={"width": 1200, "height": 900}
    )
    page = await context.new_page()
    opened = Tab(page)
    page.on("console", opened.log)
    page.on("pageerror", lambda error: opened.problems.append(f"uncaught: {error}"))
    yield opened
    await context.close()


def iso(at: datetime) -> str:
    return at.isoformat(timespec="microseconds").replace("+00:00", "Z")


async def send(target: Target, readings: list[tuple[str, float, datetime]]) -> None:
    """Pushes (sensor, temperature, time) readings through Envoy's HTTP/JSON route."""
    metrics = [
        {"sensorId": s, "metricType": "temperature", "value": v, "readingTime": iso(at), "unit": "celsius"}
        for s, v, at in readings
    ]
    status, body = await http("POST", f"{target.envoy_url}/v1/metrics:push", {"metrics": metrics})
    assert status == 200, (status, body)


async def listed(target: Target, prefix: str, count: int) -> None:
    """Waits until the API lists `count` sensors starting with `prefix` (their readings stored)."""

    async def check() -> None:
        status, body = await http(
            "GET", f"{target.envoy_url}/v1/sensors?sensorIdPrefix={prefix}&pageSize=1000"
        )
        assert status == 200 and len(body["sensors"]) == count, body

    await eventually(check, what=f"{count} sensors {prefix}* listed")


def minutes_ago(now: datetime, minutes: int, second: int = 0) -> datetime:
    """A time `minutes` whole minutes before `now`'s minute, at `second` into it."""
    return now.replace(second=0, microsecond=0) - timedelta(minutes=minutes) + timedelta(seconds=second)


# --- what Envoy serves ----------------------------------------------------------------------------


def test_envoy_serves_the_console_s_files_with_their_types(target: Target) -> None:
    for path, content_type in [
        ("/", "text/html"),
        ("/sensors/any-id", "text/html"),
        ("/events", "text/html"),
        ("/devices", "text/html"),
        ("/console/js/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
        ("/console/vendor/uPlot.js", "text/javascript"),  # from npm, by `make run`
    ]:
        status, headers, body = http_bytes("GET", target.envoy_url + path)
        assert status == 200, (path, status, body[:200])
        assert headers["content-type"].startswith(content_type), (path, headers)
        assert "default-src 'self'" in headers["content-security-policy"], headers
    status, _, body = http_bytes("POST", target.envoy_url + "/")
    assert status == 404, body


# --- the fleet ------------------------------------------------------------------------------------


async def test_the_fleet_lists_a_sensor_just_sent(tab: Tab, target: Target, sensor_id: str) -> None:
    await send(target, [(sensor_id, 21.5, datetime.now(UTC) - timedelta(seconds=5))])
    await listed(target, sensor_id, 1)
    page = tab.page
    await page.goto("/")
    await page.get_by_label("Sensor id starts with").fill(sensor_id)
    await page.get_by_label("Sensor id starts with").press("Enter")
    await expect(page).to_have_url(re.compile(rf"/\?prefix={sensor_id}$"))
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=sensor_id, exact=True))
    await expect(row).to_contain_text("temperature 21.5 celsius")
    await expect(row).to_contain_text(re.compile(r"\d+ s ago"))
    assert tab.problems == []


async def test_the_fleet_pages_through_many_sensors(tab: Tab, target: Target) -> None:
    prefix = f"page-{uuid.uuid4().hex[:10]}-"
    at = datetime.now(UTC) - timedelta(seconds=5)
    await send(target, [(f"{prefix}{i:03d}", float(i), at) for i in range(55)])
    await listed(target, prefix, 55)
    page = tab.page
    await page.goto(f"/?prefix={prefix}")
    links = page.get_by_role("link", name=re.compile(f"^{prefix}"))
    await expect(links).to_have_count(50)
    await expect(page.get_by_role("button", name="Previous")).to_be_disabled()
    await page.get_by_role("button", name="Next").click()
    await expect(links).to_have_count(5)
    await expect(links.first).to_have_text(f"{prefix}050")
    await expect(page.get_by_role("button", name="Next")).to_be_disabled()
    await page.get_by_role("button", name="Previous").click()
    await expect(links).to_have_count(50)
    assert tab.problems == []


# --- a sensor -------------------------------------------------------------------------------------


async def test_a_sensor_page_charts_its_buckets_and_marks_its_events(
    tab: Tab, target: Target, sensor_id: str
) -> None:
    # Readings in five distinct minutes of the last hour; three warm ones in a row raise an event.
    now = datetime.now(UTC)
    readings = {50: (20.0, 21.0), 40: (22.0,), 30: WARM, 20: (30.0,), 10: (25.0, 26.0)}
    await send(target, [
        (sensor_id, value, minutes_ago(now, minutes, 10 * i))
        for minutes, values in readings.items() for i, value in enumerate(values)
    ])  # fmt: skip
    await listed(target, sensor_id, 1)
    await eventually(lambda: event_stored(target, sensor_id), what="the event stored")
    page = tab.page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.goto(f"/sensors/{sensor_id}")
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Sensor {sensor_id}")
    # The last hour at a minute a bucket: one point for each minute with readings.
    await expect(page.locator(".plot")).to_have_attribute("data-points", "5")
    await expect(page.locator(".plot canvas")).to_have_count(1)
    await expect(page.locator("table.buckets tbody tr")).to_have_count(5)
    readings_count = (
        page.locator(".stats div").filter(has=page.locator("dt", has_text="Readings")).locator("dd")
    )
    await expect(readings_count).to_have_text("9")
    # 61 buckets, or 60 when the hour happens to start on a whole minute.
    await expect(page.locator("figcaption")).to_contain_text(re.compile("5 of 6[01] buckets hold readings"))
    await expect(page.locator("figcaption")).to_contain_text("1 event.")
    events = page.locator("table.events tbody tr")
    await expect(events).to_have_count(1)
    await expect(events).to_contain_text("98")
    # Nothing from elsewhere: the page, its scripts and uPlot come from Envoy, the data from the API.
    assert all(url.startswith(target.envoy_url + "/") for url in requests), requests
    assert tab.problems == []


async def event_stored(target: Target, sensor_id: str) -> None:
    status, body = await http("GET", f"{target.envoy_url}/api/v1/sensors/{sensor_id}/events")
    assert status == 200 and len(body["events"]) == 1, body


async def test_a_sensor_page_lists_the_changes_of_its_alarms_and_charts_only_raises(
    tab: Tab, target: Target, sensor_id: str, rules: Any
) -> None:
    # A rule with alarms on "pressure": raised at 5.5, acknowledged, cleared by the reading below.
    await rules(metricType="pressure", sensorIdPrefix=sensor_id, threshold=5, count=2)
    await rules_in_force(target)
    now = datetime.now(UTC)
    pressure = [(5.2, 40), (5.5, 39), (1.0, 38)]
    metrics = [{"sensorId": sensor_id, "metricType": "pressure", "value": value,
                "readingTime": iso(minutes_ago(now, minutes))} for value, minutes in pressure[:2]]  # fmt: skip
    assert (await http("POST", f"{target.envoy_url}/v1/metrics:push", {"metrics": metrics}))[0] == 200
    alarm_id = await only_alarm(target.envoy_url, sensor_id)
    status, _ = await http("POST", f"{target.envoy_url}/v1/alarms/{alarm_id}:acknowledge", {})
    assert status == 200
    value, minutes = pressure[2]
    clear = {
        "sensorId": sensor_id,
        "metricType": "pressure",
        "value": value,
        "readingTime": iso(minutes_ago(now, minutes)),
    }
    assert (await http("POST", f"{target.envoy_url}/v1/metrics:push", {"metrics": [clear]}))[0] == 200

    async def three_events() -> None:
        status, body = await http(
            "GET", f"{target.envoy_url}/v1/events?sensorId={sensor_id}&startTime={iso(now - timedelta(hours=1))}"
            f"&endTime={iso(now + timedelta(minutes=5))}",
        )  # fmt: skip
        assert status == 200 and len(body["events"]) == 3, body

    await eventually(three_events, what="the raise, acknowledgement and clear stored")
    page = tab.page
    await page.goto(f"/sensors/{sensor_id}?type=pressure")
    events = page.locator("table.events tbody tr")
    await expect(events).to_have_count(3)
    await expect(events.filter(has_text="alarm acknowledged by local")).to_have_count(1)
    await expect(events.filter(has_text="alarm cleared by rule")).to_have_count(1)
    await expect(events.filter(has_text="\u2265 5 \u00d7 2")).to_have_count(1)  # the rule: ≥ 5, twice
    await expect(page.locator("figcaption")).to_contain_text("1 event.")
    assert tab.problems == []


async def test_zooming_narrows_the_range_and_keeps_it_in_the_address(
    tab: Tab, target: Target, sensor_id: str
) -> None:
    now = datetime.now(UTC)
    await send(target, [(sensor_id, float(m), minutes_ago(now, m)) for m in range(5, 56, 5)])
    await listed(target, sensor_id, 1)
    page = tab.page
    await page.goto(f"/sensors/{sensor_id}?type=temperature&range=1h")
    plot = page.locator(".plot")
    await expect(plot).to_have_attribute("data-points", "11")
    # Dragging across the middle third of the chart shows about those 20 minutes.
    box = await page.locator(".plot .u-over").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + box["width"] / 3, y)
    await page.mouse.down()
    await page.mouse.move(box["x"] + 2 * box["width"] / 3, y, steps=5)
    await page.mouse.up()
    await expect(page).to_have_url(re.compile(r"[?&]from=.*&to="))
    await expect(page.get_by_label("Range")).to_have_value("")
    shown = span_minutes(page.url)
    assert 15 <= shown <= 25, page.url
    await expect(plot).to_have_attribute("data-points", re.compile(r"^[345]$"))
    # The address shows the same view.
    await page.reload()
    await expect(plot).to_have_attribute("data-points", re.compile(r"^[345]$"))
    assert span_minutes(page.url) == shown
    zoomed = page.url
    await page.get_by_role("button", name="Zoom out").click()
    await expect(page).not_to_have_url(zoomed)
    assert span_minutes(page.url) == pytest.approx(2 * shown, abs=1)
    assert tab.problems == []


def span_minutes(url: str) -> float:
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    start, end = (datetime.fromisoformat(query[k].replace("%3A", ":")) for k in ("from", "to"))
    return (end - start).total_seconds() / 60


async def test_an_unknown_sensor_shows_an_empty_state(tab: Tab) -> None:
    page = tab.page
    unknown = f"never-{uuid.uuid4().hex[:12]}"
    await page.goto(f"/sensors/{unknown}")
    await expect(page.get_by_text(f"No readings from sensor “{unknown}”.")).to_be_visible()
    await expect(page.get_by_role("link", name="Back to the fleet")).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_count(0)
    assert tab.problems == []


# --- groups ---------------------------------------------------------------------------------------


async def test_a_group_s_dashboard_shows_the_api_s_numbers(tab: Tab, target: Target, sensor_id: str) -> None:
    prefix = f"{sensor_id}-"
    now = datetime.now(UTC)
    readings = [
        (f"{prefix}{n}", 20.0 + n * 3 + k % 4, now - timedelta(minutes=5 + 37 * k))
        for n in range(3)
        for k in range(30)
    ]
    await send(target, readings)
    await listed(target, prefix, 3)
    page = tab.page
    await page.goto(f"/?prefix={prefix}")
    await page.get_by_role("link", name=f"Chart {prefix}* as a group").click()
    await expect(page).to_have_url(re.compile(rf"/groups\?prefix={prefix}$"))
    await expect(page.get_by_label("Metric")).to_have_value("temperature")
    summary = page.get_by_label("The group over the range")
    await expect(summary).to_contain_text("Sensors3")
    end = datetime.now(UTC)
    query = (f"sensorIdPrefix={prefix}&metricType=temperature&bucketWidth=3600s&topCount=10"
             f"&startTime={iso(end - timedelta(hours=24))}&endTime={iso(end)}")  # fmt: skip
    status, body = await http("GET", f"{target.envoy_url}/v1/sensors:aggregate?{query}")
    assert status == 200, body
    stats = body["stats"]
    assert (stats["sensorCount"], stats["count"]) == (3, str(len(readings)))
    await expect(summary).to_contain_text(f"Readings{len(readings)}")
    ranked = page.locator("table.top-sensors tbody th")
    await expect(ranked).to_have_text([t["sensorId"] for t in stats["topSensors"]])
    assert [t["sensorId"] for t in stats["topSensors"]] == [f"{prefix}2", f"{prefix}1", f"{prefix}0"]
    filled = [b for b in stats["buckets"] if b["count"] != "0"]
    await expect(page.locator("table.buckets tbody tr")).to_have_count(len(filled))
    await expect(page.locator(".plot")).to_have_attribute("data-points", str(len(filled)))
    assert tab.problems == []


# --- alarms ---------------------------------------------------------------------------------------


async def delete_rules_of(target: Target, sensor_id: str) -> None:
    status, body = await http("GET", f"{target.envoy_url}/v1/rules?pageSize=1000")
    assert status == 200, body
    for rule in body["rules"]:
        if rule.get("sensorIdPrefix") == sensor_id:
            await http("DELETE", f"{target.envoy_url}/v1/rules/{rule['ruleId']}")


@pytest.fixture
async def form_rules(target: Target, sensor_id: str) -> AsyncIterator[None]:
    """Deletes the rules a test made in the console's form for its sensor."""
    yield
    await delete_rules_of(target, sensor_id)


async def make_rule_in_the_form(page: Page, sensor_id: str, count: str) -> str:
    """Fills the New rule form (temperature ≥ 50 for the sensor, severity Major); returns its id."""
    await page.goto("/")
    await page.get_by_role("link", name="Rules").click()
    await page.get_by_role("link", name="New rule").click()
    await expect(page.get_by_role("heading", name="New rule")).to_be_visible()
    await page.get_by_label("Metric type").fill("temperature")
    await page.get_by_label("Sensor id starts with").fill(sensor_id)
    await page.get_by_label("Threshold", exact=True).fill("50")
    await page.get_by_label("Readings in a row that raise it").fill(count)
    await page.get_by_label("Severity").select_option("SEVERITY_MAJOR")
    await page.get_by_role("button", name="Create rule").click()
    await expect(page).to_have_url(re.compile(r"/rules\?done="))
    status = page.get_by_role("status")
    await expect(status).to_have_text(re.compile(r"^r-[0-9a-f]{16} created\.$"))
    return (await status.inner_text()).split()[0]


@pytest.mark.usefixtures("form_rules")
async def test_a_rule_made_in_the_form_raises_an_alarm_shown_live_then_acknowledged_and_cleared(
    tab: Tab, target: Target, sensor_id: str
) -> None:
    page = tab.page
    rule_id = await make_rule_in_the_form(page, sensor_id, "2")
    status, rule = await http("GET", f"{target.envoy_url}/v1/rules/{rule_id}")
    assert (status, rule["threshold"], rule["count"], rule["severity"]) == (200, 50, 2, "SEVERITY_MAJOR"), (
        rule
    )
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="temperature ≥ 50"))
    await expect(row.filter(has_text=rule_id)).to_contain_text(f"{sensor_id}*")
    rule = {"ruleId": rule_id}
    await page.get_by_role("link", name="Alarms").click()
    await page.get_by_label("Sensor id starts with").fill(sensor_id)
    await page.get_by_role("button", name="Show").click()
    await expect(page).to_have_url(re.compile(rf"/alarms\?prefix={sensor_id}$"))
    await expect(page.get_by_text("No active alarm matches.")).to_be_visible()
    await expect(page.locator(".stream-state")).to_have_attribute("data-state", "open")

    # Readings that meet the rule twice raise its alarm: the page shows it without a reload.
    await rules_in_force(target)
    now = datetime.now(UTC)
    await send(
        target, [(sensor_id, 60.0, now - timedelta(seconds=2)), (sensor_id, 61.0, now - timedelta(seconds=1))]
    )
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=sensor_id))
    await expect(row).to_contain_text("Major", timeout=10_000)
    await expect(row).to_contain_text(rule["ruleId"])
    await expect(row).to_contain_text("Active")
    await expect(page.get_by_role("navigation", name="Severities")).to_contain_text("Major 1")
    link = row.get_by_role("link", name=sensor_id)
    assert re.search(rf"/sensors/{sensor_id}\?type=temperature&from=", await link.get_attribute("href") or "")

    await row.get_by_role("button", name=re.compile("^Acknowledge the alarm")).click()
    await expect(page.get_by_role("status").last).to_have_text("1 alarm(s) acknowledged.")
    await expect(row).to_contain_text("local")
    await row.get_by_role("checkbox").check()
    await page.get_by_role("button", name="Clear selected").click()
    await expect(page.get_by_role("status").last).to_have_text("1 alarm(s) cleared.")
    await expect(page.get_by_text("No active alarm matches.")).to_be_visible()

    status, body = await http("GET", f"{target.envoy_url}/v1/alarms?sensorId={sensor_id}")
    assert status == 200, body
    (alarm,) = body["alarms"]
    assert (alarm["state"], alarm["clearedBy"], alarm["acknowledgedBy"]) == (
        "ALARM_STATE_CLEARED",
        "local",
        "local",
    )
    await page.get_by_label("State").select_option("cleared")
    await page.get_by_role("button", name="Show").click()
    await expect(row).to_contain_text("Cleared")
    assert tab.problems == []


@pytest.mark.usefixtures("form_rules")
async def test_a_bad_rule_shows_the_server_s_objection_next_to_its_field(tab: Tab, sensor_id: str) -> None:
    # The browser's own line for the refusal the test provokes.
    tab.expected = lambda m: m.location.get("url", "").endswith("/v1/rules") and "status of 400" in m.text
    page = tab.page
    await page.goto("/rules/new")
    await page.get_by_label("Metric type").fill("temperature")
    await page.get_by_label("Sensor id starts with").fill(sensor_id)
    await page.get_by_label("Threshold", exact=True).fill("fifty")
    await page.get_by_role("button", name="Create rule").click()
    threshold = page.get_by_label("Threshold", exact=True)
    await expect(threshold).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("[data-field='rule.threshold'] .field-error")).to_have_text("must be a number")
    await expect(threshold).to_be_focused()
    # What only the server knows: it names the field, and the form puts its words there.
    await threshold.fill("50")
    await page.get_by_label("Readings in a row that raise it").fill("5000")
    await page.get_by_role("button", name="Create rule").click()
    count = page.get_by_label("Readings in a row that raise it")
    await expect(count).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("[data-field='rule.count'] .field-error")).to_contain_text("1,000")
    await expect(threshold).not_to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_role("status")).to_have_text("Not saved: 1 field(s) to correct.")
    await expect(page).to_have_url(re.compile(r"/rules/new$"))
    assert tab.problems == []


@pytest.mark.usefixtures("form_rules")
async def test_a_rule_is_disabled_enabled_and_deleted_from_the_list(
    tab: Tab, target: Target, sensor_id: str
) -> None:
    page = tab.page
    rule_id = await make_rule_in_the_form(page, sensor_id, "3")
    await page.get_by_role("button", name=f"Disable rule {rule_id}").click()
    await expect(page.get_by_role("status")).to_have_text(f"{rule_id} disabled.")
    status, rule = await http("GET", f"{target.envoy_url}/v1/rules/{rule_id}")
    assert (status, rule["enabled"]) == (200, False), rule
    await page.get_by_role("button", name=f"Enable rule {rule_id}").click()
    await expect(page.get_by_role("status")).to_have_text(f"{rule_id} enabled.")
    await page.get_by_role("button", name=f"Delete rule {rule_id}").click()
    await page.get_by_role("button", name=f"Confirm: delete rule {rule_id}").click()
    await expect(page.get_by_role("status")).to_have_text(f"{rule_id} deleted.")
    status, _ = await http("GET", f"{target.envoy_url}/v1/rules/{rule_id}")
    assert status == 404
    assert tab.problems == []


@pytest.mark.usefixtures("form_rules")
async def test_the_preview_marks_where_the_rule_raised_its_alarms(
    tab: Tab, target: Target, sensor_id: str
) -> None:
    # The rule (≥ 50 twice in a row, cleared by one reading below) over readings the processor takes:
    # it raises twice; the preview of the same rule over the stored readings says where.
    page = tab.page
    rule_id = await make_rule_in_the_form(page, sensor_id, "2")
    await rules_in_force(target)
    start = datetime.now(UTC) - timedelta(minutes=10)
    values = [60.0, 10.0, 60.0, 61.0, 62.0, 10.0, 55.0, 56.0, 10.0]
    await send(target, [(sensor_id, v, start + timedelta(seconds=i)) for i, v in enumerate(values)])

    async def both_raised() -> list[str]:
        status, body = await http(
            "GET", f"{target.envoy_url}/v1/alarms?sensorId={sensor_id}&state=ALARM_STATE_CLEARED"
        )
        assert status == 200 and len(body["alarms"]) == 2, body
        return sorted(a["raiseTime"] for a in body["alarms"])

    raised = await eventually(both_raised, what="the rule's two alarms raised and cleared")
    await page.goto(f"/rules/{rule_id}")
    await page.get_by_label("Sensor", exact=True).fill(sensor_id)
    await page.get_by_role("button", name="Preview").click()
    await expect(page.locator(".preview-summary")).to_contain_text(
        "would have raised 2 alarm(s) and cleared 2"
    )
    shown = await page.locator(".preview-changes li[data-change=raised] time").evaluate_all(
        "times => times.map(t => t.dateTime)"
    )
    assert [datetime.fromisoformat(t) for t in shown] == [datetime.fromisoformat(t) for t in raised]
    await expect(page.locator(".preview .plot")).to_have_attribute("data-points", str(len(values)))
    assert tab.problems == []


# --- notifications --------------------------------------------------------------------------------


async def test_a_failing_webhook_shows_as_dead_lettered_and_resume_delivers_it(
    tab: Tab, target: Target, sensor_id: str, tmp_path: Path
) -> None:
    # The stack's notifier gives way (on its port, behind Envoy) to one that gives up after 3 quick
    # failures; the webhook answers 500 until the test fixes it.
    quick = {
        "METRICS_NOTIFIER_ALLOWED_NETWORKS": "127.0.0.0/8", "METRICS_NOTIFIER_RETRY_BASE_S": "0.05",
        "METRICS_NOTIFIER_RETRY_MAX_S": "0.2", "METRICS_NOTIFIER_DEAD_LETTER_AFTER": "3",
        "METRICS_NOTIFIER_CONSUMER_GROUP": target.notifier_group,
    }  # fmt: skip
    async with (
        webhook() as hook,
        in_place_of_the_stack_s(target, "notifier", quick, tmp_path / "notifier.log"),
    ):
        hook.always["/down"] = 500
        url = hook.url("/down")
        status, made = await http("POST", f"{target.envoy_url}/v1/subscriptions",
                                  {"url": url, "secret": "s" * 32, "sensorIdPrefix": sensor_id})  # fmt: skip
        assert status == 200, made
        subscription_id = made["subscription"]["subscriptionId"]
        try:
            now = datetime.now(UTC)
            await send(target, [(sensor_id, v, now - timedelta(seconds=3 - i)) for i, v in enumerate(WARM)])

            async def dead_lettered() -> None:
                _, body = await http("GET", f"{target.envoy_url}/v1/subscriptions/{subscription_id}")
                assert body["subscription"]["delivery"]["state"] == "DELIVERY_STATE_DEAD_LETTERED", body

            await eventually(dead_lettered, what="the subscription dead-lettered")
            page = tab.page
            await page.goto("/")
            await page.get_by_role("link", name="Notifications").click()
            card = page.get_by_role("region", name=url)
            await expect(card).to_contain_text("Dead-lettered")
            await expect(card).to_contain_text("HTTP 500")
            await card.get_by_text("Latest deliveries").click()
            delivery = card.locator("table.deliveries tbody tr")
            await expect(delivery).to_have_count(1)
            await expect(delivery).to_contain_text(sensor_id)
            await expect(delivery).to_contain_text("dead-lettered")
            await expect(delivery).to_contain_text("HTTP 500")

            hook.always["/down"] = 200
            await card.get_by_role("button", name=f"Resume the subscription to {url}").click()
            await expect(page.get_by_role("status")).to_have_text(
                f"Resumed: 1 dead-lettered event(s) go to {url} again."
            )
            await received_once(hook, "/down")
            await page.reload()
            await expect(card).to_contain_text("Healthy")
            await card.get_by_text("Latest deliveries").click()
            await expect(delivery).to_contain_text("delivered")
            assert tab.problems == []
        finally:
            await http("DELETE", f"{target.envoy_url}/v1/subscriptions/{subscription_id}")


async def received_once(hook: Webhook, path: str) -> None:
    async def delivered() -> None:
        assert len(hook.on(path, 200)) == 1, hook.on(path, None)

    await eventually(delivered, what="the event delivered once the webhook answers")


# --- devices --------------------------------------------------------------------------------------


async def test_the_devices_page_lists_a_device_with_its_credentials_and_disables_and_enables_it(
    tab: Tab, target: Target
) -> None:
    device_id = f"console-{uuid.uuid4().hex[:10]}"
    status, body = await http("POST", f"{target.envoy_url}/v1/devices?deviceId={device_id}",
                              {"sensorIdPrefix": f"{device_id}-", "labels": {"site": "plant-7"}})  # fmt: skip
    assert status == 200, body
    status, issued = await http("POST", f"{target.envoy_url}/v1/devices/{device_id}:issueToken", {})
    assert status == 200, issued
    heard = "2026-01-02T03:04:05Z"
    reading = {"sensorId": f"{device_id}-1", "metricType": "temperature", "value": 1, "readingTime": heard}
    status, pushed = await http("POST", f"{target.envoy_url}/v1/metrics:push", {"metrics": [reading]})
    assert status == 200, pushed

    async def stored_reading() -> None:
        status, stored = await http("GET", f"{target.envoy_url}/v1/devices/{device_id}")
        assert (status, stored.get("lastSeenTime")) == (200, heard), stored

    await eventually(stored_reading, what="the device's last reading in the registry")
    try:
        page = tab.page
        await page.goto("/")
        await page.get_by_role("link", name="Devices").click()
        await page.get_by_label("Device id starts with").fill(device_id)
        await page.get_by_label("Device id starts with").press("Enter")
        await expect(page).to_have_url(re.compile(rf"/devices\?prefix={device_id}$"))
        row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=device_id))
        await expect(row).to_contain_text(f"{device_id}-…")
        await expect(row).to_contain_text("site=plant-7")
        await expect(row).to_contain_text(f"token {issued['credential']['credentialId']}")
        await expect(row).to_contain_text("Enabled")
        await expect(row.locator(f'td.last-seen time[datetime="{heard}"]')).to_have_count(1)
        await expect(row.locator("td.mqtt")).to_have_text("not connected")
        assert issued["token"] not in await page.content(), "a token is never shown again"

        await row.get_by_role("button", name=f"Disable {device_id}").click()
        await expect(row).to_contain_text("Disabled")
        await expect(page.get_by_role("status")).to_have_text(f"{device_id} disabled.")
        status, stored = await http("GET", f"{target.envoy_url}/v1/devices/{device_id}")
        assert (status, stored["state"]) == (200, "DEVICE_STATE_DISABLED"), stored

        await row.get_by_role("button", name=f"Enable {device_id}").click()
        await expect(row).to_contain_text("Enabled")
        status, stored = await http("GET", f"{target.envoy_url}/v1/devices/{device_id}")
        assert (status, stored["state"]) == (200, "DEVICE_STATE_ENABLED"), stored
        assert tab.problems == []
    finally:
        await http("DELETE", f"{target.envoy_url}/v1/devices/{device_id}")


async def test_a_silent_device_is_marked_on_the_devices_page_and_counted_on_the_fleet_page(
    tab: Tab, target: Target, rules: Callable[..., Any]
) -> None:
    device_id = f"console-quiet-{uuid.uuid4().hex[:10]}"
    status, body = await http("POST", f"{target.envoy_url}/v1/devices?deviceId={device_id}", {})
    assert status == 200, body
    try:
        await rules(silence={"after": "10s", "deviceIdPrefix": device_id})

        async def silent() -> None:
            status, listed = await http("GET", f"{target.envoy_url}/v1/alarms?sensorId={device_id}")
            assert status == 200 and [a["state"] for a in listed["alarms"]] == ["ALARM_STATE_ACTIVE"], listed

        await eventually(silent, timeout=40, what="the device's silence alarm")
        page = tab.page
        await page.goto("/")
        await expect(page.get_by_role("status").first).to_contain_text(
            re.compile(r"\d+ registered devices? (is|are) silent")
        )
        await page.goto(f"/devices?prefix={device_id}")
        row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=device_id))
        await expect(row).to_contain_text("silent since")
        assert tab.problems == []
    finally:
        await http("DELETE", f"{target.envoy_url}/v1/devices/{device_id}")


# --- live events ----------------------------------------------------------------------------------


async def test_an_event_raised_while_the_page_is_open_appears_within_2_s(
    tab: Tab, target: Target, sensor_id: str
) -> None:
    page = tab.page
    await page.goto("/events")
    await expect(page.get_by_role("status")).to_have_attribute("data-state", "open")
    now = datetime.now(UTC)
    started = time.monotonic()
    await send(target, [(sensor_id, value, now - timedelta(seconds=3 - i)) for i, value in enumerate(WARM)])
    row = page.locator("table.events tbody tr").filter(has=page.get_by_role("link", name=sensor_id))
    remaining_ms = 2000 - (time.monotonic() - started) * 1000
    await expect(row).to_be_visible(timeout=max(remaining_ms, 1))
    await expect(row).to_contain_text("98")
    await expect(row).to_have_class(re.compile("fresh"))
    assert tab.problems == []


# --- pipeline health ------------------------------------------------------------------------------


def prometheus_failed_to_load(message: ConsoleMessage) -> bool:
    """The browser's own line for an HTTP error of the Prometheus route (not the page's doing)."""
    return "/prometheus/" in message.location.get("url", "") and message.text.startswith("Failed to load")


async def test_pipeline_health_shows_prometheus_s_figures(tab: Tab) -> None:
    # Prometheus's answer (its standard JSON) stands in for a running one.
    def sample(name: str, value: float, **labels: str) -> dict[str, Any]:
        return {"metric": {"__name__": name, **labels}, "value": [time.time(), str(value)]}

    result = [
        sample("metrics:readings_accepted:rate1m", 1234.56),
        sample("metrics:rows_stored:rate1m", 1200),
        sample("metrics:consumer_lag:sum", 7, group="processor"),
        sample("metrics:consumer_lag:sum", 42, group="saver"),
        sample("metrics:dead_letters:increase5m", 0),
        sample("metrics:mqtt_clients:sum", 10002),
    ]
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
    # The last hour of two of them (every 30 s), and one alert firing.
    now = time.time()
    history = [
        {"metric": {"__name__": "metrics:readings_accepted:rate1m"},
         "values": [[now - 3600 + 30 * i, str(1000 + i)] for i in range(121)]},
        {"metric": {"__name__": "metrics:consumer_lag:sum", "group": "saver"}, "values": [[now - 60, "40"], [now, "42"]]},
        {"metric": {"__name__": "metrics:consumer_lag:sum", "group": "processor"}, "values": [[now - 60, "1"], [now, "7"]]},
    ]  # fmt: skip
    ranges = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": history}})
    alert = {"labels": {"alertname": "MetricsConsumerLagging", "severity": "warning"}, "state": "firing",
             "annotations": {"summary": "the saver is 42 records behind"}, "activeAt": "2026-12-05T09:00:00Z"}  # fmt: skip
    alerts = json.dumps({"status": "success", "data": {"alerts": [alert, {**alert, "state": "inactive"}]}})
    page = tab.page

    def answer(text: str) -> Callable[[Any], Any]:
        return lambda route: route.fulfill(status=200, content_type="application/json", body=text)

    await page.route("**/prometheus/api/v1/query?*", answer(body))
    await page.route("**/prometheus/api/v1/query_range?*", answer(ranges))
    await page.route("**/prometheus/api/v1/alerts*", answer(alerts))
    await page.goto("/health")
    await expect(page.get_by_role("status")).to_have_attribute("data-state", "reachable")
    accepted = page.get_by_role("region", name="Readings accepted")
    await expect(accepted).to_contain_text("1,234.6")
    lag = page.get_by_role("region", name="Consumer lag")
    await expect(lag).to_contain_text(re.compile("processor\\s*7"))
    await expect(lag).to_contain_text(re.compile("saver\\s*42"))
    await expect(page.get_by_role("region", name="Events raised")).to_contain_text("no data")
    await expect(page.get_by_role("region", name="MQTT clients")).to_contain_text("10,002")
    await expect(
        accepted.get_by_role("img", name="The last hour: from 1,000.0 to 1,120.0")
    ).to_have_attribute("data-points", "121")
    await expect(lag.get_by_role("img")).to_have_attribute("aria-label", "The last hour: from 41 to 49")
    await expect(page.get_by_role("region", name="MQTT clients")).to_contain_text(
        "no history in the last hour yet"
    )
    firing = page.get_by_role("region", name="Alerts").get_by_role("listitem")
    await expect(firing).to_have_count(1)
    await expect(firing).to_contain_text("MetricsConsumerLagging firing (warning)")
    await expect(firing).to_contain_text("the saver is 42 records behind")
    assert tab.problems == []


@pytest.mark.parametrize("status", [404, 502, 503])
async def test_pipeline_health_says_when_prometheus_is_not_reachable(tab: Tab, status: int) -> None:
    tab.expected = prometheus_failed_to_load
    page = tab.page
    body = json.dumps({"code": status, "message": "upstream connect error"})
    await page.route("**/prometheus/api/v1/query?*", lambda route: route.fulfill(
        status=status, content_type="application/json", body=body))  # fmt: skip
    await page.goto("/health")
    await expect(page.get_by_text("Prometheus is not reachable")).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_count(0)
    assert tab.problems == []


async def test_pipeline_health_through_envoy_shows_prometheus_s_figures(tab: Tab, target: Target) -> None:
    # The real route: figures where the deployment runs a Prometheus (the local stack does; the target
    # names it), "not reachable" where it runs none; never an error.
    if not target.prometheus:
        tab.expected = prometheus_failed_to_load
    await tab.page.goto("/health")
    state = "reachable" if target.prometheus else "unreachable"
    await expect(tab.page.get_by_role("status")).to_have_attribute("data-state", state)
    await expect(tab.page.get_by_role("alert")).to_have_count(0)
    if target.prometheus:
        # The last hour: once the stack's Prometheus has two points of the rule (it records every
        # 15 s); the page reads the last hour again every 30 s.
        accepted = tab.page.get_by_role("region", name="Readings accepted")
        line = accepted.get_by_role("img", name=re.compile("^The last hour: from"))
        await expect(line).to_be_visible(timeout=90_000)
        await expect(tab.page.get_by_role("region", name="Alerts")).to_be_visible()
    assert tab.problems == []


# --- keyboard -------------------------------------------------------------------------------------


async def focused(page: Page) -> str:
    """The focused element, as its tag and text or label."""
    description: str = await page.evaluate(
        "(() => { const e = document.activeElement;"
        " return `${e.tagName.toLowerCase()} ${(e.getAttribute('aria-label') || e.id || e.textContent).trim()}` })()"
    )
    return description


async def tab_to(page: Page, wanted: str, limit: int = 20) -> None:
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await focused(page) == wanted:
            return
    pytest.fail(f"{wanted} not reached in {limit} presses of Tab")


async def test_the_console_is_usable_with_the_keyboard_alone(
    tab: Tab, target: Target, sensor_id: str
) -> None:
    await send(target, [(sensor_id, 21.5, datetime.now(UTC) - timedelta(seconds=5))])
    await listed(target, sensor_id, 1)
    page = tab.page
    await page.goto(f"/?prefix={sensor_id}")
    await expect(page.get_by_role("link", name=sensor_id, exact=True)).to_be_visible()
    order = []
    for _ in range(15):
        await page.keyboard.press("Tab")
        order.append(await focused(page))
    assert order == [
        "a Skip to content", "a Metrics", "a Fleet", "a Groups", "a Alarms", "a Rules", "a Devices",
        "a Notifications", "a Live events", "a Pipeline health", "a HTTP API",
        "input prefix", "button Search", f"a Chart {sensor_id}* as a group", f"a {sensor_id}",
    ]  # fmt: skip
    # The focus shows.
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(f"/sensors/{sensor_id}"))
    # After a navigation the focus is on the new page's heading; the range picker follows it.
    assert await focused(page) == f"h1 Sensor {sensor_id}"
    await expect(page.locator(".plot")).to_have_attribute("data-points", "1")
    await page.keyboard.press("Tab")
    assert await focused(page) == "select metric"
    await page.keyboard.press("Tab")
    assert await focused(page) == "select range"
    await page.keyboard.press("ArrowDown")  # a closed select changes with the arrow keys
    await expect(page).to_have_url(re.compile("range=6h"))
    # Past the date and time inputs (each field of them takes a Tab) to the zoom.
    await tab_to(page, "button Show")
    await page.keyboard.press("Tab")
    assert await focused(page) == "button Zoom in"
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"from=.*&to="))
    # Back in the history: the fleet's page and its search again.
    await page.go_back()
    await expect(page).to_have_url(re.compile(rf"/\?prefix={sensor_id}$"))
    await expect(page.get_by_role("link", name=sensor_id, exact=True)).to_be_visible()
    assert tab.problems == []


@pytest.mark.usefixtures("form_rules")
async def test_a_rule_is_made_and_its_alarm_acknowledged_with_the_keyboard_alone(
    tab: Tab, target: Target, sensor_id: str
) -> None:
    page = tab.page
    await page.goto("/rules/new")
    await expect(page.get_by_role("heading", name="New rule")).to_be_visible()
    await tab_to(page, "select rule-kind", limit=30)
    await tab_to(page, "input rule-rule-metric_type")
    await page.keyboard.type("temperature")
    await page.keyboard.press("Tab")
    await page.keyboard.type(sensor_id)
    await tab_to(page, "input rule-rule-threshold")
    await page.keyboard.type("50")
    await tab_to(page, "button Create rule")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_have_text(re.compile(r"^r-[0-9a-f]{16} created\.$"))
    await rules_in_force(target)
    now = datetime.now(UTC)
    await send(target, [(sensor_id, 60.0, now - timedelta(seconds=1))])
    await only_alarm(target.envoy_url, sensor_id)  # stored: the page lists it when it loads
    await page.goto(f"/alarms?prefix={sensor_id}")
    await expect(page.get_by_role("rowheader", name=sensor_id)).to_be_visible()
    await tab_to(
        page, f"button Acknowledge the alarm of {sensor_id} raised {await raised_text(page)}", limit=40
    )
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status").last).to_have_text("1 alarm(s) acknowledged.")
    assert tab.problems == []


async def raised_text(page: Page) -> str:
    """How the alarms page shows the raise time of its one alarm."""
    return await page.locator("table.alarms tbody tr td time").first.inner_text()


# --- the TLS port ---------------------------------------------------------------------------------


async def test_on_the_tls_port_the_page_loads_without_a_token_and_asks_for_one(
    browser: Browser, target: Target
) -> None:
    context = await browser.new_context(base_url=target.envoy_tls_url, ignore_https_errors=True)
    try:
        page = await context.new_page()
        await page.goto("/")
        # The page's files need no token; the API does, and the page asks for one.
        await expect(page.get_by_role("alert")).to_contain_text("This port needs a token")
        await page.get_by_label(re.compile("Token")).fill(front_door.token(target, scopes=("read",)))
        await page.get_by_role("button", name="Use token").click()
        await expect(page.get_by_role("table").or_(page.get_by_text("No sensors yet"))).to_be_visible()
        await page.get_by_role("link", name="Live events").click()
        await expect(page.get_by_role("status")).to_have_attribute("data-state", "open")
    finally:
        await context.close()


async def test_with_a_read_token_actions_say_why_they_cannot_and_a_refusal_is_shown(
    browser: Browser, target: Target
) -> None:
    context = await browser.new_context(base_url=target.envoy_tls_url, ignore_https_errors=True)
    try:
        page = await context.new_page()
        await page.goto("/rules")
        await page.get_by_label(re.compile("Token")).fill(front_door.token(target, scopes=("read",)))
        await page.get_by_role("button", name="Use token").click()
        # Listing takes the read scope; changing, the admin one: the page says so rather than offer it.
        await expect(page.get_by_text("Creating rules needs a token with the admin scope.")).to_be_visible()
        await expect(page.get_by_role("button", name=re.compile("^Disable rule")).first).to_be_disabled()
        # Subscriptions take the admin scope even to list: the API's 403 is shown, with a way to
        # give another token.
        await page.get_by_role("link", name="Notifications").click()
        refused = page.get_by_role("alert")
        await expect(refused).to_contain_text("This token may not do this")
        await expect(refused).to_contain_text("HTTP 403")
        await page.get_by_label(re.compile("Token")).fill(front_door.token(target, scopes=("read", "admin")))
        await page.get_by_role("button", name="Use token").click()
        await expect(page.get_by_role("heading", name="Notifications")).to_be_visible()
        await expect(page.get_by_role("alert")).to_have_count(0)
    finally:
        await context.close()


# --- the HTTP API's page (/docs) ------------------------------------------------------------------


async def test_the_api_page_shows_every_route_and_tries_one_out(
    tab: Tab, target: Target, sensor_id: str
) -> None:
    """Swagger UI over /openapi.yaml: every route of the document listed, a push sent from the page,
    and nothing loaded from another origin."""
    requested: list[str] = []
    page = tab.page
    page.on("request", lambda request: requested.append(request.url))
    _, _, text = http_bytes("GET", f"{target.envoy_url}/openapi.yaml")
    document = yaml.safe_load(text)
    routes = sorted((verb.upper(), path) for path, item in document["paths"].items() for verb in item)
    await page.goto("/docs")
    await expect(page.locator(".opblock")).to_have_count(len(routes))
    methods = await page.locator(".opblock-summary-method").all_inner_texts()
    paths = await page.locator(".opblock-summary-path").all_inner_texts()
    assert sorted(zip(methods, (p.replace("\u200b", "") for p in paths), strict=True)) == routes
    push = page.locator("#operations-ReceiverService-ReceiverService_PushMetrics")
    await push.locator(".opblock-summary").click()
    await push.get_by_role("button", name="Try it out").click()
    body = {"metrics": [{"sensorId": sensor_id, "metricType": "temperature", "value": 21.5}]}
    await push.locator("textarea.body-param__text").fill(json.dumps(body))
    await push.get_by_role("button", name="Execute").click()
    await expect(push.locator(".live-responses-table tbody .response-col_status")).to_have_text("200")
    await listed(target, sensor_id, 1)
    assert [url for url in requested if not url.startswith(target.envoy_url + "/")] == []
    assert tab.problems == []
