"""Navigation per role, for the base template."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse
from redis.exceptions import RedisError

from access.gateway import ledger
from access.people.choices import Role
from audit.verification import latest

# (label, url name, roles that see it)
NAV: list[tuple[str, str, tuple[str, ...]]] = [
    ("Home", "home", (Role.ADMIN, Role.DEPT_USER, Role.AUDITOR, Role.NONE)),
    ("Nodes", "nodes", (Role.ADMIN,)),
    ("Models", "models", (Role.ADMIN,)),
    ("Deployments", "deployments", (Role.ADMIN,)),
    ("Jobs", "jobs", (Role.ADMIN,)),
    ("Access", "access-queue", (Role.ADMIN,)),
    ("My access", "my-access", (Role.DEPT_USER,)),
    ("Grants", "grants", (Role.AUDITOR,)),
    ("Usage", "usage", (Role.ADMIN, Role.DEPT_USER, Role.AUDITOR)),
    ("People", "people", (Role.ADMIN,)),
    ("Audit trail", "audit-trail", (Role.ADMIN, Role.AUDITOR)),
    ("API tokens", "tokens", (Role.ADMIN, Role.DEPT_USER, Role.AUDITOR)),
    ("API docs", "api-docs", (Role.ADMIN, Role.DEPT_USER, Role.AUDITOR)),
    ("Django admin", "admin:index", (Role.ADMIN,)),
]


def navigation(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav": []}
    path = request.path
    items = []
    for label, name, roles in NAV:
        if user.role in roles:
            url = reverse(name)
            active = path == url if url == "/" else path.startswith(url)
            items.append({"label": label, "url": url, "active": active})
    context: dict[str, Any] = {"nav": items, "role_label": Role(user.role).label}
    if user.role in (Role.ADMIN, Role.AUDITOR):  # a broken audit chain is shown on every page until fixed
        run = latest()
        context["audit_alert"] = run if run is not None and not run.ok else None
        try:
            context["ledger_alarm"] = ledger.backlog_alarm()
        except RedisError:
            context["ledger_alarm"] = None  # /healthz says Redis is away; the page still renders
    return context
