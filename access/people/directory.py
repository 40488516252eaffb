"""Sign-in against the organisation's LDAP or Active Directory (django-auth-ldap), its groups mapped
to a role and a department (``DirectoryMapping``), and the sync that closes every door of someone
the directory disabled, removed or took out of every mapped group.

The mapping is applied at every sign-in (just-in-time creation; a change counts at the next
sign-in) and by ``sync()``, which beat runs every FLEET_LDAP_SYNC_MINUTES.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import ldap
from django.conf import settings
from django.http import HttpRequest

# _LDAPUser is the library's own lookup of one person (its populate_user() builds one the same way):
# the sync needs its DN, flags and nested groups without a password.
from django_auth_ldap.backend import LDAPBackend, _LDAPUser, ldap_error

import audit
from access.people import services
from access.people.choices import LDAP_PROVIDER, Source
from access.people.models import User
from access.people.services import Verdict
from audit import context as audit_context

log = logging.getLogger(__name__)

DIRECTORY_REASON = "directory: "  # how a deactivation by the directory is told from an admin's
REFUSAL_ATTR = "fleet_sign_in_refusal"  # set on the request: the failed sign-in's audit event says why


def enabled() -> bool:
    return bool(settings.AUTH_LDAP_SERVER_URI)


def verdict(ldap_user: Any) -> Verdict:
    if ldap_user.dn is None:
        return Verdict(refusal="not found in the directory")
    if _disabled(ldap_user):
        return Verdict(refusal="disabled in the directory")
    groups = set(ldap_user.group_dns)
    return services.mapped_verdict(LDAP_PROVIDER, groups)


def _disabled(ldap_user: Any) -> bool:
    flags = settings.FLEET_LDAP_DISABLED_FILTER
    return bool(flags) and bool(ldap_user.connection.search_s(ldap_user.dn, ldap.SCOPE_BASE, flags, ["1.1"]))


def _apply(user: User, found: Verdict) -> None:
    user.source, user.role, user.department = Source.LDAP, found.role, found.department
    if not user.is_active and user.deactivated_reason.startswith(DIRECTORY_REASON):
        user.is_active, user.deactivated_reason = True, ""  # the directory lets them back in


class DirectoryBackend(LDAPBackend):
    """django-auth-ldap, refusing whom the mapping does not admit and saying why."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kw):
        if not enabled():
            return None
        user = super().authenticate(request, username=username, password=password, **kw)
        if user is None and request is not None and username and not getattr(request, REFUSAL_ATTR, ""):
            # A locked account's bind fails as a wrong password does; the bind account tells them apart.
            try:
                looked_up = _LDAPUser(self, username=username.strip())
                if looked_up.dn is not None and _disabled(looked_up):
                    setattr(request, REFUSAL_ATTR, "disabled in the directory")
            except ldap.LDAPError:
                pass  # the refusal stands; only its reason is unknown
        return user

    def get_user(self, user_id: int) -> User | None:
        # A session outlives nothing: someone deactivated since is signed out at their next request.
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None

    def get_or_build_user(self, username: str, ldap_user: Any) -> tuple[User, bool]:
        user, built = super().get_or_build_user(username, ldap_user)

        def refuse(why: str) -> None:
            request = ldap_user._request
            if request is not None:
                setattr(request, REFUSAL_ATTR, why)
            raise ldap_user.AuthenticationFailed(why)

        if not built and user.source != Source.LDAP:
            refuse("a local account has this username")  # never taken over by a directory entry
        found = verdict(ldap_user)
        if found.refusal:
            refuse(found.refusal)
        if not built and not user.is_active and not user.deactivated_reason.startswith(DIRECTORY_REASON):
            refuse("deactivated in the console")
        _apply(user, found)
        return user, built


@dataclass
class SyncResult:
    checked: int = 0
    deactivated: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the directory failed to answer about them
    error: str = ""


def sync() -> SyncResult:
    """Bring every directory account in line with the directory. An unreachable directory changes
    nobody: the run is audited as failed and the next one tries again."""
    result = SyncResult()
    if not enabled():
        return result
    backend = DirectoryBackend()
    errors: list[Exception] = []

    def on_error(sender: Any, context: str, user: Any, request: Any, exception: Exception, **kw: Any) -> None:
        errors.append(exception)  # django-auth-ldap reports a failed search here and answers None

    ldap_error.connect(on_error, dispatch_uid="fleet-directory-sync")
    try:
        with audit_context.bound(channel="directory"):
            try:
                _bound = _LDAPUser(backend, username="-").connection  # the bind account works, or nothing changes
            except ldap.LDAPError as exc:
                result.error = _describe(exc)
            else:
                for user in User.objects.filter(source=Source.LDAP).select_related("department"):
                    _sync_one(backend, user, errors, result)
            audit.record(
                None,
                "directory.sync" if not result.error else "directory.sync_failed",
                None,
                after={
                    "checked": result.checked,
                    "deactivated": result.deactivated,
                    "changed": result.changed,
                    "skipped": result.skipped,
                }
                | ({"error": result.error} if result.error else {}),
            )
    finally:
        ldap_error.disconnect(dispatch_uid="fleet-directory-sync")
    return result


def _sync_one(backend: DirectoryBackend, user: User, errors: list[Exception], result: SyncResult) -> None:
    errors.clear()
    try:
        found = verdict(_LDAPUser(backend, username=user.username))
    except ldap.LDAPError as exc:
        errors.append(exc)
    if errors:
        result.skipped.append(user.username)
        log.warning("directory sync: %s skipped: %s", user.username, _describe(errors[0]))
        return
    result.checked += 1
    if found.refusal:
        if user.is_active and services.deactivate(user, DIRECTORY_REASON + found.refusal):
            result.deactivated.append(user.username)
        return
    before = (user.role, user.department_id, user.is_active)
    _apply(user, found)
    if (user.role, user.department_id, user.is_active) != before:
        user.save(update_fields=["source", "role", "department", "is_active", "deactivated_reason"])
        result.changed.append(user.username)


def _describe(exc: Exception) -> str:
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return str(info.get("desc") or exc)[:200]


__all__ = ["DirectoryBackend", "enabled", "sync", "verdict"]
