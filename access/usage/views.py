"""The usage page and its CSV."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render

from access.people.choices import READERS
from access.people.permissions import ANY_ROLE, role_required, signed_in_user
from access.usage import queries
from access.usage.forms import UsageFilterForm
from console.actions import ServiceError
from console.filtering import CountedPaginator
from console.streaming import stream

PAGE_SIZE = 25


def _usage_query(request: HttpRequest) -> tuple[UsageFilterForm, queries.Criteria]:
    form = UsageFilterForm(request.GET or None)
    params = {k: v for k, v in request.GET.dict().items() if v and k in UsageFilterForm.base_fields}
    if form.is_bound and not form.is_valid():
        raise ServiceError("; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items()))
    return form, queries.criteria(signed_in_user(request), params)


@role_required(*ANY_ROLE)
def usage_page(request: HttpRequest) -> HttpResponse:
    try:
        form, criteria = _usage_query(request)
    except ServiceError as exc:
        return render(
            request,
            "access/usage/usage.html",
            {"form": UsageFilterForm(request.GET), "error": exc.message},
            status=400,
        )
    summary = queries.summary(criteria)
    rows = queries.rows_of(criteria).select_related("user", "department")
    page = CountedPaginator(rows, PAGE_SIZE, count=summary["requests"]).get_page(request.GET.get("page"))
    return render(
        request,
        "access/usage/usage.html",
        {
            "form": form,
            "summary": summary,
            "label": criteria.label,
            "page": page,
            "query": request.GET.urlencode(),
            "wide": signed_in_user(request).has_role(*READERS),
        },
    )


@role_required(*ANY_ROLE)
def usage_csv(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    try:
        _form, criteria = _usage_query(request)
    except ServiceError as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain")
    return stream(
        (line.encode() for line in queries.csv_lines(queries.rows_of(criteria))),
        "text/csv",
        "usage.csv",
        asynchronous=hasattr(request, "scope"),
    )
