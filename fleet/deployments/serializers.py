"""API shapes of deployments."""

from __future__ import annotations

from rest_framework import serializers

from console.serializers import CharField, IntegerField, ModelSerializer, PrimaryKeyRelatedField, Serializer
from fleet.catalog.models import ModelArtifact, slug_validator
from fleet.deployments.choices import Routing
from fleet.deployments.models import Deployment, Instance, Revision
from fleet.deployments.services import AUTOSCALE_FIELDS, MAX_REPLICAS, ROLLOUT_ACTIONS


class InstanceSerializer(ModelSerializer):
    node = CharField(source="node.name", default=None, read_only=True)
    deployment = CharField(source="deployment.name", read_only=True)
    endpoint = CharField(read_only=True)

    class Meta:
        model = Instance
        fields = [
            "id",
            "deployment",
            "replica",
            "node",
            "gpus",
            "address",
            "port",
            "endpoint",
            "state",
            "pid",
            "restarts",
            "exit_code",
            "cause",
            "remedy",
            "created_at",
            "ready_at",
        ]
        read_only_fields = fields


class InstanceLogSerializer(serializers.Serializer):
    lines = serializers.ListField(child=serializers.CharField(), help_text="oldest first")


class AutoscaleSerializer(ModelSerializer):
    """Autoscaling: on or off, the bounds, the metric and its target per instance, the windows. The
    page's form is checked by this same serializer."""

    class Meta:
        model = Deployment
        fields = list(AUTOSCALE_FIELDS)
        extra_kwargs = {
            "autoscale": {"required": True},
            "min_replicas": {"min_value": 0, "max_value": MAX_REPLICAS, "help_text": "0: scale to zero when idle."},
            "max_replicas": {"min_value": 1, "max_value": MAX_REPLICAS},
            "scale_target": {"min_value": 0.1, "max_value": 10_000},
            "scale_up_after_s": {"min_value": 1, "max_value": 3600},
            "scale_down_after_s": {"min_value": 1, "max_value": 86_400},
        }


class DeploymentSerializer(ModelSerializer):
    model = PrimaryKeyRelatedField(queryset=ModelArtifact.objects.all())
    options = serializers.DictField(required=False, default=dict)
    selector = serializers.DictField(required=False, default=dict)
    instances = InstanceSerializer(many=True, read_only=True)
    ready = serializers.SerializerMethodField()
    autoscaling = AutoscaleSerializer(source="*", read_only=True)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "name",
            "model",
            "replicas",
            "desired_state",
            "options",
            "selector",
            "strategy",
            "routing",
            "fallback",
            "autoscaling",
            "force",
            "revision",
            "rollout",
            "ready",
            "placement_note",
            "instances",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "desired_state",
            "fallback",
            "autoscaling",
            "revision",
            "rollout",
            "ready",
            "placement_note",
            "instances",
            "created_at",
            "updated_at",
        ]
        extra_kwargs = {"name": {"validators": [slug_validator]}, "replicas": {"min_value": 0, "max_value": 64}}

    def get_ready(self, deployment: Deployment) -> int:
        return sum(1 for i in deployment.instances.all() if i.state == "ready")


class ScaleSerializer(Serializer):
    replicas = IntegerField(min_value=0, max_value=64)


class RoutingSerializer(Serializer):
    routing = serializers.ChoiceField(choices=Routing.choices)


class FallbackSerializer(Serializer):
    fallback = PrimaryKeyRelatedField(
        queryset=Deployment.objects.all(),
        allow_null=True,
        help_text="The deployment that answers while this one has no Ready instance or fails before "
        "the first byte; null for none.",
    )


class DeploymentUpdateSerializer(Serializer):
    """PATCH: a new revision, rolled out one replica at a time without a failed call."""

    model = PrimaryKeyRelatedField(
        queryset=ModelArtifact.objects.all(), required=False, help_text="Another model, or a variant of this one."
    )
    options = serializers.DictField(
        required=False, help_text="vLLM options to change (merged over the current ones); runtime among them."
    )

    def validate(self, attrs: dict) -> dict:
        if not attrs:
            raise serializers.ValidationError({"model": ["Give a model, options, or both."]})
        return attrs


class RolloutSerializer(Serializer):
    action = serializers.ChoiceField(
        choices=ROLLOUT_ACTIONS, help_text="pause or resume the rolling update; abort: back to where it started."
    )


class RollbackSerializer(Serializer):
    revision = IntegerField(min_value=1, max_value=2_147_483_647, help_text="The revision to make current again.")


class RevisionSerializer(ModelSerializer):
    model = CharField(source="model_name", read_only=True)
    created_by = CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = Revision
        fields = ["number", "model", "options", "changes", "outcome", "note", "created_by", "created_at"]
        read_only_fields = fields
