"""Reading the usage ledger: who may see which rows, filters, totals for charts, CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from access.people.choices import Role
from access.people.models import Department, User
from access.usage.models import UsageRecord, UsageRollup
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


@dataclass(frozen=True)
class Criteria:
    """One usage query, parsed and checked: what the rows, the count and the summary all answer."""

    user: User  # whose visibility rule applies
    since: datetime
    until: datetime  # inclusive
    label: str
    narrow: Q  # the scope's and filters' narrowing; user_id and department_id, on rows and rollups alike
    model: str | None


def criteria(user: User, params: Mapping[str, str]) -> Criteria:
    """Refuses bad filters with the field named (ServiceError)."""
    scope = scope_for(user, params.get("scope"))
    now = timezone.now()
    try:  # the audit trail's parser: the same dates mean the same instants everywhere
        # by default from a UTC midnight on, so the usual summary reads only daily rollups
        default_since = _floor(now - timedelta(days=DEFAULT_DAYS), "day")
        since = parse_when("since", params["since"]) if params.get("since") else default_since
        until = (
            parse_when("until", params["until"], end_of_day=True) if params.get("until") else now + timedelta(minutes=1)
        )
    except FilterError as exc:
        raise ServiceError(str(exc), str(exc).split(":", 1)[0]) from None
    if since >= until:
        raise ServiceError("since must be before until.", "since")
    narrow = Q()
    if scope == "mine":
        narrow, label = Q(user_id=user.pk), f"your usage ({user.username})"
    elif scope == "department":
        if user.department_id is None:
            raise ServiceError("You belong to no department.", "scope")
        narrow, label = Q(department_id=user.department_id), f"department {user.department}"
    else:
        label = "the whole fleet"
        if params.get("department"):
            dept = Department.objects.filter(slug=params["department"]).values_list("pk", flat=True).first()
            narrow &= Q(department_id=dept or -1)
        if params.get("user"):
            who = User.objects.filter(username=params["user"]).values_list("pk", flat=True).first()
            narrow &= Q(user_id=who or -1)
    return Criteria(user, since, until, label, narrow, params.get("model") or None)


def rows_of(c: Criteria) -> QuerySet[UsageRecord]:
    qs = UsageRecord.objects.visible_to(c.user).filter(c.narrow, created_at__gte=c.since, created_at__lte=c.until)
    if c.model:
        qs = qs.filter(model=c.model)
    return qs.order_by("-created_at")


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


@dataclass(frozen=True)
class Spans:
    """Where each part of a range is read from: whole UTC days from daily rollups, whole hours left
    at either end from hourly ones, and the minutes left past those from the ledger's rows."""

    rollups: Q | None  # on UsageRollup
    rows: Q  # on UsageRecord.created_at


def _floor(at: datetime, period: str) -> datetime:
    at = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if period == "day" else at


def _ceil(at: datetime, period: str) -> datetime:
    floor = _floor(at, period)
    return floor if floor == at else floor + (timedelta(days=1) if period == "day" else timedelta(hours=1))


def spans(c: Criteria) -> Spans:
    end = c.until + timedelta(microseconds=1)  # until is inclusive
    now = timezone.now()
    # A range reaching the present takes the current hour's and day's rollups whole: they hold no
    # row past now.
    live = end > now
    h0, h1 = _ceil(c.since, "hour"), _ceil(now, "hour") if live else _floor(end, "hour")
    if h0 >= h1:
        return Spans(None, Q(created_at__gte=c.since, created_at__lte=c.until))
    rows = Q(created_at__gte=c.since, created_at__lt=h0) | Q(created_at__gte=h1, created_at__lte=c.until)
    d0, d1 = _ceil(h0, "day"), _ceil(now, "day") if live else _floor(h1, "day")
    if d0 >= d1:
        return Spans(Q(period="hour", start__gte=h0, start__lt=h1), rows)
    hours = Q(period="hour") & (Q(start__gte=h0, start__lt=d0) | Q(start__gte=d1, start__lt=h1))
    return Spans(Q(period="day", start__gte=d0, start__lt=d1) | hours, rows)


def _edges(c: Criteria, s: Spans) -> QuerySet[UsageRecord]:
    qs = UsageRecord.objects.visible_to(c.user).filter(c.narrow, s.rows).order_by()
    return qs.filter(model=c.model) if c.model else qs


def _rollups(c: Criteria, s: Spans) -> QuerySet[UsageRollup]:
    if s.rollups is None:
        return UsageRollup.objects.none()
    qs = UsageRollup.objects.visible_to(c.user).filter(c.narrow, s.rollups).order_by()
    return qs.filter(model=c.model) if c.model else qs


