from __future__ import annotations

import tempfile

from django.contrib import messages
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

import audit
from access.people.choices import READERS
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


def _actions() -> list[str]:
    """The actions seen, for the filter's suggestions (a DISTINCT over the whole table: cached)."""
    found = cache.get("audit:actions")
    if found is None:
        found = list(AuditEvent.objects.values_list("action", flat=True).distinct().order_by("action")[:200])
        cache.set("audit:actions", found, 300)
    return found


@role_required(*READERS)
@require_GET
def trail(request: HttpRequest) -> HttpResponse:
    flt = TrailFilter.from_params(request.GET)
    context = {
        "filter": flt,
        "events": [],
        "actions": _actions(),
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
    """?since=&until= (dates or date-times). CSV and JSON Lines stream; the bundle is built in a
    temporary file (constant memory) and then sent."""
    if kind not in EXPORTS:
        return HttpResponse(f"Unknown export {kind!r}; use one of {', '.join(EXPORTS)}.", status=404)
    try:
        period = exports.Period.parse(request.GET.get("since", ""), request.GET.get("until", ""))
    except FilterError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
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
