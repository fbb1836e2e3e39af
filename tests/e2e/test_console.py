"""The ops console in a real browser (Playwright driving Debian's chromium) on a running node.

One node (``ainode run``: SCP, worker and console) with Orthanc as its
destination: a study sent by ``storescu`` is followed to "succeeded"; with
Orthanc stopped a delivery fails, and after Orthanc is back a click on Retry
delivers it (one SEG + one SR in Orthanc); a viewer sees no action button and
a forged POST is refused; a failed login is in the audit trail.

Screenshots go to ``$CONSOLE_SCREENSHOTS`` when set (``docs/console`` keeps
the README's), else to the test's temp folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from pydicom import dcmread

from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.support.dcmtk import storescu
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.ports import LOOPBACK, free_port, wait_for_port

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "console-test-password"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
WAIT_MS = 120_000


def _study(folder: Path, seed: int) -> tuple[str, str, list[Path]]:
    study = generate_ct_phantom(
        slices=30, rows=96, columns=96, pixel_spacing=4.0, slice_thickness=5.0, seed=seed
    )
    files = write_phantom(study, folder)
    accession = str(dcmread(files[0], stop_before_pixels=True).AccessionNumber)
    return study.study_instance_uid, accession, files


class Console:
    """The node under test, its Orthanc, and where the console answers."""

    def __init__(self, node: NodeProcesses, orthanc: OrthancServer, url: str) -> None:
        self.node = node
        self.orthanc = orthanc
        self.url = url


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """``ainode run`` (its console on a free port), Orthanc as the destination, 3 users.

    One node serves the module's tests (each test starts a node otherwise: CI has 2 cores).
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `make system-deps` installs Debian's chromium")
    workdir = tmp_path_factory.mktemp("console")
    node = NodeProcesses(
        workdir,
        {
            "AINODE_DELIVERY_MAX_ATTEMPTS": "2",
            "AINODE_DELIVERY_BACKOFF_SECONDS": "0.2",
            "AINODE_RECOVERY_INTERVAL_SECONDS": "2",
        },
    )
    orthanc = OrthancServer(
        {"ainode": ["AINODE", LOOPBACK, node.port]},
        workdir=workdir / "orthanc",
        http_port=free_port(),
        dicom_port=free_port(),
    )
    with orthanc, node:
        node.env["AINODE_DESTINATIONS"] = f"ORTHANC@{LOOPBACK}:{orthanc.dicom_port}"
        node.cli("db", "upgrade")
        for role in ("viewer", "operator", "admin"):
            node.cli("users", "add", role, "--role", role, "--password-stdin", stdin=PASSWORD)
        node.start("run")
        node.wait_listening()
        web_port = int(node.env["AINODE_WEB_PORT"])
        wait_for_port(LOOPBACK, web_port, timeout=30)
        yield Console(node, orthanc, f"http://{LOOPBACK}:{web_port}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, driven by Playwright (no browser download)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go."""
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _login(browser: Browser, console: Console, username: str, password: str = PASSWORD) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("dialog", lambda dialog: dialog.accept())  # every action is confirmed
    page.goto(f"{console.url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    return page


def _job_of(page: Page, console: Console, accession: str) -> str:
    """Search the job list by accession number; returns the job page's path."""
    page.goto(f"{console.url}/jobs?q={accession}")
    link = page.locator("tr[data-job] a").first
    expect(link).to_be_visible(timeout=WAIT_MS)
    return str(link.get_attribute("href"))


def test_console_follows_a_study_and_retries_a_failed_delivery(
    console: Console, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    page = _login(browser, console, "operator")
    expect(page.locator("#whoami")).to_have_text("operator (operator)")
    expect(page.locator('[data-check="SCP"]')).to_contain_text("ok")
    expect(page.locator('[data-check="workers"]')).to_contain_text("1 alive", timeout=WAIT_MS)
    expect(page.locator('[data-check="scheduler"]')).to_contain_text("alive", timeout=WAIT_MS)

    study_uid, accession, files = _study(tmp_path / "first", seed=11)
    sent = storescu(LOOPBACK, console.node.port, files, called_ae="AINODE")
    assert sent.failed == [] and len(sent.succeeded) == len(files)
    job_path = _job_of(page, console, accession)
    row = page.locator("tr[data-job]").first
    expect(row.locator("td").nth(1)).to_have_text("succeeded", timeout=WAIT_MS)
    expect(row.locator(".deliveries")).to_have_text("2 succeeded", timeout=WAIT_MS)
    assert study_uid in row.inner_text()
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)
    page.goto(f"{console.url}{job_path}")
    expect(page.locator("#timeline")).to_contain_text("stable and routed")
    page.screenshot(path=str(shots / "job.png"), full_page=True)

    # The destination goes away: both deliveries of the next study fail.
    console.orthanc._stop_process()
    _, accession, files = _study(tmp_path / "second", seed=12)
    assert storescu(LOOPBACK, console.node.port, files, called_ae="AINODE").failed == []
    job_path = _job_of(page, console, accession)
    page.goto(f"{console.url}{job_path}")
    failed = page.locator("#results td.state-failed")
    expect(failed).to_have_count(2, timeout=WAIT_MS)
    page.screenshot(path=str(shots / "job-failed.png"), full_page=True)

    console.orthanc.start()
    page.reload()
    for _ in range(2):
        page.locator("#results button", has_text="Retry").first.click()
        expect(page.locator(".flash")).to_contain_text("queued again")
    expect(page.locator("#results td.state-succeeded")).to_have_count(2, timeout=WAIT_MS)
    study = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    classes = sorted(
        item["SOPClassUID"]
        for item in console.orthanc.instances_of_study_uid(str(study))
        if item["SOPClassUID"] in (SEG_CLASS, SR_CLASS)
    )
    assert classes == [SEG_CLASS, SR_CLASS]

    page.goto(f"{console.url}/")
    expect(page.locator("#ttr")).to_contain_text("ct-lungs")
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    page.goto(f"{console.url}/destinations")
    page.screenshot(path=str(shots / "destinations.png"), full_page=True)
    audit = page.goto(f"{console.url}/audit")
    assert audit is not None and audit.ok
    expect(page.locator("#audit")).to_contain_text("retry-delivery")
    # Searched by accession number in the URL, shown on the pages: never in the node's logs.
    logs = console.node.logs()
    assert accession not in logs and "PH0001" not in logs


def test_console_tools_echo_test_the_rules_and_self_test(
    console: Console, browser: Browser, shots: Path
) -> None:
    page = _login(browser, console, "operator")
    page.goto(f"{console.url}/tools")
    page.click("form[action='/tools/echo'] button")
    expect(page.locator("#echo-result")).to_contain_text("C-ECHO success")

    page.click("form[action='/tools/selftest'] button")
    result = page.locator("#selftest-result")
    expect(result).to_contain_text("Sent 40 instances (0 failed)", timeout=WAIT_MS)
    page.click("#selftest-result a")
    row = page.locator("tr[data-job]").first
    expect(row.locator("td").nth(1)).to_have_text("succeeded", timeout=WAIT_MS)
    expect(row.locator(".deliveries")).to_have_text("2 succeeded", timeout=WAIT_MS)

    row.locator("a").first.click()
    page.click("text=test routing")
    verdicts = page.locator("#verdicts")
    expect(verdicts.locator("tr", has_text="ct-default")).to_contain_text("matches")
    expect(verdicts.locator("tr", has_text="mr-default")).to_contain_text("modality CT not in")
    page.screenshot(path=str(shots / "tools.png"), full_page=True)


def test_viewer_has_no_actions_and_failed_logins_are_audited(
    console: Console, browser: Browser, shots: Path
) -> None:
    intruder = _login(browser, console, "admin", "not-the-password")
    expect(intruder.locator(".error")).to_contain_text("Wrong user name or password")
    intruder.screenshot(path=str(shots / "login-failed.png"))

    viewer = _login(browser, console, "viewer")
    expect(viewer.locator("#whoami")).to_have_text("viewer (viewer)")
    viewer.goto(f"{console.url}/destinations")
    expect(viewer.locator("#routing")).to_contain_text("running")
    assert viewer.locator("main button").count() == 0
    token = viewer.locator("header input[name=csrf_token]").get_attribute("value")
    forged = viewer.request.post(
        f"{console.url}/routing/pause", form={"csrf_token": str(token), "back": "/"}
    )
    assert forged.status == 403 and "operator role" in forged.text()
    no_token = viewer.request.post(f"{console.url}/routing/pause", form={"back": "/"})
    assert no_token.status == 403 and "CSRF" in no_token.text()

    admin = _login(browser, console, "admin")
    admin.goto(f"{console.url}/audit")
    trail = admin.locator("#audit")
    expect(trail).to_contain_text("failed")
    rows = trail.locator("tr", has_text="login")
    assert any("admin" in text and "failed" in text for text in rows.all_inner_texts()), (
        rows.all_inner_texts()
    )
    assert "forbidden" in trail.inner_text() and "viewer" in trail.inner_text()
    admin.screenshot(path=str(shots / "audit.png"), full_page=True)
    csv_response = admin.request.get(f"{console.url}/audit.csv")
    assert csv_response.ok and "login,admin,failed" in csv_response.text()
