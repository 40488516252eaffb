"""Real Chromium, the auditor's trail: an admin's action (in another browser) shows up live, also
under a filter; the auditor downloads a CSV and a PDF summary of the period."""

from __future__ import annotations

import time

import pytest

import verify_export
from audit.models import AuditEvent
from tests.e2e.conftest import sign_in
from tests.helpers import read_pdf

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_the_trail_shows_an_admins_action_live_and_exports(personas, browser, live_server_url, tmp_path):  # noqa: F811
    auditor = sign_in(browser, live_server_url, "auditor")
    auditor.goto(live_server_url + "/audit/?action=department.create")  # filtered, still live
    auditor.wait_for_function("document.querySelector('[data-live-status]').classList.contains('up')", timeout=10_000)
    time.sleep(0.5)  # the subscription reaches the server

    admin = sign_in(browser, live_server_url, "admin")
    admin.goto(live_server_url + "/people/")
    admin.get_by_role("button", name="New department").click()
    admin.locator("#id_name").fill("Cardiology")
    admin.locator("#id_slug").fill("cardiology")
    admin.locator("#id_name").press("Enter")  # a form submit from the keyboard
    admin.wait_for_selector("text=Department “Cardiology” created.")
    created = AuditEvent.objects.get(action="department.create", target_repr="Cardiology")
    seen = time.monotonic()
    auditor.wait_for_selector(f'[data-testid="events"] tr[data-seq="{created.seq}"]', timeout=2_000)
    assert time.monotonic() - seen < 2
    # the admin's sign-in (another action) did not slip into the filtered view
    assert auditor.locator('[data-testid="events"] tr', has_text="auth.login").count() == 0

    # The event opens in a panel in place: every field, what it changed, the events of its request.
    auditor.locator(f'tr[data-seq="{created.seq}"] a[data-event-link]').click()
    panel = auditor.get_by_test_id("event-panel")
    panel.get_by_test_id("event-fields").wait_for()
    assert "Cardiology" in panel.get_by_test_id("event-diff").inner_text()
    assert panel.get_by_test_id("event-request-id").inner_text() == created.request_id
    auditor.keyboard.press("Escape")
    assert not panel.is_visible()

    auditor.goto(live_server_url + "/audit/")
    auditor.get_by_text("Export…").click()  # above the table: no scrolling past 50 rows
    with auditor.expect_download() as csv_download:
        auditor.get_by_role("button", name="CSV", exact=True).click()
    csv_path = tmp_path / "trail.csv"
    csv_download.value.save_as(csv_path)
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("seq,created_at") and any(",department.create," in line for line in lines), lines[-3:]
    with auditor.expect_download() as pdf_download:
        auditor.get_by_role("button", name="PDF summary").click()
    pdf_path = tmp_path / "summary.pdf"
    pdf_download.value.save_as(pdf_path)
    assert "department.create" in read_pdf(pdf_path.read_bytes()).text
    fingerprint = auditor.get_by_test_id("key-fingerprint").inner_text()
    assert auditor.get_by_role("button", name="Signed bundle (zip)").bounding_box()["y"] < 600
    with auditor.expect_download() as bundle_download:
        auditor.get_by_role("button", name="Signed bundle (zip)").click()
    bundle = tmp_path / "bundle.zip"
    bundle_download.value.save_as(bundle)
    report = verify_export.verify(bundle)
    assert report.startswith("OK: ") and f"fingerprint {fingerprint}" in report
    auditor.context.close()
    admin.context.close()
