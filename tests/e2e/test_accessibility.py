"""Real Chromium, every page of every persona, wide and phone-sized: axe-core (vendored) finds no
serious or critical violation, and no page scrolls sideways at 390 px.

The pages are found from the URL configuration itself (each route a persona can GET as HTML), so a
new page is checked the day it is added; a route with parameters needs an object in `tests.pages.objects`."""

from __future__ import annotations

import pytest
from playwright.sync_api import Error as PlaywrightError

from console.config import BASE_DIR
from tests import pages as site
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

AXE = BASE_DIR / "static" / "vendor" / "axe-core-4.14.1.min.js"
VIEWPORTS = {"wide": {"width": 1400, "height": 900}, "phone": {"width": 390, "height": 844}}


def _check(page, url: str) -> list[str]:
    """What is wrong on the page now: serious or critical axe findings, and sideways scrolling."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.filter(v => v.impact === "serious" || v.impact === "critical")
              .map(v => v.impact + " " + v.id + ": " + v.help + " — "
                   + v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(", "));
        }"""
    )
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if width[0] > width[1]:
        found.append(f"scrolls sideways: {width[0]} px wide in a {width[1]} px window")
    return [f"{url}: {f}" for f in found]


@pytest.mark.timeout(600)
def test_every_page_of_every_persona_passes_axe_and_fits_a_phone(personas, browser, live_server_url):
    pages = site.urls(site.objects(personas))
    problems, checked = [], 0
    for persona in ("admin", "dept_user", "auditor"):
        signed_in = sign_in(browser, live_server_url, persona)
        signed_in.wait_for_load_state()
        for size, viewport in VIEWPORTS.items():
            signed_in.set_viewport_size(viewport)
            for url in pages:
                try:
                    response = signed_in.goto(live_server_url + url)
                except PlaywrightError:  # an empty error answer (a 405 to a form's POST target)
                    continue
                assert response is not None and response.status < 500, (persona, url, response and response.status)
                if response.status != 200 or "text/html" not in response.headers["content-type"]:
                    continue  # not this persona's page (403), or not a page
                signed_in.wait_for_load_state("networkidle")
                problems += [f"{persona} {size} {p}" for p in _check(signed_in, url)]
                checked += 1
        signed_in.context.close()
    anonymous = browser.new_context().new_page()
    for size, viewport in VIEWPORTS.items():
        anonymous.set_viewport_size(viewport)
        anonymous.goto(live_server_url + "/login/")
        problems += [f"anonymous {size} {p}" for p in _check(anonymous, "/login/")]
    anonymous.context.close()
    assert checked >= 60, (checked, pages)  # three personas' pages, twice
    assert not problems, "\n".join(problems)
