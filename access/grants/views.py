"""UI for model access: a department user's own page, the admins' request queue, grants, keys, usage."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from access.grants import services
from access.grants.filtersets import AccessRequestFilterSet, ApiKeyFilterSet, GrantFilterSet
from access.grants.forms import AccessRequestForm, ApiKeyForm, DecisionForm, GrantForm
from access.grants.models import AccessRequest, ApiKey, Grant
from access.people.choices import Role
from access.people.permissions import ANY_ROLE, role_required, signed_in_user
from console.actions import ServiceError, flash
from console.filtering import list_page

PAGE_SIZE = 25


@role_required(Role.DEPT_USER)
@require_http_methods(["GET", "POST"])
def my_access(request: HttpRequest) -> HttpResponse:
    """Grants, requests and keys of the signed-in department user; POST ?form=request|key."""
    user, which, created, status = signed_in_user(request), request.GET.get("form"), None, 200
    active = services.active_grants(user)
    request_form = AccessRequestForm(request.POST if which == "request" else None)
    key_form = ApiKeyForm(request.POST if which == "key" else None, grants_qs=active)
    if request.method == "POST":
        status = 400
        try:
            if which == "request" and request_form.is_valid():
                d = request_form.cleaned_data
                services.request_access(
                    user,
                    models=list(d["models"]),
                    justification=d["justification"],
                    duration_days=d["duration_days"],
                    for_department=d["for_department"],
                )
                messages.success(request, "Request sent; you will see the decision here.")
                return redirect("my-access")
            if which == "key" and key_form.is_valid():
                d = key_form.cleaned_data
                key, plaintext = services.create_key(
                    user,
                    grant=d["grant"],
                    name=d["name"],
                    expires_in_days=d["expires_in_days"],
                    limits=key_form.limits(),
                )
                created, status, key_form = {"key": key, "plaintext": plaintext}, 201, ApiKeyForm(grants_qs=active)
        except ServiceError as exc:
            (request_form if which == "request" else key_form).add_error(
                exc.field if exc.field in ("models", "justification", "duration_days", "name", "grant") else None,
                exc.message,
            )
    requests_ = AccessRequest.objects.filter(requester=user).select_related("decided_by").prefetch_related("models")
    keys = list(ApiKey.objects.filter(user=user).select_related("grant").prefetch_related("models")[:100])
    for key in keys:  # the quota shown is the one enforced: the tighter of key and grant
        key.effective = services.effective_limits(key, key.grant)  # type: ignore[attr-defined]
    return render(
        request,
        "access/grants/mine.html",
        {
            "grants": GrantFilterSet.visible(user).order_by("-expires_at")[:50],
            "request_form": request_form,
            "key_form": key_form,
            "requests": requests_[:50],
            "created": created,
            "keys": keys,
            "callable": services.callable_models(user),
            "base_url": request.build_absolute_uri("/v1"),
            "now": timezone.now(),
        },
        status=status,
    )


@role_required(Role.DEPT_USER)
@require_POST
def withdraw(request: HttpRequest, pk: int) -> HttpResponse:
    user = signed_in_user(request)
    target = get_object_or_404(AccessRequest, pk=pk, requester=user)
    flash(request, lambda: services.withdraw(user, target), f"Request #{pk} withdrawn.")
    return redirect("my-access")


@role_required(Role.DEPT_USER, Role.ADMIN)
@require_POST
def revoke_key(request: HttpRequest, pk: int) -> HttpResponse:
    user = signed_in_user(request)
    qs = ApiKey.objects.all() if user.is_fleet_admin else ApiKey.objects.filter(user=user)
    key = get_object_or_404(qs, pk=pk)
    flash(
        request,
        lambda: services.revoke_key(user, key),
        f"Key “{key.name}” revoked; calls with it are refused from now on.",
    )
    next_url = request.POST.get("next")
    return redirect(next_url if next_url in ("/access/keys/",) else "my-access")


@role_required(Role.ADMIN)
def queue(request: HttpRequest) -> HttpResponse:
    """Pending requests first (live), then the decided ones; ?state= filters the history."""
    state = request.GET.get("state", "")
    visible = AccessRequestFilterSet.visible(request.user)
    pending = visible.filter(state=AccessRequest.State.PENDING).order_by("created_at")
    filterset = AccessRequestFilterSet(request.GET, queryset=visible.exclude(state=AccessRequest.State.PENDING))
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "access/grants/queue.html",
        {
            "pending": pending,
            "page": page,
            "state": state,
            "states": AccessRequest.State.choices,
            "form": DecisionForm(),
        },
    )


@role_required(Role.ADMIN)
@require_POST
def decide(request: HttpRequest, pk: int, decision: str) -> HttpResponse:
    target = get_object_or_404(AccessRequest, pk=pk)
    form = DecisionForm(request.POST)
    if decision not in ("approve", "deny") or not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items()) or "Unknown decision."
        messages.error(request, f"Request #{pk} not decided: {errors}")
        return redirect("access-queue")
    d = form.cleaned_data
    try:
        if decision == "approve":
            services.approve(
                signed_in_user(request),
                target,
                reason=d["reason"],
                duration_days=d["duration_days"],
                limits=form.limits(),
            )
        else:
            services.deny(signed_in_user(request), target, reason=d["reason"])
    except ServiceError as exc:
        messages.error(request, f"Request #{pk} not decided: {exc.message}")
    else:
        done = {"approve": "approved", "deny": "denied"}[decision]
        messages.success(request, f"Request #{pk} by {target.requester} {done}.")
    return redirect("access-queue")


@role_required(*ANY_ROLE)
@require_http_methods(["GET", "POST"])
def grant_list(request: HttpRequest) -> HttpResponse:
    """The grants you may see (all for admins and auditors); ?show=active|expiring|ended|all; ?q=
    searches holders and models. Admins grant directly."""
    form = GrantForm(request.POST or None) if signed_in_user(request).is_fleet_admin else None
    status = 200
    if request.method == "POST":
        if form is None:
            return HttpResponse("Only admins grant access.", status=403)
        if form.is_valid():
            d = form.cleaned_data
            try:
                grant = services.create_grant(
                    signed_in_user(request),
                    user=d["user"],
                    department=d["department"],
                    models=list(d["models"]),
                    duration_days=d["duration_days"],
                    limits=form.limits(),
                    note=d["note"],
                )
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Granted: {grant}.")
                return redirect("grants")
        status = 400
    filterset, page, list_status = list_page(request, GrantFilterSet, PAGE_SIZE)
    return render(
        request,
        "access/grants/grants.html",
        {
            "page": page,
            "filterset": filterset,
            "form": form,
            "now": timezone.now(),
            "expiring_count": GrantFilterSet.visible(request.user)
            .filter(pk__in=services.expiring().values("pk"))
            .count(),
        },
        status=max(status, list_status),
    )


@role_required(Role.ADMIN)
@require_POST
def revoke_grant(request: HttpRequest, pk: int) -> HttpResponse:
    grant = get_object_or_404(Grant, pk=pk)
    flash(
        request,
        lambda: services.revoke_grant(signed_in_user(request), grant),
        f"Grant #{pk} revoked; its keys are refused from now on.",
    )
    return redirect("grants")


@role_required(*ANY_ROLE)
def key_list(request: HttpRequest) -> HttpResponse:
    """Gateway keys, metadata only: everyone's for admins and auditors, a department user's own;
    ?q= user or key name/prefix, ?show=active|revoked|all, ?user=."""
    filterset, page, status = list_page(request, ApiKeyFilterSet, PAGE_SIZE)
    return render(
        request, "access/grants/keys.html", {"page": page, "filterset": filterset, "now": timezone.now()}, status=status
    )


@role_required(*ANY_ROLE)
def request_list(request: HttpRequest) -> HttpResponse:
    """Access requests: everyone's for admins and auditors, a department user's own; ?state=, ?q=."""
    filterset, page, status = list_page(request, AccessRequestFilterSet, PAGE_SIZE)
    return render(request, "access/grants/requests.html", {"page": page, "filterset": filterset}, status=status)
