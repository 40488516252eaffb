"""/api/jobs/: quantization and benchmark jobs (admins only), through the same services as the UI."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from access.people.permissions import ADMIN_ONLY
from console.actions import ServiceError
from console.filtering import FilteredListMixin
from console.parsers import JSONParser
from fleet.catalog.models import ModelArtifact
from fleet.deployments.models import Deployment
from fleet.jobs import services
from fleet.jobs.choices import JobKind
from fleet.jobs.filtersets import JobFilterSet
from fleet.jobs.queries import compare_runs, parse_ids
from fleet.jobs.serializers import JobCreateSerializer, JobDetailSerializer, JobSerializer, JobUploadSerializer


def _form_params(data: Any) -> dict[str, Any]:
    """A multipart form's fields, its params (a JSON string there) parsed into an object."""
    fields: dict[str, Any] = {key: data.get(key) for key in data}
    for key in ("model", "deployment"):  # ids arrive as text in a form
        if isinstance(fields.get(key), str) and fields[key].isdigit():
            fields[key] = int(fields[key])
    if isinstance(fields.get("params"), str):
        try:
            fields["params"] = json.loads(fields["params"] or "{}")
        except ValueError:
            raise ValidationError({"params": "params is not valid JSON."}) from None
    return fields


def _pick(model, pk: int | None, field: str):
    """The object with this id; None when none was given (the service then asks for one)."""
    if pk is None:
        return None
    try:
        return model.objects.get(pk=pk)
    except model.DoesNotExist:
        raise ServiceError(f"No {field} with id {pk}.", field) from None


class JobViewSet(FilteredListMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Jobs. POST {"kind": "quantize", "model": id, "params": {...}} (multipart with a
    calibration_file to calibrate on your own text) or {"kind": "benchmark", "deployment": id,
    "params": {...}}; POST /cancel/ stops one; GET /compare/?ids=1,2 gives benchmark runs side by side."""

    permission_classes = ADMIN_ONLY
    filterset_class = JobFilterSet
    parser_classes = [JSONParser, MultiPartParser]

    def get_serializer_class(self):
        return JobSerializer if self.action == "list" else JobDetailSerializer

    @extend_schema(
        request={"application/json": JobCreateSerializer, "multipart/form-data": JobUploadSerializer},
        responses={201: JobDetailSerializer},
    )
    def create(self, request: Request) -> Response:
        multipart = request.content_type.startswith("multipart/")
        given = (
            JobUploadSerializer(data=_form_params(request.data))
            if multipart
            else JobCreateSerializer(data=request.data)
        )
        given.is_valid(raise_exception=True)
        data = given.validated_data
        if data["kind"] == JobKind.QUANTIZE:
            upload = data.get("calibration_file")
            job = services.quantize(
                request.user,
                _pick(ModelArtifact, data.get("model"), "model"),
                data["params"],
                upload.read() if upload else None,
                upload.name if upload else "",
            )
        else:
            job = services.benchmark(
                request.user, _pick(Deployment, data.get("deployment"), "deployment"), data["params"]
            )
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
        return Response({"runs": compare_runs(parse_ids(request.query_params.get("ids", "")))})
