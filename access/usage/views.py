"""The usage page and its CSV."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render

from access.people.choices import READERS
from access.people.permissions import ANY_ROLE, role_required, signed_in_user
from access.usage import queries
from access.usage.forms import UsageFilterForm
from console.actions import ServiceError
from console.streaming import stream

PAGE_SIZE = 25


def _usage_query(request: HttpRequest):
    form = UsageFilterForm(request.GET or None)
    params = {k: v for k, v in request.GET.dict().items() if v and k in UsageFilterForm.base_fields}
    if form.is_bound and not form.is_valid():
        raise ServiceError("; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items()))
    qs, label = queries.filtered(signed_in_user(request), params)
    return form, qs, label


@role_required(*ANY_ROLE)
def usage_page(request: HttpRequest) -> HttpResponse:
    try:
        form, qs, label = _usage_query(request)
    except ServiceError as exc:
        return render(
            request,
            "access/usage/usage.html",
            {"form": UsageFilterForm(request.GET), "error": exc.message},
            status=400,
        )
    page = Paginator(qs.select_related("user", "department"), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "access/usage/usage.html",
        {
            "form": form,
            "summary": queries.summary(qs),
            "label": label,
            "page": page,
            "query": request.GET.urlencode(),
            "wide": signed_in_user(request).has_role(*READERS),
        },
    )


@role_required(*ANY_ROLE)
def usage_csv(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    try:
        _form, qs, _label = _usage_query(request)
    except ServiceError as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain")
    return stream(
        (line.encode() for line in queries.csv_lines(qs)),
        "text/csv",
        "usage.csv",
        asynchronous=hasattr(request, "scope"),
    )
