"""/api/models/ and /api/fit/ (admins only)."""

from __future__ import annotations

from dataclasses import asdict

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from access.people.permissions import ADMIN_ONLY
from console.filtering import FilteredListMixin
from fleet.catalog import services
from fleet.catalog.filtersets import ModelFilterSet
from fleet.catalog.models import ModelArtifact
from fleet.catalog.queries import fit_spec
from fleet.catalog.serializers import (
    FitRequestSerializer,
    ModelArtifactSerializer,
    ModelDetailSerializer,
)
from fleet.nodes import queries
from fleet.planning import placement
from fleet.planning.estimator import EstimateError


class ModelViewSet(
    FilteredListMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Registered models. POST registers a directory under a model root; PATCH changes license, notes,
    tags, sensitivity; DELETE unregisters (files stay on disk)."""

    permission_classes = ADMIN_ONLY
    filterset_class = ModelFilterSet
    http_method_names = ["get", "post", "patch", "delete"]

    def get_serializer_class(self):
        return ModelArtifactSerializer if self.action in {"list", "create"} else ModelDetailSerializer

    def get_queryset(self) -> QuerySet[ModelArtifact]:
        if self.action == "list":
            return super().get_queryset()
        return (
            ModelArtifact.objects.visible_to(self.request.user)
            .select_related("parent")
            .prefetch_related("files", "variants")
        )

    def perform_create(self, serializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.register(
            self.request.user,
            path=data["path"],
            name=data["name"],
            parent=data.get("parent"),
            license=data.get("license", ""),
            notes=data.get("notes", ""),
            tags=data.get("tags", []),
            sensitivity=data.get("sensitivity", "internal"),
        )

    def perform_update(self, serializer) -> None:
        changes = {k: v for k, v in serializer.validated_data.items() if k in services.EDITABLE}
        refused = set(serializer.validated_data) - set(services.EDITABLE)
        if refused:
            raise ValidationError({"detail": f"Only {', '.join(services.EDITABLE)} can be changed."})
        serializer.instance = services.update(self.request.user, serializer.instance, **changes)

    def perform_destroy(self, artifact) -> None:
        services.forget(self.request.user, artifact)

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def checksum(self, request: Request, pk: str | None = None) -> Response:
        services.request_checksums(request.user, self.get_object())
        return Response({"detail": "Checksums are being computed."}, status=status.HTTP_202_ACCEPTED)


@extend_schema(request=FitRequestSerializer, responses=OpenApiTypes.OBJECT)
@api_view(["POST"])
@permission_classes(ADMIN_ONLY)
def fit(request: Request) -> Response:
    """Will it fit? The placement over the current fleet, with every rejected node's reason and the
    memory breakdown per kind of device."""
    serializer = FitRequestSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    spec = fit_spec(serializer.validated_data)
    try:
        result = placement.plan(spec, queries.fleet_view())
    except EstimateError as exc:
        raise ValidationError({exc.field or "detail": exc.message}) from None
    return Response(
        {
            "ok": result.ok,
            "message": result.message,
            "rejected": result.rejected,
            "replicas": [[asdict(stage) for stage in replica] for replica in result.replicas],
            "estimates": {label: e.as_dict() for label, e in result.estimates.items()},
        }
    )
