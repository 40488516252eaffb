from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from access.people.choices import Role
from access.people.permissions import HasRole
from audit import verification
from audit.filters import FilterError, TrailFilter
from audit.serializers import (
    AuditEventPageSerializer,
    AuditEventSerializer,
    VerificationSerializer,
    VerifyRequestSerializer,
)

_AUDIT_READERS: list[type[BasePermission]] = [IsAuthenticated, HasRole.of(Role.ADMIN, Role.AUDITOR)]


_WHEN = {
    "anyOf": [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"},
        {"type": "string", "maxLength": 0},  # a blank form field: no bound
    ]
}
_PARAMETER_TYPES: dict[str, Any] = {
    "since": _WHEN,
    "until": _WHEN,
    "role": {"anyOf": [{"type": "string", "enum": Role.values}, {"type": "string", "maxLength": 0}]},
    "before": {  # blank, as the page's own links send it: the first page
        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "maxLength": 0}],
        "description": "the previous page's next_before",
    },
}


@extend_schema(
    parameters=[OpenApiParameter(f, _PARAMETER_TYPES.get(f, str)) for f in TrailFilter.__dataclass_fields__],
    responses=AuditEventPageSerializer,
)
@api_view(["GET"])
@permission_classes(_AUDIT_READERS)
def events(request: Request) -> Response:
    """The trail, newest first; ``next_before`` is the cursor for the next page."""
    flt = TrailFilter.from_params(request.query_params)
    try:
        rows, next_before = flt.page(request.user)
    except FilterError as exc:
        raise ValidationError({"detail": str(exc)}) from None
    return Response({"results": AuditEventSerializer(rows, many=True).data, "next_before": next_before})


@extend_schema(request=VerifyRequestSerializer, responses=VerificationSerializer)
@api_view(["GET", "POST"])
@permission_classes(_AUDIT_READERS)
def verify_chain(request: Request) -> Response:
    """Verify the chain now: from the last intact checkpoint, or (POST {"full": true}) from its start."""
    asked = VerifyRequestSerializer(data=request.data if request.method == "POST" else {})
    asked.is_valid(raise_exception=True)
    full = asked.validated_data["full"]
    done = verification.run(full=full, requested_by=request.user.get_username())
    return Response(
        {
            "ok": done.ok,
            "checked": done.checked,
            "from_seq": done.from_seq,
            "intact_up_to": done.intact_up_to,
            "broken_seq": done.broken_seq,
            "problem": done.problem,
            "full": done.full,
            "summary": str(done),
        }
    )
