"""Two-factor sign-in for local accounts (django-otp): an authenticator app's TOTP codes, with
one-time recovery codes. Directory accounts rely on their provider's own MFA.

A local person with a confirmed authenticator must enter a code after their password before any
page, API call by session or live socket answers; an admin must first enrol one when
FLEET_REQUIRE_ADMIN_2FA is on. Personal API tokens are a credential of their own and unaffected.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import segno
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django_otp import DEVICE_ID_SESSION_KEY, devices_for_user, match_token
from django_otp import login as otp_login
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

import audit
from access.people import services
from access.people.choices import Role, Source
from access.people.models import User

RECOVERY_CODES = 10
VERIFY, ENROL = "verify", "enrol"
# Reachable before the second factor: the pages that give it, leaving, and what they load.
OPEN_PATHS = ("/account/two-factor/", "/logout/", "/static/", "/login/", "/account/set-password/", "/healthz")


def pending(user: Any, session: Any) -> str | None:
    """What a signed-in person still owes: VERIFY (a code), ENROL (an authenticator), or None."""
    if not getattr(user, "is_authenticated", False) or getattr(user, "source", Source.LOCAL) != Source.LOCAL:
        return None
    if _verified(user, session):
        return None
    if enrolled(user):
        return VERIFY
    if user.role == Role.ADMIN and settings.FLEET_REQUIRE_ADMIN_2FA:
        return ENROL
    return None


def _verified(user: Any, session: Any) -> bool:
    """Verified in this session with a device that still exists (django-otp's middleware says so on
    requests; a websocket has only the session)."""
    if hasattr(user, "is_verified"):
        return bool(user.is_verified())
    persistent_id = session.get(DEVICE_ID_SESSION_KEY) if session is not None else None
    device = Device.from_persistent_id(persistent_id) if persistent_id else None
    return device is not None and device.user_id == user.pk


class TwoFactorMiddleware:
    """Holds a person at the two-factor pages until they have given their second factor."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        owed = None if request.path.startswith(OPEN_PATHS) else pending(request.user, request.session)
        if owed is None:
            return self.get_response(request)
        if request.path.startswith(("/api/", "/v1/")):
            return JsonResponse(
                {"detail": "Give your two-factor code first (sign in again in the browser)."}, status=403
            )
        return redirect("two-factor-setup" if owed == ENROL else "two-factor")


def verify(request: HttpRequest, code: str) -> bool:
    """A code from the authenticator or an unused recovery code (used up now); audited either way."""
    user = request.user
    assert isinstance(user, User)
    device = match_token(user, code.strip().replace(" ", ""))
    if device is None:
        audit.record(None, "auth.login_failed", user, username=user.username, reason="wrong two-factor code")
        return False
    otp_login(request, device)
    audit.record(user, "auth.two_factor", user, method="recovery code" if isinstance(device, StaticDevice) else "totp")
    return True


def enrolled(user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def unconfirmed_device(user: User) -> TOTPDevice:
    """The authenticator being enrolled: made once, shown until a code from it confirms it."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)


def provisioning(device: TOTPDevice) -> dict[str, str]:
    """What the enrolment page shows: the otpauth URI (as a QR code) and its secret, typed by hand."""
    uri = device.config_url
    secret = uri.split("secret=", 1)[1].split("&", 1)[0]
    return {"uri": uri, "secret": secret, "qr_svg": segno.make(uri, error="m").svg_inline(scale=4)}


def confirm(request: HttpRequest, device: TOTPDevice, code: str) -> list[str] | None:
    """Confirm the new authenticator with a code from it; returns the recovery codes, shown once."""
    if not device.verify_token(code.strip().replace(" ", "")):
        return None
    user = device.user
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user, confirmed=True).delete()  # one authenticator at a time
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        codes = _new_recovery_codes(user)
        audit.record(user, "auth.two_factor.enrol", user, recovery_codes=len(codes))
    otp_login(request, device)
    return codes


def _new_recovery_codes(user: User) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    static = StaticDevice.objects.create(user=user, name="recovery codes")
    codes = [secrets.token_hex(5) for _ in range(RECOVERY_CODES)]
    StaticToken.objects.bulk_create([StaticToken(device=static, token=code) for code in codes])
    return codes


def reset(actor: User, user: User) -> int:
    """An admin's reset for someone who lost their authenticator: their sessions end, and they
    enrol again (when required) at their next sign-in."""
    with transaction.atomic():
        devices = list(devices_for_user(user, confirmed=None))
        for device in devices:
            device.delete()
        services.end_sessions(user)
        audit.record(actor, "auth.two_factor.reset", user, devices=len(devices))
    return len(devices)


__all__ = [
    "TwoFactorMiddleware",
    "confirm",
    "enrolled",
    "pending",
    "provisioning",
    "reset",
    "unconfirmed_device",
    "verify",
]
