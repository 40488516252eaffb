"""Real Chromium against a console configured with a real directory (slapd) and a real OpenID
provider (its own process), admins' two-factor required: each way in, as a person would use it."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
from django_otp.oath import TOTP

from access.people.choices import Role
from access.people.models import DirectoryMapping
from console.embedded import free_port
from tests import slapd
from tests.e2e.conftest import sign_in, start_uvicorn, stop, wait_for_port
from tests.oidc_provider import server as idp

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture(scope="module")
def console_with_directory(process_env, tmp_path_factory) -> Iterator[str]:
    """A second web process, like `make run` with FLEET_LDAP_* and FLEET_OIDC_* set."""
    root = tmp_path_factory.mktemp("sign-in")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    directory = slapd.start(root / "slapd")
    provider = idp.start(root / "idp", [f"{base}/login/oidc/idp/callback/"], [f"{base}/login/"])
    env = process_env | {
        "FLEET_LDAP_URI": directory.uri,
        "FLEET_LDAP_START_TLS": "true",
        "FLEET_LDAP_CA_FILE": str(directory.ca),
        "FLEET_LDAP_BIND_DN": slapd.BIND_DN,
        "FLEET_LDAP_BIND_PASSWORD": slapd.BIND_PASSWORD,
        "FLEET_LDAP_USER_BASE": slapd.PEOPLE,
        "FLEET_LDAP_GROUP_BASE": slapd.GROUPS,
        "FLEET_OIDC_PROVIDERS": "idp",
        "FLEET_OIDC_IDP_DISCOVERY_URL": provider.discovery_url,
        "FLEET_OIDC_IDP_CLIENT_ID": idp.CLIENT_ID,
        "FLEET_OIDC_IDP_CLIENT_SECRET": idp.CLIENT_SECRET,
        "FLEET_OIDC_IDP_LABEL": "Example IdP",
        "FLEET_REQUIRE_ADMIN_2FA": "true",
    }
    proc = start_uvicorn("console.asgi:application", port, env)
    try:
        wait_for_port(port, proc)
        yield base
    finally:
        stop(proc)
        provider.stop()
        directory.stop()


@pytest.fixture
def mapped(personas) -> dict:
    radiology = personas["dept_user"].department
    for provider, group, role, department in [
        ("ldap", slapd.group_dn("it-admins"), Role.ADMIN, None),
        ("ldap", slapd.group_dn("staff"), Role.DEPT_USER, radiology),
        ("idp", "fleet-admins", Role.ADMIN, None),
        ("idp", "radiology", Role.DEPT_USER, radiology),
    ]:
        DirectoryMapping.objects.create(provider=provider, group=group, role=role, department=department)
    return personas


@pytest.mark.parametrize(("username", "home"), [("olivia", "admin-home"), ("paul", "dept-home")])
def test_a_provider_user_signs_in_on_its_page_and_lands_on_their_home(
    mapped, browser, console_with_directory, username, home
):
    page = browser.new_context().new_page()
    page.goto(console_with_directory + "/login/")
    page.get_by_role("button", name="Example IdP").click()
    page.wait_for_selector("text=Example IdP")  # the provider's own page
    assert not page.url.startswith(console_with_directory)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(idp.PASSWORD)
    page.get_by_role("button", name="Sign in to Example IdP").click()
    page.wait_for_selector(f'[data-testid="{home}"]', timeout=15_000)
    assert page.url == console_with_directory + "/"
    assert page.get_by_test_id("whoami").inner_text().startswith(username)
    page.context.close()


@pytest.mark.parametrize(("username", "home"), [("alice", "admin-home"), ("bob", "dept-home")])
def test_a_directory_user_signs_in_with_username_and_password(mapped, browser, console_with_directory, username, home):
    page = sign_in(browser, console_with_directory, username, slapd.PASSWORD)
    page.wait_for_selector(f'[data-testid="{home}"]', timeout=15_000)  # bob: staff through a nested group
    page.context.close()


def test_someone_in_no_mapped_group_sees_a_clear_refusal(mapped, browser, console_with_directory):
    page = sign_in(browser, console_with_directory, "carol", slapd.PASSWORD)
    assert "not in any group that gives access" in page.get_by_test_id("refusal").inner_text()
    page.goto(console_with_directory + "/login/")
    page.get_by_role("button", name="Example IdP").click()
    page.get_by_label("Username").fill("quinn")
    page.get_by_label("Password").fill(idp.PASSWORD)
    page.get_by_role("button", name="Sign in to Example IdP").click()
    assert "not in any group that gives access" in page.get_by_test_id("refusal").inner_text()
    page.context.close()


def _code(secret: str, steps_ahead: int = 0) -> str:
    totp = TOTP(base64.b32decode(secret + "=" * (-len(secret) % 8)))
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"


def test_an_admin_with_two_factor_required_reaches_no_admin_page_before_a_code(mapped, browser, console_with_directory):
    page = sign_in(browser, console_with_directory, "admin")
    page.wait_for_selector('[data-testid="totp-qr"] svg')
    for path in ("/", "/people/", "/nodes/", "/audit/"):
        page.goto(console_with_directory + path)
        assert page.url == console_with_directory + "/account/two-factor/setup/", path
    secret = page.get_by_test_id("totp-secret").inner_text()
    page.get_by_label("Code").fill(_code(secret))
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    assert len(page.get_by_test_id("recovery-codes").inner_text().split()) == 10
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector('[data-testid="admin-home"]')
    page.context.close()

    again = sign_in(browser, console_with_directory, "admin")
    again.wait_for_selector("text=Your two-factor code")
    again.goto(console_with_directory + "/people/")
    assert again.url == console_with_directory + "/account/two-factor/"
    again.get_by_label("Code").fill(_code(secret, 1))  # the enrolment took this window's code
    again.get_by_role("button", name="Continue").click()
    again.wait_for_selector('[data-testid="admin-home"]')
    again.goto(console_with_directory + "/people/")
    assert again.url == console_with_directory + "/people/"
    again.context.close()
