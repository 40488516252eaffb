"""Real Chromium: each persona signs in and sees its own home; the auditor's home is live."""
from __future__ import annotations

import threading
import time

import pytest

from access.choices import Role
from access.models import Department
from tests.conftest import PASSWORD, make_user
from tests.e2e.conftest import record_in_own_connection

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

HOMES = {"admin": "admin-home", "dept_user": "dept-home", "auditor": "auditor-home", "outsider": "no-role-home"}


@pytest.fixture
def personas(transactional_db):
    radiology = Department.objects.create(name="Radiology", slug="radiology")
    return {
        "admin": make_user("admin", Role.ADMIN),
        "dept_user": make_user("dept_user", Role.DEPT_USER, radiology),
        "auditor": make_user("auditor", Role.AUDITOR),
        "outsider": make_user("outsider", Role.NONE),
    }


def _sign_in(browser, base_url: str, username: str, password: str = PASSWORD):
    page = browser.new_context().new_page()
    page.goto(base_url + "/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    return page


@pytest.mark.parametrize("persona", list(HOMES))
def test_each_persona_signs_in_and_sees_its_home(personas, browser, live_server_url, persona, tmp_path):
    page = _sign_in(browser, live_server_url, persona)
    page.wait_for_selector(f'[data-testid="{HOMES[persona]}"]', timeout=10_000)
    assert page.get_by_test_id("whoami").inner_text().startswith(persona)
    for other in set(HOMES.values()) - {HOMES[persona]}:
        assert page.query_selector(f'[data-testid="{other}"]') is None
    page.screenshot(path=str(tmp_path / f"home-{persona}.png"))
    page.context.close()


def test_a_wrong_password_shows_a_message(personas, browser, live_server_url):
    page = _sign_in(browser, live_server_url, "admin", "wrong-password")
    assert page.get_by_role("alert").inner_text().startswith("Your username and password didn't match")
    page.context.close()


def test_the_auditor_home_shows_a_new_event_live(personas, browser, live_server_url):
    page = _sign_in(browser, live_server_url, "auditor")
    page.wait_for_selector('[data-testid="auditor-home"]')
    page.wait_for_function("document.querySelector('[data-live-status]').classList.contains('up')", timeout=10_000)
    started = time.monotonic()
    # another thread, as in the web process: this one hosts Playwright's event loop
    writer = threading.Thread(target=record_in_own_connection,
                              args=(personas["admin"], "department.update", personas["dept_user"].department))
    writer.start()
    writer.join()
    page.wait_for_selector('[data-events-body] tr.fresh code:text("department.update")', timeout=2_000)
    assert time.monotonic() - started < 2
    page.context.close()


def test_people_search_updates_the_table_in_place(personas, browser, live_server_url):
    page = _sign_in(browser, live_server_url, "admin")
    page.goto(live_server_url + "/people/")
    page.evaluate("window.__marker = 'same page'")  # survives only if the page is not reloaded
    page.get_by_label("Search").fill("dept_")
    page.wait_for_function("document.querySelectorAll('[data-testid=users] tbody tr').length === 1", timeout=5_000)
    assert "dept_user" in page.get_by_test_id("users").inner_text()
    assert page.evaluate("window.__marker") == "same page" and "q=dept_" in page.url
    page.context.close()
