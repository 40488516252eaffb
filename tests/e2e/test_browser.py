"""Real Chromium: each persona signs in and sees its own home; the auditor's home is live."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection as thread_connection

from fleet.nodes import services
from fleet.nodes.models import Node
from tests.e2e.conftest import record_in_own_connection, sign_in, start_agent, stop_agent

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

HOMES = {"admin": "admin-home", "dept_user": "dept-home", "auditor": "auditor-home", "outsider": "no-role-home"}


@pytest.mark.parametrize("persona", list(HOMES))
def test_each_persona_signs_in_and_sees_its_home(personas, browser, live_server_url, persona, tmp_path):
    page = sign_in(browser, live_server_url, persona)
    page.wait_for_selector(f'[data-testid="{HOMES[persona]}"]', timeout=10_000)
    assert page.get_by_test_id("whoami").inner_text().startswith(persona)
    for other in set(HOMES.values()) - {HOMES[persona]}:
        assert page.query_selector(f'[data-testid="{other}"]') is None
    page.screenshot(path=str(tmp_path / f"home-{persona}.png"))
    page.context.close()


def test_a_wrong_password_shows_a_message(personas, browser, live_server_url):
    page = sign_in(browser, live_server_url, "admin", "wrong-password")
    assert page.get_by_role("alert").inner_text().startswith("Your username and password didn't match")
    page.context.close()


def test_the_auditor_home_shows_a_new_event_live(personas, browser, live_server_url):
    page = sign_in(browser, live_server_url, "auditor")
    page.wait_for_selector('[data-testid="auditor-home"]')
    page.wait_for_function("document.querySelector('[data-live-status]').classList.contains('up')", timeout=10_000)
    started = time.monotonic()
    # another thread, as in the web process: this one hosts Playwright's event loop
    writer = threading.Thread(
        target=record_in_own_connection, args=(personas["admin"], "department.update", personas["dept_user"].department)
    )
    writer.start()
    writer.join()
    page.wait_for_selector('[data-events-body] tr.fresh code:text("department.update")', timeout=2_000)
    assert time.monotonic() - started < 2
    page.context.close()


def test_people_search_updates_the_table_in_place(personas, browser, live_server_url):
    page = sign_in(browser, live_server_url, "admin")
    page.goto(live_server_url + "/people/")
    page.evaluate("window.__marker = 'same page'")  # survives only if the page is not reloaded
    page.get_by_label("Search").fill("dept_")
    page.wait_for_function("document.querySelectorAll('[data-testid=users] tbody tr').length === 1", timeout=5_000)
    assert "dept_user" in page.get_by_test_id("users").inner_text()
    assert page.evaluate("window.__marker") == "same page" and "q=dept_" in page.url
    page.context.close()


def _in_thread(fn):
    """Run an ORM call off Playwright's thread (its event loop runs there); close that connection."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        finally:
            thread_connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return result.get("value")


def test_the_node_page_chart_gains_points_without_a_reload(
    personas, browser, live_server_url, celery_worker_process, agent_env, tmp_path
):
    _token, plaintext = _in_thread(lambda: services.create_join_token(personas["admin"], expires_in_hours=1))
    agent = start_agent(agent_env, "browser-node", tmp_path / "agent", plaintext)
    try:
        node_id, deadline = None, time.monotonic() + 60
        while node_id is None and time.monotonic() < deadline:
            node_id = _in_thread(lambda: Node.objects.filter(name="browser-node").values_list("pk", flat=True).first())
            time.sleep(0.2)
        assert node_id, "the agent did not join"

        page = sign_in(browser, live_server_url, "admin")
        page.wait_for_selector('[data-testid="admin-home"]')
        page.get_by_role("link", name="Nodes", exact=True).click()
        seen = page.locator(f'tr[data-node="{node_id}"] [data-field="seen"]')
        before = seen.get_attribute("datetime")
        page.wait_for_function(  # the list's last-heartbeat column follows the live telemetry
            f"document.querySelector('tr[data-node=\"{node_id}\"] [data-field=seen]').dateTime !== {before!r}",
            timeout=5_000,
        )
        page.get_by_role("link", name="browser-node", exact=True).click()
        page.wait_for_selector('[data-testid="live-chart"] canvas')
        navigations = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        page.wait_for_function("+document.querySelector('[data-testid=live-points]').textContent >= 1", timeout=5_000)
        first = int(page.get_by_test_id("live-points").inner_text())
        page.wait_for_function(
            f"+document.querySelector('[data-testid=live-points]').textContent >= {first + 3}", timeout=5_000
        )  # the agent samples every 0.5 s
        points = page.evaluate("document.querySelector('[data-testid=live-chart]').querySelector('canvas') !== null")
        assert points and navigations == [], navigations
        page.screenshot(path=str(tmp_path / "node-detail.png"), full_page=True)
        page.context.close()
    finally:
        stop_agent(agent)


def test_the_sidebar_folds_behind_a_menu_on_a_phone_and_opens_from_the_keyboard(personas, browser, live_server_url):
    page = sign_in(browser, live_server_url, "admin")
    page.wait_for_selector('[data-testid="admin-home"]')
    sidebar = page.get_by_test_id("sidebar")
    assert sidebar.is_visible() and page.get_by_role("link", name="Home").get_attribute("aria-current") == "page"
    page.set_viewport_size({"width": 390, "height": 844})
    assert not sidebar.is_visible()
    menu = page.get_by_role("button", name="Menu")
    menu.focus()
    page.keyboard.press("Enter")
    assert sidebar.is_visible() and menu.get_attribute("aria-expanded") == "true"
    page.keyboard.press("Tab")  # from the Menu button into the page: the links are reachable
    page.keyboard.press("Escape")
    assert not sidebar.is_visible() and menu.get_attribute("aria-expanded") == "false"
    page.context.close()
