"""Two-factor sign-in for local accounts: enrolment with recovery codes, a code after the
password before anything answers, admins held until they enrol when the setting says so."""

from __future__ import annotations

import re
import time

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from access.people.choices import Source
from access.people.models import User
from audit.models import AuditEvent
from console.consumers import CLOSE_UNAUTHENTICATED, LiveConsumer
from tests.conftest import PASSWORD


def _code(device: TOTPDevice, steps_ahead: int = 0) -> str:
    """The code the person's phone shows (``steps_ahead``: a later window; a code is taken once)."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def _signed_in(username: str) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


def _enrol(client: Client, username: str) -> tuple[TOTPDevice, list[str]]:
    page = client.get("/account/two-factor/setup/")
    assert (
        page.status_code == 200 and 'data-testid="totp-qr"' in page.content.decode() and "<svg" in page.content.decode()
    )
    device = TOTPDevice.objects.get(user__username=username, confirmed=False)
    done = client.post("/account/two-factor/setup/", {"code": _code(device)})
    assert done.status_code == 201
    codes = re.search(r'id="recovery-codes-text">([^<]+)<', done.content.decode()).group(1).split()
    device.refresh_from_db()
    return device, codes


def test_after_enrolling_a_code_is_owed_after_the_password_before_anything_answers(people):
    device, codes = _enrol(_signed_in("auditor"), "auditor")
    assert device.confirmed and len(codes) == 10
    assert AuditEvent.objects.filter(action="auth.two_factor.enrol", actor_name="auditor").count() == 1

    client = _signed_in("auditor")
    for path in ("/", "/audit/", "/account/tokens/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"] == "/account/two-factor/", path
    assert client.get("/api/audit/events/").status_code == 403
    assert client.post("/account/two-factor/", {"code": "12345"}).status_code == 401
    refused = AuditEvent.objects.filter(action="auth.login_failed", context__username="auditor").latest("seq")
    assert refused.context["reason"] == "wrong two-factor code" and "12345" not in str(refused.as_dict())
    time.sleep(1.1)  # after a wrong code the next is taken no sooner than a second later (django-otp)
    assert client.post("/account/two-factor/", {"code": _code(device, 1)}).status_code == 302
    assert client.get("/audit/").status_code == 200
    assert AuditEvent.objects.filter(action="auth.two_factor", context__method="totp").count() == 1


def test_a_wrong_enrolment_code_turns_nothing_on(people):
    client = _signed_in("auditor")
    client.get("/account/two-factor/setup/")
    response = client.post("/account/two-factor/setup/", {"code": "12345"})
    assert response.status_code == 400 and "does not match" in response.content.decode()
    assert not TOTPDevice.objects.filter(user=people["auditor"], confirmed=True).exists()
    assert client.get("/").status_code == 200


def test_a_recovery_code_signs_in_once(people):
    _device, codes = _enrol(_signed_in("dept_user"), "dept_user")
    first = _signed_in("dept_user")
    response = first.post("/account/two-factor/?next=https://evil.example/", {"code": codes[0]})
    assert response.status_code == 302 and response["Location"] == "/"  # never off to a ?next=
    assert first.get("/").status_code == 200
    again = _signed_in("dept_user")
    assert again.post("/account/two-factor/", {"code": codes[0]}).status_code == 401  # used up
    assert AuditEvent.objects.filter(action="auth.two_factor", context__method="recovery code").count() == 1


def test_an_admin_with_two_factor_required_reaches_no_admin_page_before_enrolling(people, settings):
    settings.FLEET_REQUIRE_ADMIN_2FA = True
    admin = _signed_in("admin")
    for path in ("/", "/people/", "/nodes/", "/deployments/", "/admin/"):
        response = admin.get(path)
        assert response.status_code == 302 and response["Location"] == "/account/two-factor/setup/", path
    assert admin.get("/api/nodes/").status_code == 403
    assert "Admins must use two-factor sign-in" in admin.get("/account/two-factor/setup/").content.decode()
    _enrol(admin, "admin")
    assert admin.get("/people/").status_code == 200
    assert _signed_in("auditor").get("/").status_code == 200  # others are not held


def test_personal_tokens_are_a_credential_of_their_own(people, client_for):
    client = _signed_in("auditor")
    _enrol(client, "auditor")
    token = client.post("/api/tokens/", {"name": "cron"}, content_type="application/json").json()["token"]
    assert Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/api/audit/events/").status_code == 200


def test_an_admin_resets_a_lost_authenticator_and_the_person_is_signed_out(people, client_for):
    client = _signed_in("auditor")
    _enrol(client, "auditor")
    page = client_for("admin").get(f"/people/{people['auditor'].pk}/").content.decode()
    assert "Reset two-factor" in page
    assert client_for("admin").post(f"/people/{people['auditor'].pk}/reset-two-factor/").status_code == 302
    assert not TOTPDevice.objects.filter(user=people["auditor"]).exists()
    assert client.get("/").status_code == 302 and AuditEvent.objects.filter(action="auth.two_factor.reset").exists()
    assert _signed_in("auditor").get("/").status_code == 200


def test_directory_accounts_use_their_providers_own(people, settings):
    settings.FLEET_REQUIRE_ADMIN_2FA = True
    User.objects.filter(pk=people["admin"].pk).update(source=Source.LDAP)
    admin = _signed_in("admin")  # (a local password here only to sign in without a directory)
    assert admin.get("/people/").status_code == 200
    assert admin.get("/account/two-factor/setup/").status_code == 302


@pytest.mark.django_db(transaction=True)
def test_a_live_socket_is_refused_while_the_code_is_owed(people, settings):
    settings.FLEET_REQUIRE_ADMIN_2FA = True

    async def connect() -> tuple[bool, int | None]:
        comm = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/")
        comm.scope["user"], comm.scope["session"] = people["admin"], SessionStore()
        connected, code = await comm.connect()
        await comm.disconnect()
        return connected, code

    assert async_to_sync(connect)() == (False, CLOSE_UNAUTHENTICATED)
