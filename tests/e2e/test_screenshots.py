"""Screenshots of the console as its people see it, for the README and for review: each persona's
home, the playground, a deployment, a node, the audit trail with an event's panel open, and page 1
of the PDF report. Saved under build/screenshots/ (FLEET_SCREENSHOTS_DIR elsewhere); `make
screenshots` runs only this."""

from __future__ import annotations

import os
from pathlib import Path

import pypdfium2
import pytest

from console.config import BASE_DIR
from tests import pages as site
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
WIDE = {"width": 1400, "height": 900}


def _folder() -> Path:
    folder = Path(os.environ.get("FLEET_SCREENSHOTS_DIR") or BASE_DIR / "build" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_screenshots_of_each_persona_and_the_main_pages(personas, browser, live_server_url):
    objects = site.objects(personas)
    folder, saved = _folder(), []

    def shot(page, name: str) -> None:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        saved.append(path)

    for persona in ("admin", "dept_user", "auditor"):
        page = sign_in(browser, live_server_url, persona)
        page.set_viewport_size(WIDE)
        page.wait_for_load_state("networkidle")
        shot(page, f"home-{persona}")
        if persona == "admin":
            page.goto(f"{live_server_url}/deployments/{objects['pk']['deployment-detail']}/")
            shot(page, "deployment")
            page.goto(f"{live_server_url}/nodes/{objects['pk']['node-detail']}/")
            shot(page, "node")
        if persona == "dept_user":
            page.goto(f"{live_server_url}/playground/")
            page.get_by_test_id("compare-toggle").check()
            shot(page, "playground")
        if persona == "auditor":
            page.goto(f"{live_server_url}/audit/")
            page.locator(f'tr[data-seq="{objects["seq"]["audit-event"]}"] a[data-event-link]').click()
            page.get_by_test_id("event-fields").wait_for()
            page.screenshot(path=str(folder / "audit-event-panel.png"))  # the viewport: the panel is modal
            saved.append(folder / "audit-event-panel.png")
            pdf = page.request.get(f"{live_server_url}/audit/export/pdf/")
            assert pdf.ok and pdf.headers["content-type"] == "application/pdf"
            document = pypdfium2.PdfDocument(pdf.body())
            first = folder / "report-page-1.png"
            document[0].render(scale=1.5).to_pil().save(first)
            saved.append(first)
        page.context.close()
    assert all(p.stat().st_size > 5_000 for p in saved), [(p.name, p.stat().st_size) for p in saved]
    print(f"\n{len(saved)} screenshots in {folder}")
