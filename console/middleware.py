"""Request id and audit context for every HTTP request."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse

from audit import context as audit_context

_request_id: ContextVar[str] = ContextVar("request_id", default="-")
# A caller-supplied id is kept only if it looks like one (no log injection through the header).
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def current_request_id() -> str:
    return _request_id.get()


class RequestIdMiddleware:
    """Sets ``request.id`` (the caller's X-Request-ID if well-formed, else a new UUID) and echoes it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request.id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex  # type: ignore[attr-defined]
        token = _request_id.set(request.id)  # type: ignore[attr-defined]
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response["X-Request-ID"] = request.id  # type: ignore[attr-defined]
        return response


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class RefuseMalformedInputMiddleware:
    """A query or form value holding a NUL character is a 400 naming it: PostgreSQL text cannot
    hold one (a lookup with it raises), and no field here means one. JSON bodies: console.parsers.
    An API query parameter given twice is a 400 naming it too: every one the API documents holds a
    single value, and reading only the last would answer a question nobody asked."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        sources = [request.GET]
        if request.method == "POST" and request.content_type in FORM_TYPES:
            sources.append(request.POST)  # parsed once here; DRF reuses it (Request._parse)
        api = request.path.startswith("/api/")
        for source in sources:
            for key, values in source.lists():
                if "\x00" in key or any("\x00" in v for v in values):
                    raise BadRequest(f"{key.replace(chr(0), '')}: NUL characters (\\u0000) are not allowed.")
                if api and source is request.GET and len(values) > 1:
                    raise BadRequest(f"{key}: give this query parameter once, not {len(values)} times.")
        return self.get_response(request)


class AuditContextMiddleware:
    """Binds who/where for ``audit.record`` calls made while serving this request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with audit_context.bound(
            user=request.user if request.user.is_authenticated else None,
            source_ip=request.META.get("REMOTE_ADDR"),
            request_id=getattr(request, "id", ""),
            channel="api" if request.path.startswith("/api/") else "web",
        ):
            return self.get_response(request)


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class RefusalLogFilter(logging.Filter):
    """A refused request is the system working: Django logs a 403 with the PermissionDenied
    traceback, a malformed body with the parser's, which say nothing an operator needs. Keep the
    one line, drop the traceback (5xx keep theirs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if 400 <= getattr(record, "status_code", 0) < 500:
            record.exc_info, record.exc_text = None, None
        return True
