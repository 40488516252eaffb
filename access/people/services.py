"""Side effects for people and tokens: the UI and the API both call these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.contrib.sessions.models import Session
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.text import slugify

import audit
from access import bus, tokens
from access.people.choices import ROLE_PRECEDENCE, Role, Source
from access.people.models import Department, DirectoryMapping, PersonalToken, User, normalize_group
from console.actions import ServiceError, refuse_in_use

if TYPE_CHECKING:
    from access.grants.models import ApiKey, Grant

MAX_TOKENS_PER_USER = 20
M = TypeVar("M", "PersonalToken", "Grant", "ApiKey")  # the revocable rows


def create_department(*, name: str, slug: str = "", description: str = "") -> Department:
    return save_department(Department(), name=name, slug=slug, description=description)


def save_department(department: Department, *, name: str, slug: str = "", description: str = "") -> Department:
    """Create or change a department: a blank short name is made from the name; both stay unique."""
    # The audit event is written by access.signals (it also covers Django admin edits).
    slug = slug or slugify(name)[:50].strip("-")
    if not slug:
        raise ServiceError("Give a short name: letters, digits and hyphens (none could be made from the name).", "slug")
    others = Department.objects.exclude(pk=department.pk) if department.pk else Department.objects.all()
    with transaction.atomic():
        if others.filter(name__iexact=name).exists():
            raise ServiceError(f"A department named {name!r} already exists.", "name")
        if others.filter(slug=slug).exists():
            raise ServiceError(f"The short name {slug!r} is taken.", "slug")
        department.name, department.slug, department.description = name, slug, description
        department.save()
        return department


def delete_department(department: Department) -> None:
    """Delete a department nobody and nothing refers to any more."""
    with transaction.atomic():
        department = Department.objects.select_for_update(no_key=True).get(pk=department.pk)
        refuse_in_use(
            f"Department {department.name}",
            {
                "member": department.members.all(),
                "grant": department.grants.all(),  # reverse relations: access.grants sits above people
                "access request": department.access_requests.all(),
            },
            "move the members and revoke or remove those first",
        )
        department.delete()


@dataclass(frozen=True)
class Verdict:
    """What the directory says of one person: a role and department, or why they may not enter."""

    role: str = Role.NONE
    department: Department | None = None
    refusal: str = ""


def mapped_verdict(provider: str, groups: set[str]) -> Verdict:
    """The role ``groups`` give through ``provider``'s mappings: the highest, or a refusal."""
    wanted = {normalize_group(g) for g in groups}
    rows = DirectoryMapping.objects.filter(provider=provider).select_related("department")
    mapped = [m for m in rows if m.group in wanted]
    if not mapped:
        return Verdict(refusal="in no mapped group")
    best = min(mapped, key=lambda m: (ROLE_PRECEDENCE.index(Role(m.role)), m.group))
    return Verdict(role=best.role, department=best.department)


def create_mapping(*, provider: str, group: str, role: str, department: Department | None) -> DirectoryMapping:
    """A directory group's members get ``role`` from their next sign-in or sync (audited by access.receivers)."""
    return DirectoryMapping.objects.create(provider=provider, group=group, role=role, department=department)


def delete_mapping(mapping: DirectoryMapping) -> None:
    """Its members keep their role until the next sync or sign-in finds no mapped group for them."""
    mapping.delete()


def check_self_edit(actor: User, user: User | None, changes: dict[str, Any]) -> None:
    """An admin cannot lock themselves out: their own role and active flag are another admin's to change."""
    if user is None or user.pk != actor.pk:
        return
    if changes.get("role", user.role) != user.role or changes.get("is_active", True) is False:
        raise ServiceError("You cannot change your own role or deactivate yourself; ask another admin.", "role")


def create_person(user: User) -> str:
    """Save a new local account (its fields already checked by the form) with no usable password;
    returns the path of its one-time set-password link."""
    user.source = Source.LOCAL
    user.set_unusable_password()
    user.save()  # one user.create event (access.receivers)
    return password_link(user)


