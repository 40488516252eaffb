"""/api/deployments/ (admins only)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from access.people.permissions import ADMIN_ONLY
from console.filtering import FilteredListMixin
from fleet.deployments import services
from fleet.deployments.choices import Routing
from fleet.deployments.filtersets import DeploymentFilterSet, InstanceFilterSet
from fleet.deployments.serializers import (
    AutoscaleSerializer,
    DeploymentSerializer,
    DeploymentUpdateSerializer,
    FallbackSerializer,
    InstanceLogSerializer,
    InstanceSerializer,
    RevisionSerializer,
    RollbackSerializer,
    RolloutSerializer,
    RoutingSerializer,
    ScaleSerializer,
)
from fleet.nodes import commands
from fleet.nodes.models import Node


class DeploymentViewSet(
    FilteredListMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Deployments: what should run. The reconciler makes instances match; actions change the desired state."""

    permission_classes = ADMIN_ONLY
    serializer_class = DeploymentSerializer
    filterset_class = DeploymentFilterSet

    def perform_create(self, serializer) -> None:
        d = serializer.validated_data
        serializer.instance = services.create(
            self.request.user,
            name=d["name"],
            model=d["model"],
            replicas=d.get("replicas", 1),
            options=d.get("options", {}),
            selector=d.get("selector", {}),
            strategy=d.get("strategy", "binpack"),
            routing=d.get("routing", Routing.LEAST_BUSY),
            force=d.get("force", False),
        )

    def perform_destroy(self, deployment) -> None:
        services.delete(self.request.user, deployment)

    def _act(self, fn, *args) -> Response:
        deployment = fn(self.request.user, self.get_object(), *args)
        return Response(DeploymentSerializer(self.get_queryset().get(pk=deployment.pk)).data)

    def _act_with(self, body: type[Serializer], fn) -> Response:
        """An action whose body is one field: validated by ``body``, its value passed to ``fn``."""
        valid = body(data=self.request.data)
        valid.is_valid(raise_exception=True)
        (value,) = valid.validated_data.values()
        return self._act(fn, value)

    @extend_schema(request=DeploymentUpdateSerializer, responses=DeploymentSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        """A new revision (model, variant, vLLM options, runtime): rolled out one replica at a time,
        each new instance Ready before an old one drains and stops; a failing one rolls back."""
        valid = DeploymentUpdateSerializer(data=request.data)
        valid.is_valid(raise_exception=True)
        return self._act(services.update, valid.validated_data)

    @extend_schema(request=RolloutSerializer, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def rollout(self, request: Request, pk: str | None = None) -> Response:
        """Pause or resume the rolling update under way, or abort it (back to the revision it started from)."""
        return self._act_with(RolloutSerializer, services.rollout)

    @extend_schema(request=RollbackSerializer, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str | None = None) -> Response:
        """Make an earlier revision current again, rolled out like an update."""
        return self._act_with(RollbackSerializer, services.rollback)

    @extend_schema(request=None, responses=RevisionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def revisions(self, request: Request, pk: str | None = None) -> Response:
        """The deployment's newest 100 revisions, newest first: who changed what, when, and how each rollout ended."""
        revisions = self.get_object().revisions.select_related("created_by").order_by("-number")[:100]
        return Response(RevisionSerializer(revisions, many=True).data)

    @extend_schema(request=ScaleSerializer, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def scale(self, request: Request, pk: str | None = None) -> Response:
        return self._act_with(ScaleSerializer, services.scale)

    @extend_schema(request=RoutingSerializer, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def routing(self, request: Request, pk: str | None = None) -> Response:
        """How the gateway picks an instance for each call: least busy, or by prompt prefix."""
        return self._act_with(RoutingSerializer, services.set_routing)

    @extend_schema(request=FallbackSerializer, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def fallback(self, request: Request, pk: str | None = None) -> Response:
        """The deployment that answers while this one has no Ready instance or fails before the first byte."""
        return self._act_with(FallbackSerializer, services.set_fallback)

    @extend_schema(request=AutoscaleSerializer, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def autoscale(self, request: Request, pk: str | None = None) -> Response:
        """Replicas that follow the load between min and max (min 0: stop when idle, wake on a call)."""
        valid = AutoscaleSerializer(data=request.data)
        valid.is_valid(raise_exception=True)
        return self._act(services.set_autoscale, valid.validated_data)

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        return self._act(services.start)

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str | None = None) -> Response:
        return self._act(services.stop)

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def restart(self, request: Request, pk: str | None = None) -> Response:
        return self._act(services.restart)


class InstanceViewSet(FilteredListMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Instances: what runs (or ran) for each deployment, on which node, in which state."""

    permission_classes = ADMIN_ONLY
    serializer_class = InstanceSerializer
    filterset_class = InstanceFilterSet

    @extend_schema(responses=InstanceLogSerializer)
    @action(detail=True, methods=["get"])
    def log(self, request: Request, pk: str | None = None) -> Response:
        """The last lines of the instance's log (up to 500), oldest first."""
        return Response({"lines": commands.log_tail(self.get_object().pk)})


@extend_schema(request=None, responses=OpenApiTypes.OBJECT)
@api_view(["POST"])
@permission_classes(ADMIN_ONLY)
def drain_node(request: Request, pk: int) -> Response:
    """Cordon the node and move its instances to other nodes."""
    moved = services.drain_node(request.user, get_object_or_404(Node, pk=pk))
    return Response({"detail": f"Drained; {moved} deployment(s) moving.", "moving": moved})
