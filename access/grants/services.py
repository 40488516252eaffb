"""Access to models: request → approve/deny → grant → API keys; quotas. The UI and the API both call these.

Each step writes one audit event, is pushed live to the requester (``user.<id>``) and the admins'
queue (``access``), and tells every gateway process to drop its cached keys (``access.bus``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

import audit
from access import bus, tokens
from access.grants.choices import GrantPurpose, KeyPurpose
from access.grants.models import LIMIT_FIELDS, LIMIT_MAX, AccessRequest, ApiKey, DepartmentQuota, Grant
from access.people.choices import Role
from access.people.models import Department, User
from access.people.services import revoke
from console import live
from console.actions import ServiceError
from fleet.catalog.models import ModelArtifact
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment

MAX_DURATION_DAYS = 366
MAX_KEYS_PER_USER = 20
EXPIRING_WITHIN = timedelta(days=14)
State = AccessRequest.State


def _push(request: AccessRequest) -> None:
    payload = {
        "kind": "access_request",
        "id": request.pk,
        "state": request.state,
        "reason": request.reason,
        "grant": request.grant_id,
    }
    live.publish_on_commit((f"user.{request.requester_id}", "access"), payload)


def _names(models: Iterable[ModelArtifact]) -> list[str]:
    return sorted(m.name for m in models)


def clean_limits(limits: dict[str, Any] | None) -> dict[str, int | None]:
    """Positive integers or empty; anything else is refused with the field named."""
    out: dict[str, int | None] = {}
    for name in LIMIT_FIELDS:
        value = (limits or {}).get(name)
        if value in (None, ""):
            out[name] = None
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ServiceError(f"{name.replace('_', ' ')} must be a whole number or empty.", name) from None
        if number < 1:
            raise ServiceError(f"{name.replace('_', ' ')} must be at least 1 (leave it empty for no limit).", name)
        if number > LIMIT_MAX[name]:
            raise ServiceError(
                f"{name.replace('_', ' ')} must be at most {LIMIT_MAX[name]:,} (leave it empty for no limit).", name
            )
        out[name] = number
    return out


def _check_duration(days: Any) -> int:
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DURATION_DAYS:
        raise ServiceError(f"Duration must be 1 to {MAX_DURATION_DAYS} days.", "duration_days")
    return days


def _check_models(models: list[ModelArtifact]) -> list[ModelArtifact]:
    if not models:
        raise ServiceError("Choose at least one model.", "models")
    return models


# --- requests ---------------------------------------------------------------------------------


def request_access(
    user: User, *, models: list[ModelArtifact], justification: str, duration_days: int, for_department: bool = False
) -> AccessRequest:
    if user.role != Role.DEPT_USER or user.department_id is None:
        raise ServiceError("Only department users request access; admins grant it directly.")
    _check_models(models)
    _check_duration(duration_days)
    justification = (justification or "").strip()
    if len(justification) < 10:
        raise ServiceError("Say in a sentence why you need it (at least 10 characters).", "justification")
    with transaction.atomic():
        pending = AccessRequest.objects.filter(requester=user, state=State.PENDING, models__in=models)
        if pending.exists():
            raise ServiceError(
                "You already have a pending request for one of these models; wait for it or withdraw it.", "models"
            )
        request = AccessRequest.objects.create(
            requester=user,
            department_id=user.department_id,
            justification=justification,
            duration_days=duration_days,
            for_department=for_department,
        )
        request.models.set(models)
        audit.record(
            user,
            "access.request",
            request,
            after={
                "models": _names(models),
                "duration_days": duration_days,
                "for_department": for_department,
                "justification": justification,
            },
        )
        _push(request)
    return request


def _pending(request: AccessRequest) -> AccessRequest:
    request = AccessRequest.objects.select_for_update(no_key=True).get(pk=request.pk)
    if request.state != State.PENDING:
        raise ServiceError(f"This request is already {request.get_state_display().lower()}.")
    return request


def approve(
    actor: User,
    request: AccessRequest,
    *,
    reason: str = "",
    duration_days: int | None = None,
    for_department: bool | None = None,
    limits: dict | None = None,
) -> AccessRequest:
    limits = clean_limits(limits)
    with transaction.atomic():
        request = _pending(request)
        days = _check_duration(duration_days if duration_days is not None else request.duration_days)
        whole = request.for_department if for_department is None else for_department
        models = list(request.models.all())
        grant = _new_grant(
            actor,
            user=None if whole else request.requester,
            department=request.department if whole else None,
            models=models,
            expires_at=timezone.now() + timedelta(days=days),
            limits=limits,
            note=f"request #{request.pk}",
        )
        request.set_state(State.APPROVED)
        request.reason, request.grant = reason.strip()[:500], grant
        request.decided_by, request.decided_at = actor, timezone.now()
        request.save()
        audit.record(
            actor,
            "access.approve",
            request,
            before={"state": State.PENDING},
            after={
                "state": State.APPROVED,
                "grant": grant.pk,
                "holder": grant.holder,
                "models": _names(models),
                "expires_at": grant.expires_at,
                "reason": request.reason,
                **limits,
            },
        )
        _push(request)
    return request


def deny(actor: User, request: AccessRequest, *, reason: str) -> AccessRequest:
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Give the requester a reason.", "reason")
    with transaction.atomic():
        request = _pending(request)
        request.set_state(State.DENIED)
        request.reason = reason[:500]
        request.decided_by, request.decided_at = actor, timezone.now()
        request.save()
        audit.record(
            actor,
            "access.deny",
            request,
            before={"state": State.PENDING},
            after={"state": State.DENIED, "reason": request.reason},
        )
        _push(request)
    return request


def withdraw(user: User, request: AccessRequest) -> AccessRequest:
    with transaction.atomic():
        request = _pending(request)
        if request.requester_id != user.pk:
            raise ServiceError("Only the requester can withdraw a request.")
        request.set_state(State.WITHDRAWN)
        request.save(update_fields=["state"])
        audit.record(
            user, "access.withdraw", request, before={"state": State.PENDING}, after={"state": State.WITHDRAWN}
        )
        _push(request)
    return request


# --- grants -----------------------------------------------------------------------------------


def _new_grant(
    actor: User,
    *,
    user: User | None,
    department: Department | None,
    models: list[ModelArtifact],
    expires_at,
    limits: dict,
    note: str = "",
) -> Grant:
    grant = Grant.objects.create(
        user=user, department=department, expires_at=expires_at, note=note[:500], created_by=actor, **limits
    )
    grant.models.set(models)
    return grant


def create_grant(
    actor: User,
    *,
    user: User | None = None,
    department: Department | None = None,
    models: list[ModelArtifact],
    duration_days: int,
    limits: dict | None = None,
    note: str = "",
) -> Grant:
    """An admin grants directly, without a request."""
    if (user is None) == (department is None):
        raise ServiceError("Grant to one user or to one department.", "user")
    if user is not None and user.role != Role.DEPT_USER:
        raise ServiceError("Only department users hold grants.", "user")
    _check_models(models)
    limits = clean_limits(limits)
    with transaction.atomic():
        grant = _new_grant(
            actor,
            user=user,
            department=department,
            models=models,
            expires_at=timezone.now() + timedelta(days=_check_duration(duration_days)),
            limits=limits,
            note=note,
        )
        audit.record(
            actor,
            "grant.create",
            grant,
            after={"holder": grant.holder, "models": _names(models), "expires_at": grant.expires_at, **limits},
        )
    return grant


def end_admin_grants(user: User) -> int:
    """Revoke the playground grants of someone who is no longer an administrator (audited, and
    every gateway drops its cached keys at once); how many there were."""
    if user.role == Role.ADMIN:
        return 0
    held = Grant.objects.filter(user=user, purpose=GrantPurpose.PLAYGROUND, revoked_at__isnull=True)
    ended = 0
    for grant in held:
        revoke(None, grant, "grant.revoke", "grant")
        ended += 1
    if ended:
        bus.publish_on_commit("keys")
    return ended


def revoke_grant(actor: User, grant: Grant) -> Grant:
    grant = revoke(actor, grant, "grant.revoke", "grant")
    bus.publish("keys")
    return grant


def active_grants(user: User) -> QuerySet[Grant]:
    """The usable grants a person holds, their own or their department's (what keys go under)."""
    held = Q(user=user) | Q(department_id=user.department_id, department__isnull=False)
    if user.role != Role.ADMIN:  # an administrator's playground grant is theirs only while they are one
        held &= ~Q(purpose=GrantPurpose.PLAYGROUND)
    return (
        Grant.objects.filter(held, revoked_at__isnull=True, expires_at__gt=timezone.now())
        .select_related("user", "department")
        .prefetch_related("models")
    )


