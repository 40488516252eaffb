from __future__ import annotations

import tempfile
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

import audit
from access.people.choices import READERS, Role
from access.people.permissions import role_required
from audit import exports, signing, verification
from audit.filters import FilterError, TrailFilter
from audit.models import AuditEvent
from console.streaming import stream

EXPORTS = {
    "csv": ("text/csv", "csv"),
    "jsonl": ("application/x-ndjson", "jsonl"),
    "pdf": ("application/pdf", "pdf"),
    "bundle": ("application/zip", "zip"),
}


def _seen(column: str) -> list[str]:
    """The values of ``column`` in the trail, for a filter's picker (a DISTINCT over the whole
    table: cached for five minutes)."""
    found = cache.get(f"audit:seen:{column}")
    if found is None:
        values = AuditEvent.objects.exclude(**{column: ""}).values_list(column, flat=True).distinct()
        found = list(values.order_by(column)[:300])
        cache.set(f"audit:seen:{column}", found, 300)
    return found


def _diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """Field by field, what an event changed: every key of either side, changed ones marked."""
    if not isinstance(before, dict) and not isinstance(after, dict):
        return []
    old, new = before if isinstance(before, dict) else {}, after if isinstance(after, dict) else {}
    return [
        {"key": key, "before": old.get(key, ""), "after": new.get(key, ""), "changed": old.get(key) != new.get(key)}
        for key in sorted(set(old) | set(new))
    ]


@role_required(*READERS)
@require_GET
def trail(request: HttpRequest) -> HttpResponse:
    flt = TrailFilter.from_params(request.GET)
    actions = _seen("action")
    context = {
        "filter": flt,
        "events": [],
        "actions": actions,
        "action_groups": sorted({a.split(".")[0] + "." for a in actions if "." in a}),
        "departments": _seen("actor_department"),
        "targets": _seen("target_type"),
        "roles": Role.choices,
        "narrowed": urlencode(flt.as_dict()),
        "last_run": verification.latest(),
        "public_key": signing.public_key_b64(),
        "fingerprint": signing.fingerprint(),
        "today": timezone.localdate().isoformat(),
    }
    try:
        events, next_before = flt.page(request.user)
    except FilterError as exc:
        return render(request, "audit/trail.html", context | {"error": str(exc)}, status=400)
    older = None
    if next_before is not None:
        params = request.GET.copy()
        params["before"] = str(next_before)
        older = params.urlencode()
    return render(
        request,
        "audit/trail.html",
        context | {"events": events, "older": older, "live": not flt.before and not flt.until},
    )


@role_required(*READERS)
@require_GET
def event_detail(request: HttpRequest, seq: int) -> HttpResponse:
    """Every field of one event, what it changed, and the events of the same request; a panel
    when the trail opens it in place, a page of its own when linked to."""
    event = get_object_or_404(AuditEvent.objects.visible_to(request.user), seq=seq)
    related = (
        list(
            AuditEvent.objects.visible_to(request.user)
            .filter(request_id=event.request_id)
            .exclude(seq=event.seq)
            .order_by("seq")[:20]
        )
        if event.request_id
        else []
    )
    template = "audit/_event_detail.html" if request.headers.get("HX-Request") else "audit/event.html"
    return render(
        request,
        template,
        {
            "event": event,
            "diff": _diff(event.before, event.after),
            "related": related,
            "context_items": sorted((event.context or {}).items()),
        },
    )


@role_required(*READERS)
@require_POST
def verify_now(request: HttpRequest) -> HttpResponse:
    full = request.POST.get("full") == "1"
    done = verification.run(full=full, requested_by=request.user.get_username())
    (messages.success if done.ok else messages.error)(
        request, f"{'Full' if full else 'Incremental'} verification: {done} ({done.checked} events checked)."
    )
    return redirect("audit-trail")


@role_required(*READERS)
@require_GET
def export(request: HttpRequest, kind: str) -> HttpResponse | StreamingHttpResponse:
    """?since=&until= (dates or date-times), and the trail's own filters for CSV, JSON Lines and
    the PDF (a saved filter becomes an export link). CSV and JSON Lines stream; the bundle is built in a
    temporary file (constant memory) and then sent."""
    if kind not in EXPORTS:
        return HttpResponse(f"Unknown export {kind!r}; use one of {', '.join(EXPORTS)}.", status=404)
    where = TrailFilter.from_params(request.GET)
    try:
        period = exports.Period.parse(request.GET.get("since", ""), request.GET.get("until", ""), where)
    except FilterError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    if kind == "bundle" and period.where is not None:  # its chain is checked offline: every event of the period
        return HttpResponse(
            "A signed bundle holds every event of its period, so that its chain can be checked; "
            "clear the filters (keep From and Until), or export these events as CSV, JSON Lines or PDF.",
            status=400,
            content_type="text/plain",
        )
    content_type, suffix = EXPORTS[kind]
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    filename = f"audit-{stamp}.{suffix}"
    audit.record(request.user, "audit.export", None, after={"format": kind, **period.as_dict()})
    asgi = hasattr(request, "scope")  # ASGIRequest; the test client's WSGIRequest has none
    if kind in ("csv", "jsonl"):
        lines = exports.csv_lines(period) if kind == "csv" else exports.jsonl_lines(period)
        return stream(lines, content_type, filename, asynchronous=asgi)
    if kind == "pdf":  # a summary: small, built whole
        response = HttpResponse(exports.pdf_report(period), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
    spool = tempfile.TemporaryFile()  # the bundle is built on disk, then sent a MiB at a time
    exports.write_bundle(period, spool)
    spool.seek(0)
    return stream(iter(lambda: spool.read(1 << 20), b""), content_type, filename, asynchronous=asgi)
