"""REST API plumbing: JSON errors and the /api/me endpoint."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from access.people.serializers import UserSerializer
from console.actions import ServiceError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every API error is ``{"detail": "...", "status": N}``; validation errors add ``errors``. A
    service's refusal (ServiceError) is a 400 naming its field, the same as a serializer's."""
    if isinstance(exc, ServiceError):
        exc = ValidationError({exc.field or "detail": exc.message})
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        text = " ".join(str(d) for d in detail) if isinstance(detail, list) else str(detail)
        body = {"detail": text, "status": response.status_code}
    else:
        body = {"detail": "Some fields are invalid; see errors.", "status": response.status_code, "errors": data}
    response.data = body
    return response


@extend_schema(responses=UserSerializer)
@api_view(["GET"])
def me(request: Request) -> Response:
    """Who am I: user, role and department."""
    return Response(UserSerializer(request.user).data)
