"""The fleet report page (roles/fleet_status/templates/report.html.j2) in a real browser - Debian's chromium, headless
(tests/support/browser.py) - at 1,000 devices: the report comes from the collection's own code
(module_utils/_fleet_report.build_report, what the fleet_report module returns) on a synthetic fleet, and the page
is rendered by Ansible's template module as the role renders it.

Sorting reorders the rows, the cohort and status filters hide the other rows, the expiry chart has one bar per month
with heights in proportion to the data, no identifier or date wraps at 1,400 px, a `</script>` in a value stays
text, and the page asks for nothing outside itself. The fleet's IoT hub was read (iothub_device_info): the hub status
and configuration columns and the per-configuration breakdown show; without the hub they do not.
FLEET_STATUS_SCREENSHOT=docs/images/fleet_status.png writes the documentation's screenshot (1,400 px wide) from the
same page.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import random
import struct
from pathlib import Path

import pytest

from ansible_collections.iotfleet.aziot.plugins.module_utils._fleet_report import build_report, build_rows
from tests.support.browser import Chromium
from tests.support.paths import REPO_ROOT
from tests.support.pki import DAY, issue, new_key
from tests.support.playbook import run_playbook

TEMPLATE = REPO_ROOT / "roles" / "fleet_status" / "templates" / "report.html.j2"
DEVICES = 1000
COHORTS = [f"plant-{number:02d}" for number in range(1, 9)]
HUBS = ["hub-weu-prod-01.azure-devices.net", "hub-weu-prod-02.azure-devices.net", "hub-neu-prod-01.azure-devices.net"]
INJECTION = "</script><script>window.injected = true;</script>"
WIDTH = 1400
HOUR = datetime.timedelta(hours=1)


def synthetic_report(now: datetime.datetime) -> dict:
    """1,000 devices in 8 cohorts on 3 hubs, with the shapes a fleet has: a renewal wave three months out (a batch
    provisioned together), failed and unregistered devices, revoked ones (disabled individual enrollments, disabled
    in the hub), expired and unknown certificates, an error message that tries to close the page's script, and the
    hub's side: each registered device's status and the deployments applied (its cohort's, the canary layer)."""
    chance = random.Random(19)
    key = new_key()
    groups, enrollments, by_group, devices, hub_devices = [], [], {cohort: [] for cohort in COHORTS}, [], []
    for cohort in COHORTS:
        ca = issue(f"iotfleet Intermediate CA {cohort}", ca=True)
        groups.append(
            {"enrollmentGroupId": cohort, "ca": ca, "initialTwin": {"tags": {"site": cohort, "ring": "prod"}}}
        )
    for number in range(DEVICES):
        group = groups[number % len(groups)]
        cohort = group["enrollmentGroupId"]
        registration_id = f"pi-{cohort}-rack-{number % 40:02d}-{number:06d}"
        if number % 3 == 0:
            days = 95 + chance.randint(0, 20)  # the wave
        elif number % 97 == 5:
            days = -chance.randint(1, 30)  # expired
        else:
            days = chance.randint(5, 420)
        leaf = issue(registration_id, group["ca"], key=key, not_before=-400 * DAY, not_after=days * DAY + HOUR)
        device = {"host": registration_id, "registration_id": registration_id, "enrollment_group": cohort}
        if number % 50 != 7:  # 2 % have no known certificate
            device["certificate_pem"] = base64.b64encode(leaf.pem).decode()
        devices.append(device)
        applied = {f"edge-{cohort}": {"status": "applied"}}
        if number % 10 == 0:
            applied["edge-canary"] = {"status": "applied"}  # the canary ring's layered deployment
        hub_device = {"device_id": registration_id, "status": "enabled", "tags": {"site": cohort}}
        if number % 60 == 11:  # revoked: a disabled individual enrollment, no registration record, disabled in the hub
            enrollments.append({"registrationId": registration_id, "provisioningStatus": "disabled"})
            reason = "revoked by iotfleet.aziot revoke.yml"
            hub_devices.append(dict(hub_device, status="disabled", status_reason=reason, configurations=applied))
            continue
        if number % 45 == 3:
            continue  # never registered
        record = {"registrationId": registration_id, "status": "assigned", "deviceId": registration_id}
        record["assignedHub"] = HUBS[chance.randrange(len(HUBS))]
        if number % 70 == 9:
            record.update(status="failed", errorMessage="Device certificate not trusted (401002)", assignedHub="")
        if number == 42:
            record.update(status="failed", errorMessage=INJECTION, assignedHub="")
        by_group[cohort].append(record)
        if record["status"] == "assigned" and number % 61 == 13:  # disabled in the hub by hand, not in DPS
            hub_devices.append(dict(hub_device, status="disabled", status_reason="stolen", configurations=applied))
        elif record["status"] == "assigned":
            hub_devices.append(dict(hub_device, configurations=applied))
    for group in groups:
        del group["ca"]
    return build_report(build_rows(devices, groups, enrollments, by_group, [], 30, now, hub_devices), 30, now)


@pytest.fixture(scope="module")
def report() -> dict:
    return synthetic_report(datetime.datetime.now(datetime.timezone.utc))


@pytest.fixture(scope="module")
def page(tmp_path_factory, report: dict) -> Path:
    """The page as the role writes it: Ansible's template module, the role's template."""
    work = tmp_path_factory.mktemp("report")
    written = work / "fleet-status.html"
    task = {"ansible.builtin.template": {"src": str(TEMPLATE), "dest": str(written), "mode": "0644"}}
    run = run_playbook(work, [task], {"fleet_status_report": report}, name="render")
    assert run.returncode == 0, run.output()
    return written


@pytest.fixture(scope="module")
def browser(tmp_path_factory, page: Path):
    with Chromium(tmp_path_factory.mktemp("chromium"), width=WIDTH, height=1000) as opened:
        opened.open(page)
        yield opened


@pytest.fixture(autouse=True)
def fresh_page(browser: Chromium, page: Path) -> None:
    browser.open(page)  # every test starts unsorted and unfiltered


SHOWN_ROWS = "Array.from(document.querySelectorAll('#fleet tbody tr'))"


def column(browser: Chromium, title: str) -> list[str]:
    """The text of one column of the rows shown, top to bottom."""
    index = browser.evaluate(
        f"Array.from(document.querySelectorAll('#fleet th')).findIndex(th => th.textContent === {json.dumps(title)})"
    )
    assert index >= 0, title
    return browser.evaluate(f"{SHOWN_ROWS}.map(row => row.cells[{index}].textContent)")


def click_heading(browser: Chromium, title: str) -> None:
    browser.evaluate(
        f"Array.from(document.querySelectorAll('#fleet th')).find(th => th.textContent === {json.dumps(title)}).click()"
    )


def choose(browser: Chromium, select: str, value: str) -> None:
    browser.evaluate(
        f"(() => {{ const s = document.getElementById({json.dumps(select)}); s.value = {json.dumps(value)};"
        " s.dispatchEvent(new Event('change')); })()"
    )


def test_all_devices_and_the_summary(browser: Chromium, report: dict) -> None:
    assert browser.evaluate(f"{SHOWN_ROWS}.length") == DEVICES
    assert browser.evaluate("document.getElementById('shown').textContent") == f"showing {DEVICES} of {DEVICES} devices"
    cards = browser.evaluate("Array.from(document.querySelectorAll('#cards .card')).map(c => c.textContent)")
    assert f"Devices{DEVICES}" in cards and f"Blocked{report['summary']['blocked']}" in cards
    for target, counts in (("by-status", "by_status"), ("by-cohort", "by_cohort"), ("by-hub", "by_hub")):
        shown = browser.evaluate(
            f"Array.from(document.querySelectorAll('#{target} tr'))"
            ".map(r => [r.cells[0].textContent, Number(r.cells[1].textContent)])"
        )
        assert dict(shown) == report["summary"][counts], target
    assert report["summary"]["by_status"]["failed"] > 0 and report["summary"]["blocked"] > 0  # the data has them


def test_the_hub_status_and_the_configurations_applied(browser: Chromium, report: dict) -> None:
    summary = report["summary"]
    assert report["hub_read"] and summary["hub_disabled"] > 0 and summary["by_hub_status"]["absent"] > 0
    cards = browser.evaluate("Array.from(document.querySelectorAll('#cards .card')).map(c => c.textContent)")
    assert f"Disabled in hub{summary['hub_disabled']}" in cards
    shown = browser.evaluate(
        "Array.from(document.querySelectorAll('#by-configuration tr'))"
        ".map(r => [r.cells[0].textContent, Number(r.cells[1].textContent)])"
    )
    assert dict(shown) == summary["by_configuration"] and summary["by_configuration"]["edge-canary"] > 0
    rows = {row["device"]: row for row in report["devices"]}
    devices, statuses, configurations = (column(browser, title) for title in ("Device", "Hub status", "Configurations"))
    assert statuses == [rows[device]["hub_status"] for device in devices]
    assert configurations == [", ".join(rows[device]["configurations"]) for device in devices]
    # Disabled in the hub only (DPS would still register it): red like a blocked device.
    only_hub = [
        index for index, device in enumerate(devices) if statuses[index] == "disabled" and not rows[device]["blocked"]
    ]
    classes = browser.evaluate(f"{SHOWN_ROWS}.map(r => r.className)")
    assert only_hub and {classes[index] for index in only_hub} == {"blocked"}


def test_without_the_hub_no_hub_column(tmp_path: Path, report: dict) -> None:
    """A report made without the hub (no hub connection string): the page shows none of the hub's columns."""
    rows = [dict(row, hub_status="", hub_status_reason="", configurations=[]) for row in report["devices"][:5]]
    now = datetime.datetime.now(datetime.timezone.utc)
    task = {"ansible.builtin.template": {"src": str(TEMPLATE), "dest": str(tmp_path / "page.html"), "mode": "0644"}}
    run = run_playbook(tmp_path, [task], {"fleet_status_report": build_report(rows, 30, now)}, name="render")
    assert run.returncode == 0, run.output()
    with Chromium(tmp_path / "chromium", width=WIDTH, height=600) as opened:
        opened.open(tmp_path / "page.html")
        headings = opened.evaluate("Array.from(document.querySelectorAll('#fleet th')).map(th => th.textContent)")
        hidden = opened.evaluate("document.getElementById('configuration-panel').hidden")
    assert "Device" in headings and "Hub status" not in headings and "Configurations" not in headings
    assert hidden


def test_sorting_a_column_reorders_the_rows(browser: Chromium, report: dict) -> None:
    click_heading(browser, "Days left")
    ascending = column(browser, "Days left")
    known = [int(value) for value in ascending if value != ""]
    assert known == sorted(known) and known[0] < 0 and len(known) < DEVICES
    assert ascending[len(known) :] == [""] * (DEVICES - len(known))  # unknown certificates last
    assert browser.evaluate("document.querySelector('#fleet th[aria-sort]').textContent") == "Days left"
    click_heading(browser, "Days left")
    descending = [int(value) for value in column(browser, "Days left") if value != ""]
    assert descending == sorted(known, reverse=True)
    click_heading(browser, "Device")
    devices = column(browser, "Device")
    assert devices == sorted(devices) and devices != [row["device"] for row in report["devices"]]


def test_filtering_by_cohort_and_status_hides_the_other_rows(browser: Chromium, report: dict) -> None:
    choose(browser, "filter-cohort", "plant-03")
    cohorts = column(browser, "Cohort")
    assert set(cohorts) == {"plant-03"} and len(cohorts) == report["summary"]["by_cohort"]["plant-03"]
    choose(browser, "filter-status", "failed")
    expected = [row["device"] for row in report["devices"] if row["cohort"] == "plant-03" and row["status"] == "failed"]
    assert column(browser, "Device") == expected and expected
    choose(browser, "filter-cohort", "")
    assert set(column(browser, "Status")) == {"failed"}
    assert len(column(browser, "Status")) == report["summary"]["by_status"]["failed"]
    choose(browser, "filter-status", "")
    assert browser.evaluate(f"{SHOWN_ROWS}.length") == DEVICES
    # A line of the summary filters too.
    browser.evaluate(
        "Array.from(document.querySelectorAll('#by-status tr'))"
        ".find(r => r.cells[0].textContent === 'unregistered').click()"
    )
    assert set(column(browser, "Status")) == {"unregistered"}


def test_the_expiry_chart_has_a_bar_per_month_in_proportion(browser: Chromium, report: dict) -> None:
    bars = browser.evaluate(
        "Array.from(document.querySelectorAll('#chart rect.bar')).map(b => ({month: b.dataset.month,"
        " count: Number(b.dataset.count), height: b.getBoundingClientRect().height}))"
    )
    months = report["expiries"]["months"]
    assert [(bar["month"], bar["count"]) for bar in bars] == [(month["month"], month["devices"]) for month in months]
    tallest = max(bars, key=lambda bar: bar["count"])
    assert tallest["count"] > 300 and tallest["height"] > 100  # the renewal wave stands out
    for bar in bars:
        assert bar["height"] == pytest.approx(tallest["height"] * bar["count"] / tallest["count"], abs=1.0), bar


def test_identifiers_and_dates_do_not_wrap_at_1400_px(browser: Chromium) -> None:
    assert browser.evaluate("window.innerWidth") == WIDTH
    # Every cell's text is one line box, and every row is as tall as the first.
    wrapped = browser.evaluate(
        f"{SHOWN_ROWS}.flatMap(row => Array.from(row.cells)).filter(cell => {{"
        " if (!cell.firstChild) { return false; }"
        " const range = document.createRange(); range.selectNodeContents(cell);"
        " return range.getClientRects().length > 1; }).length"
    )
    assert wrapped == 0
    heights = browser.evaluate(f"{SHOWN_ROWS}.map(row => Math.round(row.getBoundingClientRect().height))")
    assert len(set(heights)) == 1 and heights[0] < 40, sorted(set(heights))
    # The table scrolls sideways inside its frame instead of squeezing its columns.
    assert browser.evaluate("(w => w.scrollWidth > w.clientWidth)(document.querySelector('.table-wrap'))")
    assert browser.evaluate("document.documentElement.scrollWidth") <= WIDTH


def test_a_value_cannot_close_the_script(browser: Chromium, page: Path) -> None:
    assert INJECTION not in page.read_text(encoding="utf-8")
    assert browser.evaluate("window.injected === undefined")
    choose(browser, "filter-status", "failed")
    assert any(INJECTION in note for note in column(browser, "Note"))


def test_the_page_asks_for_nothing_outside_itself(browser: Chromium, page: Path) -> None:
    browser.requests.clear()
    browser.open(page)
    assert browser.requests and all(url.startswith("file://") for url in browser.requests), browser.requests


def test_screenshot(browser: Chromium, tmp_path: Path) -> None:
    shot = browser.screenshot(tmp_path / "fleet_status.png")
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])  # the PNG IHDR
    assert (width, height) == (WIDTH, 1000)
    wanted = os.environ.get("FLEET_STATUS_SCREENSHOT")
    if wanted:
        Path(wanted).write_bytes(shot.read_bytes())