def callable_models(user: User) -> QuerySet[ModelArtifact]:
    """The models a person's active grants name (the names they call the gateway by), each with the
    deployments serving it and how many of their instances are Ready."""
    ready = Count("instances", filter=Q(instances__state=InstanceState.READY))
    serving = Prefetch("deployments", queryset=Deployment.objects.annotate(ready=ready).order_by("name"))
    return (
        ModelArtifact.objects.filter(grants__in=active_grants(user))
        .distinct()
        .order_by("name")
        .prefetch_related(serving)
    )


def effective_limits(*levels: Any) -> dict[str, int | None]:
    """The tightest of each quota over ``levels`` (a key, its grant, ...): what the gateway enforces."""
    return {
        name: min((value for value in (getattr(level, name) for level in levels) if value), default=None)
        for name in LIMIT_FIELDS
    }


def expiring(within: timedelta = EXPIRING_WITHIN) -> QuerySet[Grant]:
    """Grants someone should renew or let lapse (the console renews an administrator's playground)."""
    now = timezone.now()
    return Grant.objects.filter(
        revoked_at__isnull=True, expires_at__gt=now, expires_at__lte=now + within, purpose=GrantPurpose.ACCESS
    )


def set_department_quota(actor: User, department: Department, limits: dict) -> DepartmentQuota:
    limits = clean_limits(limits)
    with transaction.atomic():
        quota, _ = DepartmentQuota.objects.select_for_update(no_key=True).get_or_create(department=department)
        before = quota.limits()
        for name, value in limits.items():
            setattr(quota, name, value)
        quota.save()
        audit.record(actor, "department.quota", department, before=before, after=limits)
        bus.publish_on_commit("keys")
    return quota


