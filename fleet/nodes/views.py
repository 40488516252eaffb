"""Admin pages for nodes: the list (live), a node's detail (live charts, history), joining."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from access.people.choices import Role
from access.people.permissions import role_required
from console.actions import ServiceError, flash
from console.filtering import list_page
from fleet.nodes import queries, services
from fleet.nodes.filtersets import NodeFilterSet
from fleet.nodes.forms import JoinTokenForm
from fleet.nodes.models import JoinToken, Node
from fleet.protocol import telemetry

PAGE_SIZE = 50


@role_required(Role.ADMIN)
def node_list(request: HttpRequest) -> HttpResponse:
    filterset, page, status = list_page(request, NodeFilterSet, PAGE_SIZE)
    for node in page:
        node.summary = telemetry.summarize(node.last_sample)
    template = "fleet/nodes/_node_rows.html" if request.headers.get("HX-Request") else "fleet/nodes/nodes.html"
    return render(
        request, template, {"page": page, "filterset": filterset, "any_nodes": Node.objects.exists()}, status=status
    )


@role_required(Role.ADMIN)
def node_detail(request: HttpRequest, pk: int) -> HttpResponse:
    node = get_object_or_404(Node, pk=pk)
    range_name = request.GET.get("range", "hour")
    if range_name not in queries.RANGES:
        range_name = "hour"
    gpus = list(node.gpus.all())
    readings = {g["i"]: g for g in (node.last_sample or {}).get("gpus", [])}
    for gpu in gpus:
        gpu.reading = readings.get(gpu.index, {})  # type: ignore[attr-defined]  # for the template (g.reading)
    return render(
        request,
        "fleet/nodes/node_detail.html",
        {
            "node": node,
            "gpus": gpus,
            "range": range_name,
            "ranges": list(queries.RANGES),
            "history": queries.history(node, range_name),
            "host": (node.last_sample or {}).get("host", {}),
            "last_sample": node.last_sample or None,
        },
    )


@role_required(Role.ADMIN)
@require_POST
def node_cordon(request: HttpRequest, pk: int, cordon: bool) -> HttpResponse:
    node = get_object_or_404(Node, pk=pk)
    flash(
        request,
        lambda: services.set_cordon(request.user, node, cordon),
        f"{node.name} {'cordoned: no new placements' if cordon else 'uncordoned'}.",
    )
    return redirect("node-detail", pk=node.pk)


@role_required(Role.ADMIN)
@require_POST
def node_rotate(request: HttpRequest, pk: int) -> HttpResponse:
    node = get_object_or_404(Node, pk=pk)
    flash(
        request,
        lambda: services.rotate_credential(request.user, node),
        f"{node.name}'s agent gets a new credential now; the old one stops working.",
    )
    return redirect("node-detail", pk=node.pk)


@role_required(Role.ADMIN)
@require_POST
def node_runtime(request: HttpRequest, pk: int) -> HttpResponse:
    node = get_object_or_404(Node, pk=pk)
    engine, version = request.POST.get("engine", ""), request.POST.get("version", "").strip()
    flash(
        request,
        lambda: services.install_runtime(request.user, node, engine, version),
        f"{node.name} is installing {engine} {version}; its output streams below.",
    )
    return redirect("node-detail", pk=node.pk)


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def node_remove(request: HttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation; POST removes."""
    node = get_object_or_404(Node, pk=pk)
    if request.method == "POST":
        if request.POST.get("confirm_name") != node.name:
            messages.error(request, f"Type the node's name “{node.name}” to confirm.")
            return render(request, "fleet/nodes/node_remove.html", {"node": node}, status=400)
        services.remove_node(request.user, node)
        messages.success(request, f"Node {node.name} removed. Stop its agent, or it will be refused from now on.")
        return redirect("nodes")
    return render(request, "fleet/nodes/node_remove.html", {"node": node})


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def join(request: HttpRequest) -> HttpResponse:
    form = JoinTokenForm(request.POST or None)
    created, status = None, 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                token, plaintext = services.create_join_token(request.user, **form.cleaned_data)
            except ServiceError as exc:
                form.add_error(exc.field, exc.message)
            else:
                created, status, form = {"token": token, "plaintext": plaintext}, 201, JoinTokenForm()
    page = Paginator(JoinToken.objects.select_related("created_by", "used_by"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "fleet/nodes/join.html",
        {"form": form, "created": created, "page": page, "redis_hint": "redis://:<password>@<console-host>:6379/0"},
        status=status,
    )


@role_required(Role.ADMIN)
@require_POST
def join_token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(JoinToken, pk=pk)
    flash(request, lambda: services.revoke_join_token(request.user, token), f"Join token {token.prefix} revoked.")
    return redirect("node-join")
