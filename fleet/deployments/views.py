"""Admin pages for deployments: list and create (with the planner's verdict before submit), detail
with instances, live log and serving metrics, and the actions."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from access.people.choices import Role
from access.people.permissions import role_required
from audit.models import AuditEvent
from console.actions import ServiceError, form_error
from console.filtering import list_page
from fleet.deployments import queries, services
from fleet.deployments.choices import InstanceState, Routing, ScaleMetric
from fleet.deployments.filtersets import DeploymentFilterSet, InstanceFilterSet
from fleet.deployments.forms import DeploymentEditForm, DeploymentForm
from fleet.deployments.models import Deployment, Instance
from fleet.deployments.serializers import AutoscaleSerializer, FallbackSerializer
from fleet.jobs.choices import JobKind
from fleet.jobs.forms import BenchmarkForm
from fleet.nodes.models import Node

PAGE_SIZE = 50
# A flash announcing a start is gone once the page shows the deployment past starting (see flash.js).
UNTIL_STARTED = '[data-testid="deployment-state"]:not([data-state="starting"])'
ACTIONS = {
    "start",
    "stop",
    "restart",
    "scale",
    "routing",
    "fallback",
    "autoscale",
    "update",
    "rollout",
    "rollback",
    "delete",
}


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def deployment_list(request: HttpRequest) -> HttpResponse:
    form = DeploymentForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                deployment = services.create(request.user, **form.service_kwargs())
            except ServiceError as exc:
                form_error(form, exc)
            else:
                messages.success(request, f"{deployment.name} is being deployed.", extra_tags=UNTIL_STARTED)
                return redirect("deployment-detail", pk=deployment.pk)
    filterset, page, list_status = list_page(request, DeploymentFilterSet, PAGE_SIZE)
    status = max(status, list_status)
    nodes: dict[int, list[Instance]] = {}
    for inst in Instance.objects.filter(deployment__in=list(page), state__in=InstanceState.LIVE).select_related("node"):
        nodes.setdefault(inst.deployment_id, []).append(inst)
    for d in page:
        d.live_instances = nodes.get(d.pk, [])
    context = {"page": page, "form": form, "filterset": filterset}
    return render(request, "fleet/deployments/deployments.html", context, status=status)


@role_required(Role.ADMIN)
def instance_list(request: HttpRequest) -> HttpResponse:
    """Every instance of every deployment, filtered by state, deployment or node."""
    filterset, page, status = list_page(request, InstanceFilterSet, PAGE_SIZE)
    return render(request, "fleet/deployments/instances.html", {"page": page, "filterset": filterset}, status=status)


@role_required(Role.ADMIN)
def deployment_check(request: HttpRequest) -> HttpResponse:
    """The planner's verdict for the create form, before anything is submitted (HTMX)."""
    form = DeploymentForm(request.GET)
    verdict, error = None, None
    if form.is_valid():
        kwargs = form.service_kwargs()
        try:
            _clean, verdict = services.check(**kwargs)
        except ServiceError as exc:
            error = exc.message
    else:
        error = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items())
    return render(request, "fleet/deployments/_deploy_verdict.html", {"verdict": verdict, "error": error})


@role_required(Role.ADMIN)
def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment.objects.select_related("model"), pk=pk)
    return deployment_page(request, deployment)


def deployment_page(
    request: HttpRequest, deployment: Deployment, *, benchmark_form: BenchmarkForm | None = None, status: int = 200
) -> HttpResponse:
    pk = deployment.pk
    instances = list(deployment.instances.select_related("node").order_by("-created_at")[:50])
    # the counts the list annotates, for the same state badge (fleet/deployments/_deployment_state.html)
    deployment.ready = sum(i.state == InstanceState.READY for i in instances)  # type: ignore[attr-defined]
    deployment.failed = sum(i.state == InstanceState.FAILED for i in instances)  # type: ignore[attr-defined]
    ids = [str(i.pk) for i in instances]
    history = AuditEvent.objects.filter(
        Q(target_type="fleet.deployment", target_id=str(pk)) | Q(target_type="fleet.instance", target_id__in=ids)
    ).order_by("-seq")[:50]
    partial = request.headers.get("HX-Request")
    template = "fleet/deployments/_instances.html" if partial else "fleet/deployments/deployment_detail.html"
    benchmarks = deployment.jobs.filter(kind=JobKind.BENCHMARK).order_by("-created_at")[:10]
    return render(
        request,
        template,
        {
            "deployment": deployment,
            "instances": instances,
            "history": history,
            "benchmark_form": benchmark_form or BenchmarkForm(),
            "benchmarks": benchmarks,
            "partial": bool(partial),
            "routing_choices": Routing.choices,
            "fallback_choices": Deployment.objects.exclude(pk=deployment.pk).values_list("pk", "name"),
            "metric_choices": ScaleMetric.choices,
            "replica_history": queries.replica_history(deployment),
            "edit_form": DeploymentEditForm(deployment=deployment),
            "revisions": deployment.revisions.select_related("created_by").order_by("-number")[:20],
        },
        status=status,
    )


