"""What a new user saw on screen and should not see again, each checked in real Chromium."""

from __future__ import annotations

import pytest

from access.people.models import Department
from fleet.catalog.models import ModelArtifact
from fleet.deployments.models import Deployment
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_the_admins_pages_say_what_they_mean(personas, browser, live_server_url):
    model = ModelArtifact.objects.create(name="llama-a", path="/models/llama-a")
    idle = Deployment.objects.create(name="idle-chat", model=model, replicas=0)
    page = sign_in(browser, live_server_url, "admin")

    # "Will it fit?" from the model's page: the form with the model chosen, not a 400 of blank fields.
    page.goto(f"{live_server_url}/models/{model.pk}/")
    page.get_by_role("button", name="Will it fit?").click()
    page.wait_for_load_state()
    assert page.locator("#id_model").input_value() == str(model.pk)
    assert page.locator("form [role=alert]").count() == 0  # no field is called missing

    # A comparison that cannot be made says why, in words.
    page.goto(f"{live_server_url}/jobs/compare/?ids=12345")
    assert page.get_by_test_id("compare-error").inner_text() == "Not succeeded benchmark jobs: 12345. Choose runs."

    # Scaled to zero is neither "Ready 0/0" nor "Running".
    page.goto(f"{live_server_url}/deployments/")
    row = page.locator(f'tr[data-row="{idle.pk}"]')
    assert row.get_by_test_id("deployment-state").inner_text() == "Scaled to zero"
    assert "0 / 0" not in row.inner_text()
    page.goto(f"{live_server_url}/deployments/{idle.pk}/")
    header = page.locator("hgroup p").inner_text()
    assert "Scaled to zero" in header and "Running" not in header

    # A department needs no short name typed: one is made from its name.
    page.goto(f"{live_server_url}/people/")
    page.get_by_text("New department").click()
    page.get_by_label("Name", exact=True).fill("Cardiology Ward")
    page.get_by_role("button", name="Create department").click()
    page.wait_for_selector("text=cardiology-ward")
    assert Department.objects.filter(slug="cardiology-ward").exists()
    page.context.close()


def test_the_trail_names_roles_as_people_say_them(personas, browser, live_server_url):
    sign_in(browser, live_server_url, "dept_user").context.close()  # writes auth.login as dept_user
    page = sign_in(browser, live_server_url, "auditor")
    page.goto(f"{live_server_url}/audit/?actor=dept_user")
    rows = page.locator("[data-events-body]").inner_text()
    assert "dept_user (Department user)" in rows and "(dept_user)" not in rows
    page.context.close()
