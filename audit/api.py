from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from access.choices import Role
from access.permissions import HasRole
from audit.chain import verify
from audit.filters import FilterError, TrailFilter
from audit.serializers import AuditEventSerializer

_AUDIT_READERS = [IsAuthenticated, HasRole.of(Role.ADMIN, Role.AUDITOR)]


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
        rows, next_before = flt.page()
    except FilterError as exc:
        raise ValidationError({"detail": str(exc)}) from None
    return Response({"results": AuditEventSerializer(rows, many=True).data, "next_before": next_before})


@extend_schema(responses={200: dict})
@api_view(["GET"])
@permission_classes(_AUDIT_READERS)
def verify_chain(request: Request) -> Response:
    """Walk the whole chain now and say whether it is intact."""
    return Response(verify().as_dict())
