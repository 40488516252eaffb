"""What each persona's home shows: a handful of aggregate queries each, none per row."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Q, Sum
from django.db.models.functions import TruncDay, TruncMinute
from django.utils import timezone

from access.grants import services as grants
from access.grants.choices import AccessRequestState, KeyPurpose
from access.grants.models import AccessRequest, ApiKey, DepartmentQuota
from access.people.choices import Role, Source
from access.people.models import User
from access.usage.models import UsageRecord
from audit.models import AuditEvent
from audit.verification import latest
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.jobs.choices import JobState
from fleet.jobs.models import Job
from fleet.nodes.choices import NodeState
from fleet.nodes.models import GPU, Node

LIST_ROWS = 8  # failing instances, running jobs, expiring grants: the first few, with a link to all


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


def _series(rows: list[Any], start: datetime, step: timedelta, count: int, fields: dict[str, str]) -> dict:
    """A chart's data: one point per ``step`` from ``start`` (gaps as 0), each field a series."""
    by_time = {row["t"]: row for row in rows}
    times = [start + step * i for i in range(count)]
    return {
        "x": [_epoch(t) for t in times],
        "series": [
            {"label": label, "values": [(by_time.get(t) or {}).get(field) or 0 for t in times]}
            for field, label in fields.items()
        ],
    }


def _gpus() -> dict[str, Any]:
    """Fleet-wide GPU use from each online node's latest sample: mean utilization, memory used of total."""
    samples = Node.objects.filter(state=NodeState.ONLINE).values_list("last_sample", flat=True)
    utils, used = [], 0
    for sample in samples:
        for reading in (sample or {}).get("gpus", []):
            if not isinstance(reading, dict):
                continue
            if isinstance(reading.get("util"), (int, float)):
                utils.append(float(reading["util"]))
            if isinstance(reading.get("mem_used"), (int, float)):
                used += int(reading["mem_used"])
    total = GPU.objects.filter(node__state=NodeState.ONLINE).aggregate(n=Count("id"), bytes=Sum("memory_total"))
    return {
        "count": total["n"],
        "util": round(sum(utils) / len(utils)) if utils else None,
        "mem_used": used,
        "mem_total": total["bytes"] or 0,
        "mem_pct": round(100 * used / total["bytes"]) if total["bytes"] else None,
    }


def admin() -> dict[str, Any]:
    now = timezone.now()
    hour_ago = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    per_minute = list(
        UsageRecord.objects.filter(created_at__gte=hour_ago)
        .annotate(t=TruncMinute("created_at"))
        .values("t")
        .annotate(calls=Count("id"), tokens=Sum("completion_tokens"))
        .order_by("t")
    )
    for row in per_minute:  # per second, as the chart's title says
        row["calls"] = round(row["calls"] / 60, 3)
        row["tokens"] = round((row["tokens"] or 0) / 60, 2)
    deployments = list(
        Deployment.objects.annotate(ready=Count("instances", filter=Q(instances__state=InstanceState.READY)))
        .values("pk", "name", "replicas", "ready")
        .order_by("name")[:50]
    )
    failing = (
        Instance.objects.filter(state__in=[InstanceState.FAILED, InstanceState.CRASHED])
        .select_related("deployment", "node")
        .order_by("-updated_at")
    )
    pending = AccessRequest.objects.filter(state=AccessRequestState.PENDING).aggregate(
        n=Count("id"), oldest=Min("created_at")
    )
    expiring = grants.expiring().select_related("user", "department").order_by("expires_at")
    context: dict[str, Any] = {
        "gpus": _gpus(),
        "nodes_by_state": dict(Node.objects.values_list("state").annotate(n=Count("id")).order_by()),
        "deployments": deployments,
        "deployments_short": sum(1 for d in deployments if d["ready"] < d["replicas"]),
        "traffic": _series(per_minute, hour_ago, timedelta(minutes=1), 61, {"calls": "calls/s", "tokens": "tokens/s"}),
        "calls_hour": UsageRecord.objects.filter(created_at__gte=hour_ago).count(),
        "failing": list(failing[:LIST_ROWS]),
        "failing_count": failing.count(),
        "running_jobs": list(
            Job.objects.filter(state=JobState.RUNNING).select_related("node").order_by("id")[:LIST_ROWS]
        ),
        "queued_jobs": Job.objects.filter(state=JobState.QUEUED).count(),
        "pending": pending["n"],
        "pending_oldest": pending["oldest"],
        "expiring": list(expiring[:LIST_ROWS]),
        "expiring_count": expiring.count(),
        "verification": latest(),
        "people": User.objects.filter(is_active=True).count(),
    }
    if settings.AUTH_LDAP_SERVER_URI:  # with a directory, local admins are the break-glass accounts
        context["break_glass"] = list(
            User.objects.filter(role=Role.ADMIN, source=Source.LOCAL, is_active=True).values_list("username", flat=True)
        )
    return context


