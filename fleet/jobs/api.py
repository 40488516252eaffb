"""/api/jobs/: quantization and benchmark jobs (admins only), through the same services as the UI."""
from __future__ import annotations

import json
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from access.permissions import ADMIN_ONLY
from fleet.catalog.models import ModelArtifact
from fleet.deployments.models import Deployment
from fleet.jobs import services as jobs
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job
from fleet.jobs.serializers import JobDetailSerializer, JobSerializer

MAX_COMPARE = 8


def _params(data: Any) -> Any:
    """params as a JSON object, or (multipart forms) a JSON string."""
    params = data.get("params", {})
    if isinstance(params, str):
        try:
            params = json.loads(params or "{}")
        except ValueError:
            raise ValidationError({"params": "params is not valid JSON."}) from None
    return params


def _pick(model, value: Any, field: str):
    try:
        return model.objects.get(pk=int(value))
    except (TypeError, ValueError, model.DoesNotExist):
        raise ValidationError({field: f"No {field} with id {value!r}."}) from None


def compare_runs(ids: list[int]) -> list[dict]:
    """Succeeded benchmark runs, for charts side by side (one series per run)."""
    found = {j.pk: j for j in Job.objects.filter(pk__in=ids, kind=JobKind.BENCHMARK, state=JobState.SUCCEEDED)
             .select_related("deployment", "model")}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValidationError({"ids": f"Not succeeded benchmark jobs: {', '.join(map(str, missing))}."})
    return [{"id": j.pk, "label": f"#{j.pk} {j.params.get('served') or j.model}", "model": j.model.name if j.model else None,
             "mode": j.result.get("mode"), "input_len": j.params.get("input_len"),
             "output_len": j.params.get("output_len"), "points": j.result.get("points", [])} for j in map(found.get, ids)]


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Jobs. POST {"kind": "quantize", "model": id, "params": {...}} (multipart with a
    calibration_file to calibrate on your own text) or {"kind": "benchmark", "deployment": id,
    "params": {...}}; POST /cancel/ stops one; GET /compare/?ids=1,2 gives benchmark runs side by side."""

    permission_classes = ADMIN_ONLY
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_serializer_class(self):
        return JobSerializer if self.action == "list" else JobDetailSerializer

    def get_queryset(self):
        if self.action != "list":
            return jobs.visible_jobs()
        params = self.request.query_params
        for key, allowed in (("kind", JobKind.values), ("state", JobState.values)):
            if params.get(key) and params[key] not in allowed:
                raise ValidationError({key: f"Unknown {key} {params[key]!r}; use one of {', '.join(allowed)}."})
        return jobs.visible_jobs(params.get("kind", ""), params.get("state", ""), params.get("q", "").strip())

    @extend_schema(parameters=[OpenApiParameter("kind", str, enum=JobKind.values),
                               OpenApiParameter("state", str, enum=JobState.values), OpenApiParameter("q", str)])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: JobDetailSerializer})
    def create(self, request: Request) -> Response:
        kind = request.data.get("kind")
        params = _params(request.data)
        if kind == JobKind.QUANTIZE:
            upload = request.FILES.get("calibration_file")
            job = jobs.quantize(request.user, _pick(ModelArtifact, request.data.get("model"), "model"),
                                params, upload.read() if upload else None, upload.name if upload else "")
        elif kind == JobKind.BENCHMARK:
            job = jobs.benchmark(request.user,
                                _pick(Deployment, request.data.get("deployment"), "deployment"), params)
        else:
            raise ValidationError({"kind": f"Unknown job kind {kind!r}; use quantize or benchmark."})
        return Response(JobDetailSerializer(jobs.visible_jobs().get(pk=job.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=JobDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = jobs.cancel(request.user, self.get_object())
        return Response(JobDetailSerializer(jobs.visible_jobs().get(pk=job.pk)).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(parameters=[OpenApiParameter("ids", str, description="comma-separated job ids")],
                   responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"])
    def compare(self, request: Request) -> Response:
        return Response({"runs": compare_runs(parse_ids(",".join(request.query_params.getlist("ids"))))})


def parse_ids(raw: str) -> list[int]:
    try:
        ids = list(dict.fromkeys(int(p) for p in raw.split(",") if p.strip()))
    except ValueError:
        raise ValidationError({"ids": "ids: job numbers separated by commas, e.g. 4,7."}) from None
    if not 1 <= len(ids) <= MAX_COMPARE:
        raise ValidationError({"ids": f"Compare 1 to {MAX_COMPARE} runs."})
    return ids
