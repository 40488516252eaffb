"""Audit of sign-ins and of every change to people (UI, API, Django admin, shell alike)."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

import audit
from access.people.models import Department, DirectoryMapping, User
from audit import context as audit_context
from audit.tracking import track

# How each sign-in went in, by the backend Django records on the user it signed in.
METHODS = {
    "access.people.directory.DirectoryBackend": "ldap",
    "django.contrib.auth.backends.ModelBackend": "local",
}


@receiver(user_logged_in)
def _logged_in(sender: Any, request: Any, user: User, **kwargs: Any) -> None:
    method = getattr(user, "fleet_sign_in_method", None) or METHODS.get(getattr(user, "backend", ""), "local")
    audit.record(user, "auth.login", user, method=method, role=user.role)


@receiver(user_logged_out)
def _logged_out(sender: Any, request: Any, user: User | None, **kwargs: Any) -> None:
    if user is not None:
        audit.record(user, "auth.logout", user)


@receiver(user_login_failed)
def _login_failed(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    # Django already masks the password in ``credentials``; only the attempted name is kept.
    why = getattr(request, "fleet_sign_in_refusal", "") or "bad username or password"
    audit.record(None, "auth.login_failed", None, username=str(credentials.get("username", ""))[:150], reason=why)


@receiver(user_locked_out)
def _locked_out(sender: Any, request: Any, username: str | None, ip_address: str | None, **kwargs: Any) -> None:
    audit.record(None, "auth.lockout", None, username=(username or "")[:150])


def _actor() -> Any:
    return audit_context.current().user


track(
    User,
    prefix="user",
    fields=[
        "username",
        "first_name",
        "last_name",
        "email",
        "role",
        "department_id",
        "is_active",
        "is_superuser",
        "password",
        "source",
        "deactivated_reason",
    ],
    secret_fields=["password"],
    actor=_actor,
)
track(Department, prefix="department", fields=["name", "slug", "description"], actor=_actor)
track(DirectoryMapping, prefix="directory_mapping", fields=["group", "role", "department_id"], actor=_actor)