def _fallback(value: str) -> Deployment | None:
    """The form's choice, by the API's own validator: blank for none, else an existing deployment."""
    body = FallbackSerializer(data={"fallback": _typed(value, int) if value else None})
    if not body.is_valid():
        raise ServiceError("Choose a deployment as the fallback, or none.", "fallback")
    return body.validated_data["fallback"]


def _typed(value: str, kind: type) -> Any:
    """A form's text as the JSON value the API takes; left as text when it is not one (the
    serializer then names the field)."""
    try:
        return kind(value)
    except ValueError:
        return value


def _autoscale(data: QueryDict) -> dict:
    """The form's settings, by the API's own validator (an unticked box is "off")."""
    kinds = {"scale_metric": str, "scale_target": float}
    given = [k for k in services.AUTOSCALE_FIELDS if k in data and k != "autoscale"]
    typed = {k: _typed(data.get(k, ""), kinds.get(k, int)) for k in given}
    body = AutoscaleSerializer(data=typed | {"autoscale": "autoscale" in data})
    if not body.is_valid():
        field, errors = next(iter(body.errors.items()))
        label = body.fields[field].label if field in body.fields else field
        raise ServiceError(f"{label}: {' '.join(map(str, errors))}", field)
    return body.validated_data


@role_required(Role.ADMIN)
@require_POST
def deployment_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    deployment = get_object_or_404(Deployment, pk=pk)
    if action not in ACTIONS:
        raise Http404(f"No action {action!r}.")
    until = ""  # what the page shows once the state this flash announces is over (flash.js)
    try:
        if action == "scale":
            try:
                replicas = int(request.POST.get("replicas", ""))
            except ValueError:
                raise ServiceError("Replicas must be a whole number.") from None
            until = UNTIL_STARTED if replicas > deployment.replicas else ""  # fewer: over at once
            services.scale(request.user, deployment, replicas)
        elif action == "routing":
            services.set_routing(request.user, deployment, request.POST.get("routing", ""))
        elif action == "fallback":
            services.set_fallback(request.user, deployment, _fallback(request.POST.get("fallback", "")))
        elif action == "autoscale":
            services.set_autoscale(request.user, deployment, _autoscale(request.POST))
        elif action == "update":
            form = DeploymentEditForm(request.POST, deployment=deployment)
            if not form.is_valid():
                field, errors = next(iter(form.errors.items()))
                raise ServiceError(f"{form[field].label}: {' '.join(map(str, errors))}", field)
            services.update(request.user, deployment, form.service_values())
        elif action == "rollout":
            services.rollout(request.user, deployment, request.POST.get("action", ""))
        elif action == "rollback":
            try:
                number = int(request.POST.get("revision", ""))
            except ValueError:
                raise ServiceError("Choose a revision to roll back to.", "revision") from None
            services.rollback(request.user, deployment, number)
        elif action == "delete":
            if request.POST.get("confirm_name") != deployment.name:
                raise ServiceError(f"Type the deployment's name “{deployment.name}” to delete it.")
            services.delete(request.user, deployment)
            messages.success(request, f"{deployment.name} deleted; its processes are being stopped.")
            return redirect("deployments")
        else:
            {"start": services.start, "stop": services.stop, "restart": services.restart}[action](
                request.user, deployment
            )
            until = UNTIL_STARTED if action == "start" else ""
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{deployment.name}: {action} requested.", extra_tags=until)
    return redirect("deployment-detail", pk=pk)


@role_required(Role.ADMIN)
@require_POST
def node_drain(request: HttpRequest, pk: int) -> HttpResponse:
    node = get_object_or_404(Node, pk=pk)
    moved = services.drain_node(request.user, node)
    messages.success(request, f"{node.name} drained: cordoned, {moved} instance(s) moving to other nodes.")
    return redirect("node-detail", pk=node.pk)
