"""Reading the usage ledger: who may see which rows, filters, totals for charts, CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import cast

from django.db.models import Avg, Count, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from access.people.choices import Role
from access.people.models import User
from access.usage.models import UsageRecord
from audit.filters import FilterError, parse_when
from console.actions import ServiceError

DEFAULT_DAYS = 30
SCOPES = ("mine", "department", "all")
CSV_FIELDS = [
    "created_at",
    "user",
    "department",
    "model",
    "endpoint",
    "stream",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "ttft_ms",
    "input_sha256",
    "request_id",
    "key_id",
    "deployment_id",
    "instance_id",
]


def scope_for(user: User, wanted: str | None) -> str:
    if wanted and wanted not in SCOPES:
        raise ServiceError(f"scope must be one of {', '.join(SCOPES)}.", "scope")
    if user.has_role(Role.ADMIN, Role.AUDITOR):
        return wanted or "all"
    if wanted == "all":
        raise ServiceError("Only admins and auditors see the whole fleet's usage.", "scope")
    return wanted or "mine"


def filtered(user: User, params: Mapping[str, str]) -> tuple[QuerySet[UsageRecord], str]:
    """Rows this user may see, narrowed by the query's filters; refuses bad filters with the field named."""
    scope = scope_for(user, params.get("scope"))
    now = timezone.now()
    try:  # the audit trail's parser: the same dates mean the same instants everywhere
        since = parse_when("since", params["since"]) if params.get("since") else now - timedelta(days=DEFAULT_DAYS)
        until = (
            parse_when("until", params["until"], end_of_day=True) if params.get("until") else now + timedelta(minutes=1)
        )
    except FilterError as exc:
        raise ServiceError(str(exc), str(exc).split(":", 1)[0]) from None
    if since >= until:
        raise ServiceError("since must be before until.", "since")
    qs = UsageRecord.objects.visible_to(user).filter(created_at__gte=since, created_at__lte=until)
    if scope == "mine":
        qs, label = qs.filter(user=user), f"your usage ({user.username})"
    elif scope == "department":
        if user.department_id is None:
            raise ServiceError("You belong to no department.", "scope")
        qs, label = qs.filter(department_id=user.department_id), f"department {user.department}"
    else:
        label = "the whole fleet"
        if params.get("department"):
            qs = qs.filter(department__slug=params["department"])
        if params.get("user"):
            qs = qs.filter(user__username=params["user"])
    if params.get("model"):
        qs = qs.filter(model=params["model"])
    return qs.order_by("-created_at"), label


def row_dict(r: UsageRecord) -> dict:
    return {
        "id": r.pk,
        "created_at": r.created_at.isoformat(),
        "user": r.user.username if r.user is not None else None,
        "department": r.department.slug if r.department is not None else None,
        "model": r.model,
        "endpoint": r.endpoint,
        "stream": r.stream,
        "status": r.status,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "input_sha256": r.input_sha256,
        "request_id": r.request_id,
        "key_id": r.key_id,
        "deployment_id": r.deployment_id,
        "instance_id": r.instance_id,
    }


def csv_lines(qs: QuerySet[UsageRecord]) -> Iterator[str]:
    """The rows as CSV, a line at a time (constant memory however many there are)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def take() -> str:
        value = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return value

    writer.writerow(CSV_FIELDS)
    yield take()
    rows = qs.values_list(
        "created_at",
        "user__username",
        "department__slug",
        "model",
        "endpoint",
        "stream",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "ttft_ms",
        "input_sha256",
        "request_id",
        "key_id",
        "deployment_id",
        "instance_id",
    )
    for row in rows.iterator(chunk_size=2000):
        writer.writerow([row[0].isoformat(), *row[1:]])
        yield take()


def summary(qs: QuerySet[UsageRecord]) -> dict:
    """Totals for the charts and tables: by day, department, model and user (a handful of GROUP BYs)."""
    totals = {
        "requests": Count("id"),
        "prompt_tokens": Sum("prompt_tokens"),
        "completion_tokens": Sum("completion_tokens"),
    }
    base = qs.order_by()

    def grouped(*fields: str) -> list[dict]:
        rows = base.values(*fields).annotate(**totals).order_by(*fields)
        return [
            r | {"prompt_tokens": r["prompt_tokens"] or 0, "completion_tokens": r["completion_tokens"] or 0}
            for r in rows
        ]

    overall = base.aggregate(**totals, avg_latency_ms=Avg("latency_ms"), avg_ttft_ms=Avg("ttft_ms"))
    refused = base.exclude(status=200).count()
    by_day = [r | {"day": r["day"].date().isoformat()} for r in grouped_day(base, totals)]
    return {
        "requests": overall["requests"],
        "prompt_tokens": overall["prompt_tokens"] or 0,
        "completion_tokens": overall["completion_tokens"] or 0,
        "refused": refused,
        "avg_latency_ms": round(overall["avg_latency_ms"] or 0, 1),
        "avg_ttft_ms": round(overall["avg_ttft_ms"], 1) if overall["avg_ttft_ms"] is not None else None,
        "by_day": by_day,
        "by_department": [r | {"department": r.pop("department__slug")} for r in grouped("department__slug")],
        "by_model": grouped("model"),
        "by_user": [r | {"user": r.pop("user__username")} for r in grouped("user__username")],
    }


def grouped_day(base: QuerySet[UsageRecord], totals: dict) -> list[dict]:
    rows = base.annotate(day=TruncDay("created_at")).values("day").annotate(**totals).order_by("day")
    return cast("list[dict]", list(rows))  # each row: the day and the totals
