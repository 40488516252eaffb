"""/api/usage/ and /api/usage/summary/."""

from __future__ import annotations

from functools import partial

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from access.people.permissions import AnyRole
from access.usage import queries
from console.actions import ServiceError
from console.filtering import CountedPaginator
from console.streaming import stream


@extend_schema(responses=OpenApiTypes.OBJECT)
@api_view(["GET"])
@permission_classes([IsAuthenticated, AnyRole])
def usage_rows(request):
    """Ledger rows you may see (see access.usage.scope), newest first; ?since=&until= (ISO dates),
    ?model=, ?department=, ?user=, ?scope=mine|department|all; ?export=csv streams them all as CSV."""
    try:
        criteria = queries.criteria(request.user, request.query_params)
    except ServiceError as exc:
        raise ValidationError({exc.field or "detail": exc.message}) from None
    qs = queries.rows_of(criteria)
    if request.query_params.get("export") == "csv":
        return stream(
            (line.encode() for line in queries.csv_lines(qs)),
            "text/csv",
            "usage.csv",
            asynchronous=hasattr(request._request, "scope"),
        )
    paginator = PageNumberPagination()
    paginator.django_paginator_class = partial(CountedPaginator, count=queries.count(criteria))
    page = paginator.paginate_queryset(qs.select_related("user", "department"), request)
    return paginator.get_paginated_response([queries.row_dict(r) for r in page])


@extend_schema(responses=OpenApiTypes.OBJECT)
@api_view(["GET"])
@permission_classes([IsAuthenticated, AnyRole])
def usage_summary(request):
    """Totals by day, department, model and user for the same filters as /api/usage/."""
    try:
        criteria = queries.criteria(request.user, request.query_params)
    except ServiceError as exc:
        raise ValidationError({exc.field or "detail": exc.message}) from None
    return Response(queries.summary(criteria) | {"scope": criteria.label})