def _used_since(user: User, since: datetime, department: bool) -> int:
    scope = Q(department_id=user.department_id) if department else Q(user=user)
    got = UsageRecord.objects.filter(scope, created_at__gte=since).aggregate(
        n=Sum("prompt_tokens") + Sum("completion_tokens")
    )
    return got["n"] or 0


def dept_user(user: User) -> dict[str, Any]:
    """Her models and whether each is served, and her use (and her department's) against the quotas."""
    now = timezone.localtime()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    active = list(grants.active_grants(user))
    quota = DepartmentQuota.objects.filter(department_id=user.department_id).first() if user.department_id else None
    # the tightest daily and monthly limit of her grants applies to each of her calls
    mine = grants.effective_limits(*active) if active else {}
    meters: list[dict[str, Any]] = []
    for label, since, field in (("today", day, "tokens_per_day"), ("this month", month, "tokens_per_month")):
        meters.append(
            {"label": f"My tokens {label}", "used": _used_since(user, since, False), "limit": mine.get(field)}
        )
        if quota is not None:
            meters.append(
                {
                    "label": f"Department tokens {label}",
                    "used": _used_since(user, since, True),
                    "limit": getattr(quota, field),
                }
            )
    for meter in meters:
        meter["pct"] = min(100, round(100 * meter["used"] / meter["limit"])) if meter["limit"] else None
    models = list(grants.callable_models(user))
    for model in models:
        model.ready_total = sum(d.ready for d in model.deployments.all())  # type: ignore[attr-defined]
        waking = [d for d in model.deployments.all() if d.wakes_on_call]  # scaled to zero when idle
        model.wakes = (  # type: ignore[attr-defined]
            "" if not waking else "waking" if any(d.replicas for d in waking) else "asleep"
        )
    return {
        "department": user.department,
        "models": models,
        "meters": meters,
        "keys": ApiKey.objects.filter(user=user, revoked_at__isnull=True, purpose=KeyPurpose.APP).count(),
        "pending": AccessRequest.objects.filter(requester=user, state=AccessRequestState.PENDING).count(),
        "grants_ending": min((g.expires_at for g in active), default=None),
    }


def auditor() -> dict[str, Any]:
    """Events per day over two weeks, refusals and denials over the last week, the last
    verification and the latest exports."""
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    start, week = today - timedelta(days=13), timezone.now() - timedelta(days=7)
    per_day = list(
        AuditEvent.objects.filter(created_at__gte=start)
        .annotate(t=TruncDay("created_at"))
        .values("t")
        .annotate(events=Count("seq"))
        .order_by("t")
    )
    recent = AuditEvent.objects.filter(created_at__gte=week)
    return {
        "per_day": _series(per_day, start, timedelta(days=1), 14, {"events": "events"}),
        "refused_calls": recent.filter(action="gateway.request", context__status__gte=400).count(),
        "denials": recent.filter(action="access.deny").count(),
        "failed_sign_ins": recent.filter(action="auth.login_failed").count(),
        "verification": latest(),
        "exports": list(AuditEvent.objects.filter(action="audit.export").order_by("-seq")[:5]),
    }
