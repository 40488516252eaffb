"""Navigation per role, grouped as the sidebar shows it, and the alerts every page carries."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse
from redis.exceptions import RedisError

from access.gateway import ledger
from access.grants.choices import AccessRequestState
from access.grants.models import AccessRequest
from access.people.choices import Role
from audit.verification import latest

ALL = (Role.ADMIN, Role.DEPT_USER, Role.AUDITOR)
# Groups of (label, url name, roles that see it), as the sidebar shows them.
NAV: list[tuple[str, list[tuple[str, str, tuple[str, ...]]]]] = [
    ("", [("Home", "home", (*ALL, Role.NONE))]),
    (
        "Fleet",
        [
            ("Nodes", "nodes", (Role.ADMIN,)),
            ("Models", "models", (Role.ADMIN,)),
            ("Deployments", "deployments", (Role.ADMIN,)),
            ("Jobs", "jobs", (Role.ADMIN,)),
        ],
    ),
    (
        "Access",
        [
            ("Access", "access-queue", (Role.ADMIN,)),
            ("My access", "my-access", (Role.DEPT_USER,)),
            ("Grants", "grants", (Role.AUDITOR,)),
            ("Playground", "playground", ALL),
        ],
    ),
    ("Observe", [("Usage", "usage", ALL), ("Audit trail", "audit-trail", (Role.ADMIN, Role.AUDITOR))]),
    (
        "Administration",
        [
            ("People", "people", (Role.ADMIN,)),
            ("API tokens", "tokens", ALL),
            ("API docs", "api-docs", ALL),
            ("Django admin", "admin:index", (Role.ADMIN,)),
        ],
    ),
]


def _waiting(user: Any) -> dict[str, int]:
    """Counts shown beside a link: what waits on this viewer."""
    if user.role == Role.ADMIN:
        return {"access-queue": AccessRequest.objects.filter(state=AccessRequestState.PENDING).count()}
    return {}


def navigation(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav": []}
    waiting = _waiting(user)
    groups: list[dict[str, Any]] = []
    for title, entries in NAV:
        items: list[dict[str, Any]] = [
            {"label": label, "url": reverse(name), "badge": waiting.get(name, 0)}
            for label, name, roles in entries
            if user.role in roles
        ]
        if items:
            groups.append({"title": title, "items": items})
    # the one link whose address is the longest start of this page's (My access is /access/, the
    # admins' queue /access/queue/)
    urls = [i["url"] for g in groups for i in g["items"] if request.path.startswith(i["url"])]
    current = max(urls, key=len, default=None)
    for item in (i for g in groups for i in g["items"]):
        item["active"] = item["url"] == current and (current != "/" or request.path == "/")
    context: dict[str, Any] = {"nav": groups, "role_label": Role(user.role).label}
    if user.role in (Role.ADMIN, Role.AUDITOR):  # a broken audit chain is shown on every page until fixed
        run = latest()
        context["audit_alert"] = run if run is not None and not run.ok else None
        try:
            context["ledger_alarm"] = ledger.backlog_alarm()
        except RedisError:
            context["ledger_alarm"] = None  # /healthz says Redis is away; the page still renders
    return context
