"""Usage summaries read hourly rollups (kept by a database trigger) plus the rows at each end of the
range: the figures must equal what the rows themselves add up to, for every role and filter."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import pytest
from django.db.models import Count, Q, Sum
from django.utils import timezone

from access.people.choices import Role
from access.people.models import Department
from access.usage import queries
from access.usage.models import UsageRecord, UsageRollup
from tests.conftest import make_user


@pytest.fixture
def ledger(db, people, department):
    other = Department.objects.create(name="Oncology", slug="oncology")
    colleague = make_user("colleague", Role.DEPT_USER, department)
    stranger = make_user("stranger", Role.DEPT_USER, other)
    now = timezone.now()
    rows = []
    for i in range(900):  # ~105 hours back, at odd minutes, some refused, some streamed
        user = (people["dept_user"], colleague, stranger, people["admin"])[i % 4]
        rows.append(
            UsageRecord(
                created_at=now - timedelta(minutes=7 * i + 3),
                user=user,
                department=user.department,
                model=("chat-a", "chat-b")[i % 3 == 0],
                endpoint="chat",
                status=200 if i % 9 else 429,
                prompt_tokens=i % 17,
                completion_tokens=i % 5,
                latency_ms=10 + i % 13,
                ttft_ms=(5 + i % 7) if i % 2 else None,
                input_sha256="0" * 64,
                request_id=secrets.token_hex(8),
            )
        )
    UsageRecord.objects.bulk_create(rows[:350])  # two statements: the trigger adds to existing buckets
    UsageRecord.objects.bulk_create(rows[350:])
    return now


def _from_rows(c: queries.Criteria) -> dict:
    qs = queries.rows_of(c).order_by()
    t = qs.aggregate(
        n=Count("id"), p=Sum("prompt_tokens"), k=Sum("completion_tokens"), refused=Count("id", filter=~Q(status=200))
    )
    by_model = {r["model"]: r["n"] for r in qs.values("model").annotate(n=Count("id"))}
    by_user = {r["user__username"]: r["n"] for r in qs.values("user__username").annotate(n=Count("id"))}
    return {
        "requests": t["n"],
        "prompt_tokens": t["p"] or 0,
        "completion_tokens": t["k"] or 0,
        "refused": t["refused"],
        "by_model": by_model,
        "by_user": by_user,
    }


def _from_summary(s: dict) -> dict:
    return {
        "requests": s["requests"],
        "prompt_tokens": s["prompt_tokens"],
        "completion_tokens": s["completion_tokens"],
        "refused": s["refused"],
        "by_model": {r["model"]: r["requests"] for r in s["by_model"]},
        "by_user": {r["user"]: r["requests"] for r in s["by_user"]},
    }


def _iso(at: datetime) -> str:
    return at.isoformat()


@pytest.mark.parametrize("who", ["admin", "auditor", "dept_user", "outsider"])
@pytest.mark.parametrize(
    "window",
    # hours from now; None: the default 30 days. Whole days, whole hours and minutes at each end.
    [None, (-20, 0), (-100, -1.2), (-90, -30), (-3.3, -2.9), (-30, -29.99)],
)
@pytest.mark.parametrize("extra", [{}, {"model": "chat-b"}, {"scope": "mine"}, {"scope": "department"}])
def test_summaries_from_rollups_equal_the_rows(ledger, people, who, window, extra):
    user = people[who]
    params = dict(extra)
    if window is not None:
        params |= {
            "since": _iso(ledger + timedelta(hours=window[0])),
            "until": _iso(ledger + timedelta(hours=window[1])),
        }
    try:
        c = queries.criteria(user, params)
    except queries.ServiceError:
        assert who in ("admin", "auditor", "outsider") and extra.get("scope") == "department"  # in no department
        return
    expected = _from_rows(c)
    assert _from_summary(queries.summary(c)) == expected
    assert queries.count(c) == expected["requests"]


def test_the_trigger_keeps_one_rollup_per_bucket(ledger):
    buckets = list(UsageRollup.objects.values_list("period", "start", "user_id", "department_id", "model"))
    assert len(set(buckets)) == len(buckets)
    for period in UsageRollup.Period.values:
        total = sum(UsageRollup.objects.filter(period=period).values_list("requests", flat=True))
        assert total == UsageRecord.objects.count() == 900


def test_retention_prunes_rows_and_keeps_the_totals(ledger, people):
    c = queries.criteria(people["admin"], {})
    before = queries.summary(c)
    assert queries.prune(0) == 0
    pruned = queries.prune(1, batch=50)  # rows older than a day go, in batches
    assert pruned > 0 and not UsageRecord.objects.filter(created_at__lt=ledger - timedelta(days=1, minutes=1)).exists()
    after = queries.summary(c)
    assert (after["requests"], after["prompt_tokens"]) == (before["requests"], before["prompt_tokens"])
