"""REST API plumbing: JSON errors, their place in the OpenAPI document, and the /api/me endpoint."""

from __future__ import annotations

from typing import Any

from django.db.models import ProtectedError, RestrictedError
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from access.people.serializers import UserSerializer
from console.actions import ServiceError

# Validation codes that depend on what the database holds rather than on the request's shape: a
# schema-valid request naming a missing object or a taken name conflicts with the current state.
STATE_CODES = frozenset({"does_not_exist", "unique"})

# What any operation may answer besides its success, as the exception handler words it.
ERROR_STATUSES = {
    "400": "The request is malformed: a field is missing, of the wrong type or out of bounds (see errors).",
    "401": "No credentials, or a revoked or expired token.",
    "403": "Your role may not do this.",
    "404": "No such object, or not one you may see; or a page past the last.",
    "409": "Well formed, but the current state refuses it: a missing or taken reference, or a rule (see errors).",
}
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch"})
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "status": {"type": "integer"},
        "errors": {"type": "object", "additionalProperties": True, "description": "Messages by field."},
    },
    "required": ["detail", "status"],
}


def _codes_all_state(codes: Any) -> bool:
    if isinstance(codes, dict):
        return bool(codes) and all(_codes_all_state(c) for c in codes.values())
    if isinstance(codes, list):
        return bool(codes) and all(_codes_all_state(c) for c in codes)
    return codes in STATE_CODES


def _dependents(exc: ProtectedError | RestrictedError) -> str:
    objs = list(exc.protected_objects if isinstance(exc, ProtectedError) else exc.restricted_objects)
    kinds = sorted({str(o._meta.verbose_name_plural) for o in objs})
    return f"{len(objs)} {' and '.join(kinds)}"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every API error is ``{"detail": "...", "status": N}``; field errors add ``errors``. A malformed
    request is a 400; a well-formed one the current state refuses (a service's refusal, a missing or
    taken reference, a delete others depend on) is a 409 naming the field or the dependents."""
    conflict = False
    if isinstance(exc, ServiceError):
        exc, conflict = ValidationError({exc.field or "detail": exc.message}), True
    elif isinstance(exc, ProtectedError | RestrictedError):
        exc, conflict = ValidationError({"detail": f"In use by {_dependents(exc)}; remove those first."}), True
    elif isinstance(exc, ValidationError) and _codes_all_state(exc.get_codes()):
        conflict = True
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if conflict:
        response.status_code = status.HTTP_409_CONFLICT
    data = response.data
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        text = " ".join(str(d) for d in detail) if isinstance(detail, list) else str(detail)
        body = {"detail": text, "status": response.status_code}
    else:
        if not isinstance(data, dict):  # a body of the wrong type: the serializer names no field
            data = {"non_field_errors": data}
        body = {"detail": "Some fields are invalid; see errors.", "status": response.status_code, "errors": data}
    response.data = body
    return response


def declare_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular hook: declare the error statuses on every operation, each with the error
    body's schema, so the document names every status the API can answer."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path in result.get("paths", {}).values():
        for method, operation in path.items():
            if method not in HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for code, description in ERROR_STATUSES.items():
                responses.setdefault(
                    code, {"description": description, "content": {"application/json": {"schema": ref}}}
                )
    return result


def close_requests(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular hook: a request body names every field it may hold (``additionalProperties:
    false``), as the serializers enforce (console.serializers); responses stay open to additions.
    Closed: every component a request body refers to, and those they refer to."""
    components = result.get("components", {}).get("schemas", {})
    pending = [
        media.get("schema", {})
        for path in result.get("paths", {}).values()
        for method, operation in path.items()
        if method in HTTP_METHODS
        for media in operation.get("requestBody", {}).get("content", {}).values()
    ]
    seen: set[str] = set()
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in seen and name in components:
                    seen.add(name)
                    pending.append(components[name])
            else:
                pending.extend(node.values())
    for name in seen:
        schema = components[name]
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    return result


@extend_schema(responses=UserSerializer)
@api_view(["GET"])
def me(request: Request) -> Response:
    """Who am I: user, role and department."""
    return Response(UserSerializer(request.user).data)
