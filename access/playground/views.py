"""The playground page; the page itself calls the gateway (static/js/playground.js)."""

from __future__ import annotations

from dataclasses import asdict

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from access.people.permissions import ANY_ROLE, role_required, signed_in_user
from access.playground import services


@never_cache  # the page holds its viewer's playground keys: no cache keeps a copy
@role_required(*ANY_ROLE)
def playground(request: HttpRequest) -> HttpResponse:
    choices = services.choices(signed_in_user(request))
    return render(
        request,
        "access/playground/playground.html",
        {
            "choices": [asdict(c) for c in choices],
            "base_url": request.build_absolute_uri("/v1"),
            "preset": request.GET.get("model", ""),  # selected in the first pane as the page is drawn
        },
    )