# --- keys -------------------------------------------------------------------------------------


def create_key(
    user: User,
    *,
    grant: Grant,
    name: str,
    models: list[ModelArtifact] | None = None,
    expires_in_days: int | None = None,
    limits: dict | None = None,
) -> tuple[ApiKey, str]:
    """Returns the key and its plaintext, which is shown once and never stored."""
    name = (name or "").strip()
    if not name:
        raise ServiceError("Name the key (e.g. the application that will use it).", "name")
    limits = clean_limits(limits)
    if expires_in_days is not None:
        _check_duration(expires_in_days)
    with transaction.atomic():
        grant = Grant.objects.select_for_update(no_key=True).get(pk=grant.pk)
        if not grant.covers(user):
            raise ServiceError("This grant is not yours.", "grant")
        if not grant.active:
            raise ServiceError("This grant has expired or was revoked; request access again.", "grant")
        if grant.purpose == GrantPurpose.PLAYGROUND:  # an administrator's, for the playground alone
            raise ServiceError("Keys go under access grants; this one serves the playground only.", "grant")
        granted = set(grant.models.values_list("pk", flat=True))
        outside = [m.name for m in models or [] if m.pk not in granted]
        if outside:
            raise ServiceError(f"The grant does not cover {', '.join(sorted(outside))}.", "models")
        active = ApiKey.objects.filter(user=user, revoked_at__isnull=True, purpose=KeyPurpose.APP).count()
        if active >= MAX_KEYS_PER_USER:
            raise ServiceError(f"You already have {active} active keys; revoke one first.")
        new = tokens.generate(tokens.KEY_KIND)
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        if expires_at is None or expires_at > grant.expires_at:
            expires_at = grant.expires_at  # a key never outlives its grant
        key = ApiKey.objects.create(
            grant=grant, user=user, name=name, prefix=new.prefix, digest=new.digest, expires_at=expires_at, **limits
        )
        key.models.set(models or [])
        audit.record(
            user,
            "apikey.create",
            key,
            after={
                "name": name,
                "prefix": new.prefix,
                "grant": grant.pk,
                "models": _names(models or []),
                "expires_at": expires_at,
                **limits,
            },
        )
        bus.publish_on_commit("keys")
    return key, new.plaintext


def revoke_key(actor: User, key: ApiKey) -> ApiKey:
    if not actor.is_fleet_admin and key.user_id != actor.pk:
        raise ServiceError("You can only revoke your own keys.")
    key = revoke(actor, key, "apikey.revoke", "key", revoked_by=actor)
    bus.publish("keys")
    return key
