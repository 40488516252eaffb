"""Who may call which model through the gateway: requests → grants → API keys, with quotas."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models as db  # `models` is a field name below
from django.utils import timezone

from access.grants.choices import ACCESS_REQUEST_TRANSITIONS, AccessRequestState, GrantPurpose, KeyPurpose
from access.people.choices import readers_or_own
from access.tokens import LABEL_VALIDATOR
from console.actions import Actor
from console.states import Revocable, check_transition

if TYPE_CHECKING:
    from access.people.models import User

LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "tokens_per_month")
# The largest limit each field takes: its column's (a 4-byte integer per minute) and, per day and
# month, 10^15, which the gateway's quota script (Lua numbers) still counts exactly.
LIMIT_MAX = {
    "requests_per_minute": 2**31 - 1,
    "tokens_per_minute": 2**31 - 1,
    "tokens_per_day": 10**15,
    "tokens_per_month": 10**15,
}


def _own_or_department(user: User) -> db.Q:
    return db.Q(user=user) | db.Q(department_id=user.department_id, department__isnull=False)


class GrantQuerySet(db.QuerySet):
    def visible_to(self, user: Actor) -> GrantQuerySet:
        """Everyone's for admins and auditors; a department user's own and their department's."""
        return readers_or_own(self, user, _own_or_department)


class AccessRequestQuerySet(db.QuerySet):
    def visible_to(self, user: Actor) -> AccessRequestQuerySet:
        """Everyone's for admins and auditors; a department user's own."""
        return readers_or_own(self, user, lambda u: db.Q(requester=u))


class ApiKeyQuerySet(db.QuerySet):
    def visible_to(self, user: Actor) -> ApiKeyQuerySet:
        """Key metadata (name, prefix, holder, dates; never the secret) for admins and auditors; a
        department user's own keys."""
        return readers_or_own(self, user, lambda u: db.Q(user=u))


class Limits(db.Model):
    """Quotas; empty means no limit at this level (the tightest of key, grant and department wins)."""

    requests_per_minute = db.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = db.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = db.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = db.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        abstract = True

    def limits(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}


class DepartmentQuota(Limits):
    """What a whole department may use, all its keys together."""

    department = db.OneToOneField("access.Department", on_delete=db.CASCADE, related_name="quota")
    updated_at = db.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"quota of {self.department}"


class Grant(Revocable, Limits):
    """A user (or a whole department) may call these models until ``expires_at``."""

    objects = GrantQuerySet.as_manager()

    user = db.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=db.CASCADE, related_name="grants")
    department = db.ForeignKey("access.Department", null=True, blank=True, on_delete=db.CASCADE, related_name="grants")
    models = db.ManyToManyField("fleet.ModelArtifact", related_name="grants")
    expires_at = db.DateTimeField(db_index=True)
    note = db.CharField(max_length=500, blank=True)
    created_by = db.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=db.SET_NULL, related_name="+")
    created_at = db.DateTimeField(default=timezone.now)
    revoked_at = db.DateTimeField(null=True, blank=True)
    expiry_recorded = db.BooleanField(default=False)  # its expiry is in the audit trail (once)
    purpose = db.CharField(max_length=16, choices=GrantPurpose.choices, default=GrantPurpose.ACCESS)

    class Meta:
        ordering = ["expires_at"]
        constraints = [
            db.CheckConstraint(
                condition=db.Q(user__isnull=False) | db.Q(department__isnull=False), name="grant_has_holder"
            )
        ]

    def __str__(self) -> str:
        return f"grant #{self.pk} to {self.holder}"

    @property
    def holder(self) -> str:
        return self.user.username if self.user is not None else f"department {self.department}"

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()

    def covers(self, user) -> bool:
        return self.user_id == user.pk or (self.department_id is not None and self.department_id == user.department_id)


class AccessRequest(db.Model):
    objects = AccessRequestQuerySet.as_manager()

    State = AccessRequestState

    requester = db.ForeignKey(settings.AUTH_USER_MODEL, on_delete=db.CASCADE, related_name="access_requests")
    department = db.ForeignKey("access.Department", on_delete=db.PROTECT, related_name="access_requests")
    models = db.ManyToManyField("fleet.ModelArtifact", related_name="access_requests")
    for_department = db.BooleanField(default=False, help_text="Ask for the whole department, not only you.")
    justification = db.TextField(max_length=2000)
    duration_days = db.PositiveSmallIntegerField()
    state = db.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    reason = db.CharField(max_length=500, blank=True, help_text="Why it was approved or denied.")
    decided_by = db.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=db.SET_NULL, related_name="+")
    decided_at = db.DateTimeField(null=True, blank=True)
    grant = db.OneToOneField(Grant, null=True, blank=True, on_delete=db.SET_NULL, related_name="request")
    created_at = db.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"request #{self.pk} by {self.requester}"

    def set_state(self, new: str) -> None:
        check_transition(ACCESS_REQUEST_TRANSITIONS, self.state, new)
        self.state = new


class ApiKey(Revocable, Limits):
    """A gateway key under a grant. Only its SHA-256 is stored; the prefix finds it."""

    objects = ApiKeyQuerySet.as_manager()

    grant = db.ForeignKey(Grant, on_delete=db.CASCADE, related_name="keys")
    user = db.ForeignKey(settings.AUTH_USER_MODEL, on_delete=db.CASCADE, related_name="api_keys")
    name = db.CharField(max_length=64, validators=[LABEL_VALIDATOR])
    models = db.ManyToManyField(
        "fleet.ModelArtifact", blank=True, related_name="+", help_text="Empty: every model of the grant."
    )
    prefix = db.CharField(max_length=16, unique=True)
    digest = db.CharField(max_length=64)
    created_at = db.DateTimeField(default=timezone.now)
    expires_at = db.DateTimeField(null=True, blank=True)
    last_used_at = db.DateTimeField(null=True, blank=True)
    revoked_at = db.DateTimeField(null=True, blank=True)
    revoked_by = db.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=db.SET_NULL, related_name="+")
    purpose = db.CharField(max_length=16, choices=KeyPurpose.choices, default=KeyPurpose.APP)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
