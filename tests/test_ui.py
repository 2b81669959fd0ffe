"""The report builder page in a real headless Chromium (Debian's `/usr/bin/chromium`,
driven by Playwright): log in through the form, tick the seed's example fields, run the
report over the session cookie, read the table with its totals row, download it as
CSV, see the server's error and the end of a session, all on a served envoi whose
event store holds the events of two projects."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from envoi.config import Settings
from envoi.db.session import make_engine, transaction, upgrade
from envoi.projects.services import Credentials, create_project
from envoi.testing.databases import sqlite_url
from envoi.testing.server import ServerThread
from envoi.web.app import create_app
from tests.test_stats_messages import event

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that would reach the network on its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAY1 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
DAY2 = datetime(2024, 3, 2, 10, 0, tzinfo=UTC)
EMAIL_ID = 4242


@dataclass
class Served:
    base_url: str
    creds: Credentials


def _require_chromium() -> None:
    """Without Debian's chromium the page test cannot run: a skip on a developer's
    machine, a failure in CI (.ci/run installs it)."""
    if CHROMIUM.exists():
        return
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """envoi served with its event store, holding a post of this project over two days
    and, under the same post and message, five deliveries of another project's."""
    var_dir = tmp_path_factory.mktemp("ui")
    url = sqlite_url(var_dir)
    upgrade(url)
    with ExitStack() as stack:
        engine = make_engine(url)
        stack.callback(engine.dispose)
        settings = Settings(
            database_url=url,
            var_dir=var_dir,
            events_url=f"duckdb:///{var_dir / 'events.duckdb'}",
            secret_key="test-secret-key",
            public_url="http://envoi.test",
            deliver_in_process=False,
        )
        app = create_app(settings, engine)
        base_url = stack.enter_context(ServerThread(app))
        with transaction(app.state.sessionmaker) as session:
            creds = create_project(session, "Reports", login="reports")
            other = create_project(session, "Other", login="other-reports")
        ours = creds.id
        app.state.event_store.append(
            [
                event(ours, EMAIL_ID, "delivered", DAY1, "ann@example.com"),
                event(ours, EMAIL_ID, "delivered", DAY1, "bob@example.com"),
                event(ours, EMAIL_ID, "open", DAY1 + timedelta(hours=1), "ann@example.com"),
                event(ours, EMAIL_ID, "delivered", DAY2, "cat@example.com"),
                event(ours, EMAIL_ID, "delivered", DAY2, "dan@example.com"),
                event(ours, EMAIL_ID, "open", DAY2 + timedelta(hours=1), "bob@example.com"),
                event(ours, EMAIL_ID, "open", DAY2 + timedelta(hours=2), "cat@example.com"),
                *(
                    event(other.id, EMAIL_ID, "delivered", DAY1, f"x{n}@example.com")
                    for n in range(5)
                ),
            ]
        )
        yield Served(base_url, creds)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    _require_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(20_000)
    opened = context.new_page()
    yield opened
    context.close()


def log_in(page: Page, served: Served, secret: str | None = None) -> None:
    page.goto(f"{served.base_url}/ui/")
    expect(page).to_have_url(f"{served.base_url}/ui/login")
    page.get_by_label("Login").fill(served.creds.login)
    page.get_by_label("Secret").fill(served.creds.secret if secret is None else secret)
    page.get_by_role("button", name="Log in").click()


def cells(page: Page, selector: str) -> list[list[str]]:
    rows = page.locator(selector)
    return [rows.nth(i).locator("th, td").all_inner_texts() for i in range(rows.count())]


def test_the_report_of_the_seeds_example_with_its_totals_row_and_its_csv(
    page: Page, served: Served, tmp_path: Path
) -> None:
    log_in(page, served)
    expect(page).to_have_url(f"{served.base_url}/ui/reports")
    expect(page.locator("#project-login")).to_have_text("reports")
    for field in ("date", "message", "sum_delivered", "open_rate"):
        page.get_by_label(field, exact=True).check()
    page.get_by_label("Date from").fill("2024-03-01")
    page.get_by_label("Date to").fill("2024-03-02")
    page.get_by_label("Mailings").fill(f"S_{EMAIL_ID}")
    page.get_by_role("button", name="Run").click()

    totals = page.locator("#result tfoot tr.totals")
    expect(totals).to_be_visible()
    assert cells(page, "#result thead tr") == [["date", "message", "sum_delivered", "open_rate"]]
    message = f"L_{EMAIL_ID}"
    # Opens per delivered message; the other project's five deliveries are not here.
    assert cells(page, "#result tbody tr") == [
        ["2024-03-01", message, "2", "50.00 %"],
        ["2024-03-02", message, "2", "100.00 %"],
    ]
    assert cells(page, "#result tfoot tr") == [["Total", "", "4", "75.00 %"]]
    # The totals row is set apart from the groups.
    weight = totals.locator("td").first.evaluate("cell => getComputedStyle(cell).fontWeight")
    assert weight == "700"
    assert page.locator("#error").is_hidden()

    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    saved = tmp_path / "report.csv"
    download.value.save_as(saved)
    with saved.open(newline="") as file:
        assert list(csv.reader(file)) == [
            ["date", "message", "sum_delivered", "open_rate"],
            ["2024-03-01", message, "2", "0.5"],
            ["2024-03-02", message, "2", "1"],
            ["Total", "", "4", "0.75"],
        ]


def test_the_servers_error_and_the_end_of_the_session_are_shown(page: Page, served: Served) -> None:
    log_in(page, served)
    page.get_by_role("button", name="Run").click()  # no field ticked
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("fields is required")
    expect(page.locator("#output")).to_be_hidden()
    expect(page.get_by_role("link", name="Log in again")).to_be_hidden()

    page.get_by_label("sum_delivered", exact=True).check()
    page.context.clear_cookies()  # as a logout in another tab does
    page.get_by_role("button", name="Run").click()
    expect(alert).to_contain_text("Your session has ended.")
    page.get_by_role("link", name="Log in again").click()
    expect(page).to_have_url(f"{served.base_url}/ui/login")


def test_a_wrong_secret_shows_the_form_again_and_logout_ends_the_session(
    page: Page, served: Served
) -> None:
    log_in(page, served, secret="not-the-secret")
    expect(page.get_by_role("alert")).to_have_text("Invalid login or secret")
    expect(page.get_by_label("Login")).to_have_value("reports")
    page.get_by_label("Secret").fill(served.creds.secret)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{served.base_url}/ui/reports")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{served.base_url}/ui/login")
    page.goto(f"{served.base_url}/ui/reports")
    expect(page).to_have_url(f"{served.base_url}/ui/login")
