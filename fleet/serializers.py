from __future__ import annotations

from rest_framework import serializers

from fleet.estimator import QUANTIZATIONS
from fleet.models import GPU, Deployment, Instance, JoinToken, ModelArtifact, ModelFile, Node
from fleet.models.registry import slug_validator
from fleet.services import MAX_JOIN_TOKEN_HOURS


class GPUSerializer(serializers.ModelSerializer):
    class Meta:
        model = GPU
        fields = ["index", "uuid", "name", "memory_total", "compute_capability", "mig_mode", "pcie_gen",
                  "pcie_width", "nvlink_peers"]


class NodeSerializer(serializers.ModelSerializer):
    gpu_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Node
        fields = ["id", "name", "kind", "state", "cordoned", "labels", "gpu_count", "hostname", "os",
                  "cpu_model", "cpu_cores", "ram_bytes", "driver_version", "cuda_version", "nvml_error",
                  "agent_version", "telemetry_interval_s", "registered_at", "last_heartbeat", "address", "runtimes"]
        read_only_fields = fields


class NodeDetailSerializer(NodeSerializer):
    gpus = GPUSerializer(many=True, read_only=True)
    gpu_count = serializers.SerializerMethodField()

    class Meta(NodeSerializer.Meta):
        fields = NodeSerializer.Meta.fields + ["gpus", "last_sample"]
        read_only_fields = fields

    def get_gpu_count(self, node: Node) -> int:
        return len(node.gpus.all())


class JoinTokenSerializer(serializers.ModelSerializer):
    expires_in_hours = serializers.IntegerField(min_value=1, max_value=MAX_JOIN_TOKEN_HOURS, default=24,
                                                write_only=True)
    status = serializers.CharField(read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)
    used_by = serializers.CharField(source="used_by.name", read_only=True, default=None)

    class Meta:
        model = JoinToken
        fields = ["id", "label", "prefix", "status", "created_by", "created_at", "expires_at", "used_at",
                  "used_by", "revoked_at", "expires_in_hours"]
        read_only_fields = ["id", "prefix", "status", "created_by", "created_at", "expires_at", "used_at",
                            "used_by", "revoked_at"]


class NewJoinTokenSerializer(JoinTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once; give it to the node's agent.")

    class Meta(JoinTokenSerializer.Meta):
        fields = JoinTokenSerializer.Meta.fields + ["token"]


class ModelFileSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelFile
        fields = ["name", "kind", "size", "sha256"]


class ModelArtifactSerializer(serializers.ModelSerializer):
    parent = serializers.PrimaryKeyRelatedField(queryset=ModelArtifact.objects.all(), required=False, allow_null=True)
    tags = serializers.ListField(child=serializers.CharField(max_length=40), required=False, max_length=20)

    class Meta:
        model = ModelArtifact
        fields = ["id", "name", "path", "parent", "architecture", "architecture_known", "model_type", "num_layers",
                  "hidden_size", "intermediate_size", "num_attention_heads", "num_kv_heads", "head_dim", "vocab_size",
                  "max_position_embeddings", "num_experts", "rope_scaling", "torch_dtype", "quantization",
                  "parameter_count", "weights_bytes", "dtypes", "warnings", "recipe", "license", "notes", "tags",
                  "sensitivity", "checksum_state", "checksum_progress", "checksum_error", "created_at"]
        read_only_fields = [f for f in fields if f not in {"name", "path", "parent", "license", "notes", "tags", "sensitivity"}]
        # Uniqueness is the service's to say, in its words; the name's shape is checked here.
        extra_kwargs = {"name": {"validators": [slug_validator]}}


class ModelDetailSerializer(ModelArtifactSerializer):
    files = ModelFileSerializer(many=True, read_only=True)
    variants = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta(ModelArtifactSerializer.Meta):
        fields = ModelArtifactSerializer.Meta.fields + ["files", "variants", "config"]
        read_only_fields = ModelArtifactSerializer.Meta.read_only_fields + ["files", "variants", "config"]


class FitRequestSerializer(serializers.Serializer):
    model = serializers.PrimaryKeyRelatedField(queryset=ModelArtifact.objects.all())
    max_model_len = serializers.IntegerField(min_value=1, max_value=10_000_000, default=4096)
    concurrency = serializers.IntegerField(min_value=1, max_value=100_000, default=1)
    quantization = serializers.ChoiceField(choices=list(QUANTIZATIONS), default="none")
    kv_dtype = serializers.ChoiceField(choices=["auto", "fp8", "bfloat16", "float16", "float32"], default="auto")
    tp = serializers.IntegerField(min_value=1, max_value=64, default=1)
    pp = serializers.IntegerField(min_value=1, max_value=64, default=1)
    replicas = serializers.IntegerField(min_value=1, max_value=1000, default=1)
    gpu_memory_utilization = serializers.FloatField(min_value=0.05, max_value=1.0, default=0.9)
    strategy = serializers.ChoiceField(choices=["binpack", "spread"], default="binpack")
    selector = serializers.DictField(child=serializers.CharField(max_length=100), required=False, default=dict)
    cpu_kv_space_gib = serializers.FloatField(min_value=0.1, max_value=4096, default=1.0)


class InstanceSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name", default=None, read_only=True)
    endpoint = serializers.CharField(read_only=True)

    class Meta:
        model = Instance
        fields = ["id", "replica", "node", "gpus", "address", "port", "endpoint", "state", "pid", "restarts",
                  "exit_code", "cause", "remedy", "created_at", "ready_at"]
        read_only_fields = fields


class DeploymentSerializer(serializers.ModelSerializer):
    model = serializers.PrimaryKeyRelatedField(queryset=ModelArtifact.objects.all())
    options = serializers.JSONField(required=False, default=dict)
    selector = serializers.JSONField(required=False, default=dict)
    instances = InstanceSerializer(many=True, read_only=True)
    ready = serializers.SerializerMethodField()

    class Meta:
        model = Deployment
        fields = ["id", "name", "model", "replicas", "desired_state", "options", "selector", "strategy", "force",
                  "ready", "placement_note", "instances", "created_at", "updated_at"]
        read_only_fields = ["id", "desired_state", "ready", "placement_note", "instances", "created_at", "updated_at"]
        extra_kwargs = {"name": {"validators": [slug_validator]}, "replicas": {"min_value": 0, "max_value": 64}}

    def get_ready(self, deployment: Deployment) -> int:
        return sum(1 for i in deployment.instances.all() if i.state == "ready")


class ScaleSerializer(serializers.Serializer):
    replicas = serializers.IntegerField(min_value=0, max_value=64)


class JobSerializer(serializers.ModelSerializer):
    node = serializers.SlugRelatedField(slug_field="name", read_only=True)
    model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    deployment = serializers.SlugRelatedField(slug_field="name", read_only=True)
    variant = serializers.SlugRelatedField(slug_field="name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        from fleet.models import Job

        model = Job
        fields = ["id", "kind", "state", "params", "node", "model", "deployment", "variant", "progress", "phase",
                  "error", "cancel_requested", "created_by", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class JobDetailSerializer(JobSerializer):
    class Meta(JobSerializer.Meta):
        fields = JobSerializer.Meta.fields + ["result", "artifacts", "log"]
        read_only_fields = fields
