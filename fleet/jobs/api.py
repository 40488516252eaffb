"""/api/jobs/: quantization and benchmark jobs (admins only), through the same services as the UI."""

from __future__ import annotations

import json
from typing import Any, cast

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from access.people.permissions import ADMIN_ONLY
from console.filtering import FilteredListMixin
from fleet.catalog.models import ModelArtifact
from fleet.deployments.models import Deployment
from fleet.jobs import services
from fleet.jobs.choices import JobKind
from fleet.jobs.filtersets import JobFilterSet
from fleet.jobs.queries import compare_runs, parse_ids
from fleet.jobs.serializers import JobDetailSerializer, JobSerializer


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


class JobViewSet(FilteredListMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Jobs. POST {"kind": "quantize", "model": id, "params": {...}} (multipart with a
    calibration_file to calibrate on your own text) or {"kind": "benchmark", "deployment": id,
    "params": {...}}; POST /cancel/ stops one; GET /compare/?ids=1,2 gives benchmark runs side by side."""

    permission_classes = ADMIN_ONLY
    filterset_class = JobFilterSet
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_serializer_class(self):
        return JobSerializer if self.action == "list" else JobDetailSerializer

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: JobDetailSerializer})
    def create(self, request: Request) -> Response:
        data = cast("dict[str, Any]", request.data)  # a JSON object or a form
        kind = data.get("kind")
        params = _params(request.data)
        if kind == JobKind.QUANTIZE:
            upload = request.FILES.get("calibration_file")
            job = services.quantize(
                request.user,
                _pick(ModelArtifact, data.get("model"), "model"),
                params,
                upload.read() if upload else None,
                upload.name if upload else "",
            )
        elif kind == JobKind.BENCHMARK:
            job = services.benchmark(request.user, _pick(Deployment, data.get("deployment"), "deployment"), params)
        else:
            raise ValidationError({"kind": f"Unknown job kind {kind!r}; use quantize or benchmark."})
        return Response(JobDetailSerializer(self.get_queryset().get(pk=job.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=JobDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = services.cancel(request.user, self.get_object())
        return Response(JobDetailSerializer(self.get_queryset().get(pk=job.pk)).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[OpenApiParameter("ids", str, description="comma-separated job ids")], responses=OpenApiTypes.OBJECT
    )
    @action(detail=False, methods=["get"])
    def compare(self, request: Request) -> Response:
        return Response({"runs": compare_runs(parse_ids(",".join(request.query_params.getlist("ids"))))})
