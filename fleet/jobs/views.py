"""Admin pages for jobs: the list (live), a job's page (live progress and log, its result and
charts), runs compared side by side, and the "Quantize" and "Benchmark" forms on the model and
deployment pages."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from access.people.choices import Role
from access.people.permissions import role_required
from console.actions import ServiceError, flash, form_error
from console.filtering import list_page
from fleet.catalog.models import ModelArtifact
from fleet.catalog.views import model_page
from fleet.deployments.models import Deployment
from fleet.deployments.views import deployment_page
from fleet.jobs import services
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.filtersets import JobFilterSet
from fleet.jobs.forms import BenchmarkForm, QuantizeForm
from fleet.jobs.models import Job
from fleet.jobs.queries import compare_runs, parse_ids

PAGE_SIZE = 50
# A flash announcing a queued job is gone once the page shows it no longer queued (see flash.js).
UNTIL_RUNNING = '[data-field="state"]:not([data-state="queued"])'


@role_required(Role.ADMIN)
def job_list(request: HttpRequest) -> HttpResponse:
    filterset, page, status = list_page(request, JobFilterSet, PAGE_SIZE)
    template = "fleet/jobs/_job_rows.html" if request.headers.get("HX-Request") else "fleet/jobs/jobs.html"
    return render(
        request, template, {"page": page, "filterset": filterset, "query": request.GET.urlencode()}, status=status
    )


@role_required(Role.ADMIN)
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(JobFilterSet.visible(request.user), pk=pk)
    others = []
    if job.kind == JobKind.BENCHMARK:
        others = list(
            Job.objects.filter(kind=JobKind.BENCHMARK, state=JobState.SUCCEEDED)
            .exclude(pk=pk)
            .select_related("deployment")
            .order_by("-created_at")[:20]
        )
    runs = compare_runs([job.pk]) if job.kind == JobKind.BENCHMARK and job.state == JobState.SUCCEEDED else []
    return render(request, "fleet/jobs/job_detail.html", {"job": job, "others": others, "runs": runs})


@role_required(Role.ADMIN)
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=pk)
    flash(request, lambda: services.cancel(request.user, job), f"Cancelling job {job.pk}.")
    return redirect("job-detail", pk=pk)


@role_required(Role.ADMIN)
def job_compare(request: HttpRequest) -> HttpResponse:
    try:
        runs = compare_runs(parse_ids(",".join(request.GET.getlist("ids"))))  # ?ids=3,4 or ?ids=3&ids=4
    except ServiceError as exc:
        return render(request, "fleet/jobs/job_compare.html", {"runs": [], "error": exc.message}, status=400)
    return render(request, "fleet/jobs/job_compare.html", {"runs": runs})


@role_required(Role.ADMIN)
@require_POST
def quantize(request: HttpRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(ModelArtifact, pk=pk)
    form = QuantizeForm(request.POST, request.FILES)
    if form.is_valid():
        upload = form.cleaned_data.get("calibration_file")
        try:
            job = services.quantize(
                request.user, model, form.params(), upload.read() if upload else None, upload.name if upload else ""
            )
        except ServiceError as exc:
            form_error(form, exc)
        else:
            assert job.node is not None  # quantize chose one
            messages.success(request, f"Quantization queued on {job.node.name}.", extra_tags=UNTIL_RUNNING)
            return redirect("job-detail", pk=job.pk)
    return model_page(request, model, quantize_form=form, status=400)


@role_required(Role.ADMIN)
@require_POST
def benchmark(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment, pk=pk)
    form = BenchmarkForm(request.POST)
    if form.is_valid():
        try:
            job = services.benchmark(request.user, deployment, form.cleaned_data)
        except ServiceError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"Benchmark queued against {deployment.name}.", extra_tags=UNTIL_RUNNING)
            return redirect("job-detail", pk=job.pk)
    return deployment_page(request, deployment, benchmark_form=form, status=400)