KEYS = ("day", "department_id", "user_id", "model")
# One pass of the database computes every total the summary shows: overall, and by each key.
GROUPINGS = "GROUPING SETS ((), (day), (department_id), (user_id), (model))"
SET_OF = {15: "all", 7: "day", 11: "department_id", 13: "user_id", 14: "model"}  # GROUPING(...) bitmask
ROLLUP_SUMS = "sum(requests), sum(refused), sum(prompt_tokens), sum(completion_tokens), sum(latency_ms_sum), "
ROLLUP_SUMS += "sum(ttft_ms_sum), sum(ttft_count)"
ROW_SUMS = "count(*), count(*) FILTER (WHERE status <> 200), sum(prompt_tokens), sum(completion_tokens), "
ROW_SUMS += "sum(latency_ms), sum(ttft_ms), count(ttft_ms)"
FIGURES = ("requests", "refused", "prompt_tokens", "completion_tokens", "latency_ms_sum", "ttft_ms_sum", "ttft_count")


def _grouping_sets(qs: QuerySet, sums: str) -> list[tuple]:
    try:
        sql, params = qs.query.sql_with_params()
    except EmptyResultSet:  # nothing visible (qs.none()): no query at all
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT GROUPING({', '.join(KEYS)}), {', '.join(KEYS)}, {sums} FROM ({sql}) AS t GROUP BY {GROUPINGS}",
            params,
        )
        return cursor.fetchall()


def _groups(c: Criteria, s: Spans) -> dict[str, dict[Any, dict[str, float]]]:
    """Totals overall ("all") and by each key, rollups and edge rows added together."""
    sources: list[tuple[QuerySet, tuple[str, ...], str]] = [
        (
            _edges(c, s).annotate(day=TruncDay("created_at", tzinfo=UTC)),
            ("status", "prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms"),
            ROW_SUMS,
        )
    ]
    if s.rollups is not None:
        rollups = _rollups(c, s).annotate(day=TruncDay("start", tzinfo=UTC))
        sources.append((rollups, FIGURES, ROLLUP_SUMS))
    groups: dict[str, dict[Any, dict[str, float]]] = {name: {} for name in SET_OF.values()}
    for qs, columns, sums in sources:
        for mask, day, department_id, user_id, model, *figures in _grouping_sets(qs.values(*KEYS, *columns), sums):
            name = SET_OF[mask]
            key = {
                "all": None,
                "day": day.date().isoformat() if day else None,
                "department_id": department_id or 0,
                "user_id": user_id or 0,
                "model": model,
            }[name]
            into = groups[name].setdefault(key, dict.fromkeys(FIGURES, 0))
            for figure, value in zip(FIGURES, figures, strict=True):
                into[figure] += float(value or 0)  # sums of bigints come back as numeric
    return groups


def count(c: Criteria) -> int:
    """How many calls match: from the rollups, without counting millions of rows."""
    s = spans(c)
    total = _rollups(c, s).aggregate(n=Sum("requests"))["n"] or 0
    return int(total) + _edges(c, s).count()


def summary(c: Criteria) -> dict:
    """Totals for the charts and tables: by day (UTC), department, model and user (see Spans)."""
    groups = _groups(c, spans(c))
    slugs = dict(Department.objects.filter(pk__in=[k for k in groups["department_id"] if k]).values_list("pk", "slug"))
    names = dict(User.objects.filter(pk__in=[k for k in groups["user_id"] if k]).values_list("pk", "username"))

    def listing(key: str, name: str, labels: Mapping[Any, Any] | None = None) -> list[dict]:
        found = [
            {
                name: labels.get(k) if labels is not None else k,
                "requests": int(t["requests"]),
                "prompt_tokens": int(t["prompt_tokens"]),
                "completion_tokens": int(t["completion_tokens"]),
            }
            for k, t in groups[key].items()
        ]
        return sorted(found, key=lambda r: (r[name] is None, str(r[name])))

    overall = groups["all"].get(None) or dict.fromkeys(FIGURES, 0)
    requests = int(overall["requests"])
    return {
        "requests": requests,
        "prompt_tokens": int(overall["prompt_tokens"]),
        "completion_tokens": int(overall["completion_tokens"]),
        "refused": int(overall["refused"]),
        "avg_latency_ms": round(overall["latency_ms_sum"] / requests, 1) if requests else 0,
        "avg_ttft_ms": round(overall["ttft_ms_sum"] / overall["ttft_count"], 1) if overall["ttft_count"] else None,
        "by_day": listing("day", "day"),
        "by_department": listing("department_id", "department", slugs),
        "by_model": listing("model", "model"),
        "by_user": listing("user_id", "user", names),
    }


def prune(days: int, batch: int = 10_000) -> int:
    """Delete rows older than ``days`` (0: keep all); the rollups keep their totals."""
    if days <= 0:
        return 0
    cutoff, deleted = timezone.now() - timedelta(days=days), 0
    while True:
        ids = list(UsageRecord.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += UsageRecord.objects.filter(pk__in=ids).delete()[0]
