"""API shapes of catalog."""

from __future__ import annotations

from rest_framework import serializers

from console.serializers import CharField, IntegerField, ModelSerializer, PrimaryKeyRelatedField, Serializer
from fleet.catalog.models import ModelArtifact, ModelFile, slug_validator
from fleet.planning.estimator import QUANTIZATIONS


class ModelFileSerializer(ModelSerializer):
    class Meta:
        model = ModelFile
        fields = ["name", "kind", "size", "sha256"]


class ModelArtifactSerializer(ModelSerializer):
    # a declared field (the metaclass takes it off the class), not Field.parent
    parent = PrimaryKeyRelatedField(  # type: ignore[assignment]
        queryset=ModelArtifact.objects.all(), required=False, allow_null=True
    )
    tags = serializers.ListField(child=CharField(max_length=40), required=False, max_length=20)

    class Meta:
        model = ModelArtifact
        fields = [
            "id",
            "name",
            "path",
            "parent",
            "architecture",
            "architecture_known",
            "model_type",
            "num_layers",
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_kv_heads",
            "head_dim",
            "vocab_size",
            "max_position_embeddings",
            "num_experts",
            "rope_scaling",
            "torch_dtype",
            "quantization",
            "parameter_count",
            "weights_bytes",
            "dtypes",
            "warnings",
            "recipe",
            "license",
            "notes",
            "tags",
            "sensitivity",
            "checksum_state",
            "checksum_progress",
            "checksum_error",
            "created_at",
        ]
        read_only_fields = [
            f for f in fields if f not in {"name", "path", "parent", "license", "notes", "tags", "sensitivity"}
        ]
        # Uniqueness is the service's to say, in its words; the name's shape is checked here.
        extra_kwargs = {"name": {"validators": [slug_validator]}}


class ModelDetailSerializer(ModelArtifactSerializer):
    files = ModelFileSerializer(many=True, read_only=True)
    variants: serializers.PrimaryKeyRelatedField[ModelArtifact] = serializers.PrimaryKeyRelatedField(
        many=True, read_only=True
    )

    class Meta(ModelArtifactSerializer.Meta):
        fields = ModelArtifactSerializer.Meta.fields + ["files", "variants", "config"]
        read_only_fields = ModelArtifactSerializer.Meta.read_only_fields + ["files", "variants", "config"]


class FitRequestSerializer(Serializer):
    model = PrimaryKeyRelatedField(queryset=ModelArtifact.objects.all())
    max_model_len = IntegerField(min_value=1, max_value=10_000_000, default=4096)
    concurrency = IntegerField(min_value=1, max_value=100_000, default=1)
    quantization = serializers.ChoiceField(choices=list(QUANTIZATIONS), default="none")
    kv_dtype = serializers.ChoiceField(choices=["auto", "fp8", "bfloat16", "float16", "float32"], default="auto")
    tp = IntegerField(min_value=1, max_value=64, default=1)
    pp = IntegerField(min_value=1, max_value=64, default=1)
    replicas = IntegerField(min_value=1, max_value=1000, default=1)
    gpu_memory_utilization = serializers.FloatField(min_value=0.05, max_value=1.0, default=0.9)
    strategy = serializers.ChoiceField(choices=["binpack", "spread"], default="binpack")
    selector = serializers.DictField(child=CharField(max_length=100), required=False, default=dict)
    cpu_kv_space_gib = serializers.FloatField(min_value=0.1, max_value=4096, default=1.0)
