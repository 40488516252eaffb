"""AuditEvent: append-only (a database trigger refuses UPDATE and DELETE) and hash-chained."""

from __future__ import annotations

from typing import Any

from django.db import models

from access.people.choices import READERS, Role, role_of

# The chained columns, in the order an event's hash covers them; exports and the API add the
# event's own hash.
COLUMNS = (
    "seq",
    "created_at",
    "actor_id",
    "actor_name",
    "actor_role",
    "actor_department",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "before",
    "after",
    "context",
    "source_ip",
    "request_id",
    "channel",
    "prev_hash",
)


class AuditEventQuerySet(models.QuerySet):
    def visible_to(self, user: Any) -> AuditEventQuerySet:
        """The whole trail for admins and auditors; nothing for anyone else."""
        return self if role_of(user) in READERS else self.none()


class AuditEvent(models.Model):
    objects = AuditEventQuerySet.as_manager()

    seq = models.BigIntegerField(unique=True, help_text="Position in the chain, from 1, without gaps.")
    created_at = models.DateTimeField(db_index=True)
    # Copied, not foreign keys: the trail must outlive (and never be rewritten by) user deletion.
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_name = models.CharField(max_length=150)
    actor_role = models.CharField(max_length=16, blank=True)
    actor_department = models.CharField(max_length=100, blank=True)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    context = models.JSONField(default=dict, blank=True)
    source_ip = models.CharField(max_length=45, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    channel = models.CharField(max_length=16, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-seq"]
        # Each filter of the trail with seq second: "newest first, filtered" reads an index range
        # backwards and stops after a page, however many millions of rows there are.
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_audit_target__idx"),
            models.Index(fields=["action", "seq"], name="audit_action_seq"),
            models.Index(fields=["actor_name", "seq"], name="audit_actor_seq"),
            models.Index(fields=["actor_department", "seq"], name="audit_department_seq"),
            models.Index(fields=["target_type", "seq"], name="audit_target_type_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor_name}"

    @property
    def actor_role_label(self) -> str:
        """The role as every other page names it ("Department user", not "dept_user")."""
        return str(dict(Role.choices).get(self.actor_role, self.actor_role))

    def as_dict(self) -> dict:
        """The hashed content (everything but the event's own hash and row id)."""
        return {
            "seq": self.seq,
            "created_at": self.created_at.isoformat(timespec="microseconds"),
            "actor_id": self.actor_id,
            "actor_name": self.actor_name,
            "actor_role": self.actor_role,
            "actor_department": self.actor_department,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "target_repr": self.target_repr,
            "before": self.before,
            "after": self.after,
            "context": self.context,
            "source_ip": self.source_ip,
            "request_id": self.request_id,
            "channel": self.channel,
            "prev_hash": self.prev_hash,
        }


class VerifyRun(models.Model):
    """One walk of the chain. An incremental run starts after the last intact run's head (checked
    to be unchanged) instead of the genesis, so the daily run only reads what is new."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    full = models.BooleanField(default=False)
    requested_by = models.CharField(max_length=150, default="schedule")
    from_seq = models.BigIntegerField(default=0)
    checked = models.BigIntegerField(default=0)
    intact_up_to = models.BigIntegerField(default=0)
    head_hash = models.CharField(max_length=64)
    ok = models.BooleanField()
    broken_seq = models.BigIntegerField(null=True, blank=True)
    problem = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        if self.ok:
            return f"intact up to event {self.intact_up_to}"
        return f"broken at event {self.broken_seq}: {self.problem} (intact up to event {self.intact_up_to})"


class ArchiveSegment(models.Model):
    """Events moved out of the table into a signed file. The last one's (seq, hash) is the anchor
    the remaining chain is verified from."""

    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField(unique=True)
    last_hash = models.CharField(max_length=64)
    events = models.BigIntegerField()
    path = models.CharField(max_length=1024)
    manifest_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-last_seq"]
