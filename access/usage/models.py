"""The usage ledger: one row per gateway request. No prompt or output text, only its SHA-256."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from access.people.choices import readers_or_own


class UsageRecordQuerySet(models.QuerySet):
    def visible_to(self, user: Any) -> UsageRecordQuerySet:
        """Every row for admins and auditors; a department user's own and their department's."""
        return readers_or_own(
            self,
            user,
            lambda u: (
                models.Q(user=u) | models.Q(department_id=u.department_id) if u.department_id else models.Q(user=u)
            ),
        )


class UsageRecord(models.Model):
    objects = UsageRecordQuerySet.as_manager()

    created_at = models.DateTimeField(db_index=True)
    key = models.ForeignKey("access.ApiKey", null=True, on_delete=models.SET_NULL, related_name="usage")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="usage")
    department = models.ForeignKey("access.Department", null=True, on_delete=models.SET_NULL, related_name="usage")
    model = models.CharField(max_length=100)  # the served name asked for
    deployment = models.ForeignKey("fleet.Deployment", null=True, on_delete=models.SET_NULL, related_name="usage")
    instance_id = models.BigIntegerField(null=True)
    endpoint = models.CharField(max_length=32)
    stream = models.BooleanField(default=False)
    status = models.PositiveSmallIntegerField()
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField()
    ttft_ms = models.FloatField(null=True)
    input_sha256 = models.CharField(max_length=64)
    request_id = models.CharField(max_length=32)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "created_at"], name="usage_user_time"),
            models.Index(fields=["department", "created_at"], name="usage_dept_time"),
            models.Index(fields=["model", "created_at"], name="usage_model_time"),
        ]
        constraints = [  # a call is one row, however often its queue entry is delivered
            models.UniqueConstraint(
                fields=["request_id"], condition=~models.Q(request_id=""), name="usage_one_row_per_call"
            )
        ]

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageRollupQuerySet(models.QuerySet):
    def visible_to(self, user: Any) -> UsageRollupQuerySet:
        """The ledger's own rule (UsageRecordQuerySet.visible_to), on the rollups' plain ids."""
        return readers_or_own(
            self,
            user,
            lambda u: (
                models.Q(user_id=u.pk) | models.Q(department_id=u.department_id)
                if u.department_id
                else models.Q(user_id=u.pk)
            ),
        )


class UsageRollup(models.Model):
    """The ledger's totals per hour and per day, user, department and model, kept by the database
    itself (a statement trigger on every insert into the ledger, migration 0004), so summaries read
    thousands of rows instead of millions and outlive raw rows past FLEET_USAGE_RETENTION_DAYS.
    Users and departments are plain ids (0: none), not keys: a rollup outlives what it counts.
    Buckets start on UTC hours and days."""

    class Period(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    objects = UsageRollupQuerySet.as_manager()

    period = models.CharField(max_length=4, choices=Period.choices)
    start = models.DateTimeField()
    user_id = models.BigIntegerField(default=0)
    department_id = models.BigIntegerField(default=0)
    model = models.CharField(max_length=100)
    requests = models.BigIntegerField(default=0)
    refused = models.BigIntegerField(default=0)  # status other than 200
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0)
    ttft_ms_sum = models.FloatField(default=0)
    ttft_count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "start", "user_id", "department_id", "model"], name="rollup_bucket"
            )
        ]
        indexes = [
            models.Index(fields=["user_id", "period", "start"], name="rollup_user"),
            models.Index(fields=["department_id", "period", "start"], name="rollup_dept"),
        ]


# Upper bounds (ms) of the latency and time-to-first-token histograms /metrics serves.
LATENCY_BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)


class CallCounter(models.Model):
    """The ledger's running totals since the start, for /metrics: kept by the database itself (a
    statement trigger on every insert into the ledger, as the rollups), so a scrape reads a few
    hundred rows, every web process serves the same counts, and they never go back. Labels are
    bounded: a model name only where a deployment answered to it (a refused call's asked-for name
    is anyone's text), departments and deployments as plain ids. Histograms are cumulative counts
    per bound of ``LATENCY_BUCKETS_MS``."""

    deployment_id = models.BigIntegerField(default=0)
    department_id = models.BigIntegerField(default=0)
    model = models.CharField(max_length=100, blank=True)
    endpoint = models.CharField(max_length=32)
    status = models.PositiveSmallIntegerField()
    calls = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0)
    latency_le = ArrayField(models.BigIntegerField(), default=list)
    ttft_ms_sum = models.FloatField(default=0)
    ttft_count = models.BigIntegerField(default=0)
    ttft_le = ArrayField(models.BigIntegerField(), default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["deployment_id", "department_id", "model", "endpoint", "status"], name="call_counter_labels"
            )
        ]
