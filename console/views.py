"""Home per role, health check, error pages (JSON under /api/)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import BadRequest
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from access.gateway import ledger
from access.people.choices import Role
from access.people.permissions import signed_in_user
from audit.models import AuditEvent
from console import dashboards
from console.supervisor import SUPERVISOR_STATE, read_state

RECENT_EVENTS = 25


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    user = signed_in_user(request)
    context: dict[str, Any]
    if user.role == Role.ADMIN:
        context = dashboards.admin()
        context["node_count"] = sum(context["nodes_by_state"].values())
        return render(request, "home/admin.html", context)
    if user.role == Role.DEPT_USER:
        return render(request, "home/dept_user.html", dashboards.dept_user(user))
    if user.role == Role.AUDITOR:
        context = dashboards.auditor() | {"events": AuditEvent.objects.all()[:RECENT_EVENTS]}
        return render(request, "home/auditor.html", context)
    return render(request, "home/no_role.html", status=200)


def _checks() -> dict[str, str]:
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        cache.set("healthz", "1", 5)
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {type(exc).__name__}"
    return checks


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and a report: database and Redis answer; the usage ledger's backlog; and, under
    `make run`, each supervised part's state and restarts."""
    checks: dict[str, Any] = _checks()
    ok = all(v == "ok" for v in checks.values())
    if checks["redis"] == "ok":
        waiting = ledger.backlog()
        alarm = waiting > settings.FLEET_LEDGER_BACKLOG_ALARM
        checks["ledger"] = {"backlog": waiting, "state": "alarm" if alarm else "ok"}
    state = read_state(settings.DATA_DIR / SUPERVISOR_STATE)
    if state is not None:
        checks["parts"] = {
            name: {"state": part["state"], "restarts": part["restarts"]} for name, part in state["parts"].items()
        }
    return JsonResponse({"status": "ok" if ok else "degraded", **checks}, status=200 if ok else 503)


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: can this process serve (database and Redis reachable)?"""
    checks = _checks()
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"ready": ok, **checks}, status=200 if ok else 503)


def _error(status: int, title: str, message: str):
    def view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        detail = message
        if exception is not None and str(exception) and (status == 403 or type(exception) is BadRequest):
            detail = str(exception)
        if request.path.startswith("/api/") or request.path.startswith("/v1/"):
            return JsonResponse({"detail": detail, "status": status}, status=status)
        return render(request, "error.html", {"status": status, "title": title, "message": detail}, status=status)

    return view


bad_request = _error(400, "Bad request", "The request could not be understood. Check the address and the form.")
permission_denied = _error(403, "Not allowed", "Your role does not give access to this page.")
page_not_found = _error(404, "Not found", "There is nothing at this address. Check it, or go back home.")
server_error = _error(500, "Something went wrong", "The error was logged. Try again, or tell an admin the request id.")
