from __future__ import annotations

from typing import Any, cast

from drf_spectacular.types import OpenApiTypes
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
from audit.serializers import AuditEventSerializer

_AUDIT_READERS: list[type[BasePermission]] = [IsAuthenticated, HasRole.of(Role.ADMIN, Role.AUDITOR)]


@extend_schema(
    parameters=[OpenApiParameter(f, str) for f in TrailFilter.__dataclass_fields__],
    responses=AuditEventSerializer(many=True),
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


@extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
@api_view(["GET", "POST"])
@permission_classes(_AUDIT_READERS)
def verify_chain(request: Request) -> Response:
    """Verify the chain now: from the last intact checkpoint, or (POST {"full": true}) from its start."""
    full = request.method == "POST" and cast("dict[str, Any]", request.data).get("full") in (True, "true", "1", 1)
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
