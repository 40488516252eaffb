from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from access.choices import Role
from access.permissions import role_required
from audit.filters import FilterError, TrailFilter
from audit.models import AuditEvent


@role_required(Role.ADMIN, Role.AUDITOR)
@require_GET
def trail(request: HttpRequest) -> HttpResponse:
    flt = TrailFilter.from_params(request.GET)
    try:
        events, next_before = flt.page()
    except FilterError as exc:
        return render(request, "audit/trail.html", {"filter": flt, "error": str(exc), "events": []}, status=400)
    older = None
    if next_before is not None:
        params = request.GET.copy()
        params["before"] = str(next_before)
        older = params.urlencode()
    actions = AuditEvent.objects.values_list("action", flat=True).distinct().order_by("action")[:200]
    return render(request, "audit/trail.html", {
        "filter": flt, "events": events, "older": older, "actions": actions,
        "live": not flt.active() and not flt.before,
    })
