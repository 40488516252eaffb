"""Admin pages for registered models and the "Will it fit?" planner."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from access.people.choices import Role
from access.people.permissions import role_required
from console.actions import ServiceError, flash, form_error
from console.filtering import list_page
from fleet.catalog import services
from fleet.catalog.filtersets import ModelFilterSet
from fleet.catalog.forms import FitForm, ModelEditForm, ModelRegisterForm
from fleet.catalog.models import ModelArtifact
from fleet.catalog.queries import fit_spec
from fleet.jobs.forms import QuantizeForm
from fleet.nodes import queries
from fleet.planning import placement
from fleet.planning.estimator import EstimateError, size

PAGE_SIZE = 50


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def model_list(request: HttpRequest) -> HttpResponse:
    form = ModelRegisterForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                artifact = services.register(
                    request.user,
                    path=data["path"],
                    name=data["name"],
                    parent=data["parent"],
                    license=data["license"],
                    notes=data["notes"],
                    tags=data["tags"],
                    sensitivity=data["sensitivity"],
                )
            except ServiceError as exc:
                form_error(form, exc)
            else:
                messages.success(request, f"Registered {artifact.name}; checksums are being computed.")
                return redirect("model-detail", pk=artifact.pk)
    filterset, page, list_status = list_page(request, ModelFilterSet, PAGE_SIZE)
    return render(
        request,
        "fleet/catalog/models.html",
        {"page": page, "form": form, "filterset": filterset},
        status=max(status, list_status),
    )


def _tree(artifact: ModelArtifact, depth: int = 0) -> list[tuple[int, ModelArtifact]]:
    """The variants under a model, depth first (quantized from quantized is rare but allowed)."""
    rows = []
    for child in artifact.variants.order_by("name"):
        rows.append((depth, child))
        if depth < 4:
            rows.extend(_tree(child, depth + 1))
    return rows


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    artifact = get_object_or_404(ModelArtifact.objects.select_related("parent"), pk=pk)
    initial = {
        "license": artifact.license,
        "sensitivity": artifact.sensitivity,
        "tags": ", ".join(artifact.tags),
        "notes": artifact.notes,
    }
    form = ModelEditForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                services.update(request.user, artifact, **form.cleaned_data)
            except ServiceError as exc:
                form_error(form, exc)
            else:
                messages.success(request, "Saved.")
                return redirect("model-detail", pk=artifact.pk)
    return model_page(request, artifact, form=form, status=status)


def model_page(
    request: HttpRequest,
    artifact: ModelArtifact,
    *,
    form: ModelEditForm | None = None,
    quantize_form: QuantizeForm | None = None,
    status: int = 200,
) -> HttpResponse:
    if form is None:
        form = ModelEditForm(
            initial={
                "license": artifact.license,
                "sensitivity": artifact.sensitivity,
                "tags": ", ".join(artifact.tags),
                "notes": artifact.notes,
            }
        )
    recent = artifact.jobs.select_related("node", "variant").order_by("-created_at")[:10]
    return render(
        request,
        "fleet/catalog/model_detail.html",
        {
            "model": artifact,
            "files": artifact.files.all(),
            "variants": _tree(artifact),
            "form": form,
            "quantize_form": quantize_form or QuantizeForm(),
            "jobs": recent,
        },
        status=status,
    )


@role_required(Role.ADMIN)
@require_POST
def model_checksum(request: HttpRequest, pk: int) -> HttpResponse:
    artifact = get_object_or_404(ModelArtifact, pk=pk)
    flash(request, lambda: services.request_checksums(request.user, artifact), "Checksums are being computed again.")
    return redirect("model-detail", pk=pk)


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def model_unregister(request: HttpRequest, pk: int) -> HttpResponse:
    artifact = get_object_or_404(ModelArtifact, pk=pk)
    if request.method == "POST":
        try:
            services.forget(request.user, artifact)
        except ServiceError as exc:
            messages.error(request, exc.message)
            return redirect("model-detail", pk=pk)
        messages.success(request, f"{artifact.name} unregistered; its files stay on disk.")
        return redirect("models")
    return render(request, "fleet/catalog/model_unregister.html", {"model": artifact})


@role_required(Role.ADMIN)
def fit(request: HttpRequest) -> HttpResponse:
    """Will it fit? Per node and GPU, with the memory breakdown that explains the verdict."""
    asked = set(request.GET) - {"model"}  # ?model=<id> alone (the model page's button) preselects it
    form = FitForm(request.GET if asked else None, initial={"model": request.GET.get("model")})
    result, status = None, 200
    if asked:
        status = 400
        if form.is_valid():
            try:
                result = placement.plan(fit_spec(form.cleaned_data), queries.fleet_view())
                status = 200
            except EstimateError as exc:
                form_error(form, exc)
    charts = []
    if result is not None:
        for label, e in result.estimates.items():
            total = sum(line.bytes for line in e.lines if line.label != "Usable memory") or 1
            charts.append(
                {
                    "label": label,
                    "estimate": e,
                    "segments": [
                        {"label": line.label, "size": size(line.bytes), "pct": 100 * line.bytes / total, "line": line}
                        for line in e.lines
                        if line.label != "Usable memory"
                    ],
                }
            )
    return render(request, "fleet/catalog/fit.html", {"form": form, "result": result, "charts": charts}, status=status)