def reset_password(user: User) -> str:
    """The old password stops working and every session ends; returns the new one-time link's path."""
    if user.source != Source.LOCAL:
        raise ServiceError(f"{user.username} signs in with the directory; their password is reset there.")
    with transaction.atomic():
        user.set_unusable_password()
        user.save(update_fields=["password"])
        end_sessions(user)
    return password_link(user)


def password_link(user: User) -> str:
    """Valid until used (setting a password changes what it was made from) or PASSWORD_RESET_TIMEOUT."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return reverse("set-password", args=[uid, default_token_generator.make_token(user)])


def send_link(user: User, url: str) -> bool:
    """E-mail the link when SMTP is configured (FLEET_SMTP_HOST) and the person has an address."""
    if not settings.EMAIL_HOST or not user.email:
        return False
    send_mail(
        "Set your Fleet Console password",
        f"Hello {user.get_full_name() or user.username},\n\nset your password here (the link works once):\n{url}\n",
        None,
        [user.email],
    )
    return True


def deactivate(user: User, reason: str) -> bool:
    """Close every door at once: sign-in refused, sessions ended, personal tokens and gateway keys
    answer 401 (gateways drop their cached keys). One audit event (user.update) carries the reason.
    False when the account was inactive already."""
    with transaction.atomic():
        user = User.objects.select_for_update(no_key=True).get(pk=user.pk)
        if not user.is_active:
            return False
        user.is_active, user.deactivated_reason = False, reason[:200]
        user.save(update_fields=["is_active", "deactivated_reason"])
        end_sessions(user)
        bus.publish_on_commit("keys")
    return True


def reactivate(user: User) -> bool:
    with transaction.atomic():
        user = User.objects.select_for_update(no_key=True).get(pk=user.pk)
        if user.is_active:
            return False
        user.is_active, user.deactivated_reason = True, ""
        user.save(update_fields=["is_active", "deactivated_reason"])
        bus.publish_on_commit("keys")
    return True


def end_sessions(user: User) -> int:
    """Delete the person's browser sessions. Sessions are not indexed by user, so the live ones are
    read; a console has hundreds, not millions. (Their next request would fail anyway: inactive
    people are never loaded from a session.)"""
    ended = [
        s.session_key
        for s in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if s.get_decoded().get("_auth_user_id") == str(user.pk)
    ]
    Session.objects.filter(session_key__in=ended).delete()
    return len(ended)


def create_token(user: User, *, name: str, expires_in_days: int | None) -> tuple[PersonalToken, str]:
    """Returns the row and the plaintext, which is shown once and never stored."""
    with transaction.atomic():
        active = PersonalToken.objects.filter(user=user, revoked_at__isnull=True).count()
        if active >= MAX_TOKENS_PER_USER:
            raise ServiceError(f"You already have {active} active tokens; revoke one first.")
        new = tokens.generate()
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        token = PersonalToken.objects.create(
            user=user, name=name, prefix=new.prefix, digest=new.digest, expires_at=expires_at
        )
        audit.record(user, "token.create", token, after={"name": name, "prefix": new.prefix, "expires_at": expires_at})
    return token, new.plaintext


def revoke(actor: User | None, obj: M, action: str, what: str, **also: Any) -> M:
    """Mark a token, key or grant revoked — the row stays, for the record — with one audit event.
    ``also``: more fields to set with it (e.g. who revoked)."""
    with transaction.atomic():
        obj = type(obj).objects.select_for_update(no_key=True).get(pk=obj.pk)
        if obj.revoked_at is not None:
            raise ServiceError(f"This {what} is already revoked.")
        obj.mark_revoked(timezone.now())
        for name, value in also.items():
            setattr(obj, name, value)
        obj.save(update_fields=["revoked_at", *also])
        prefix = getattr(obj, "prefix", None)
        audit.record(actor, action, obj, after={"revoked_at": obj.revoked_at} | ({"prefix": prefix} if prefix else {}))
    return obj


def revoke_token(actor: User, token: PersonalToken) -> PersonalToken:
    return revoke(actor, token, "token.revoke", "token")
