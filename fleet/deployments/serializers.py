"""API shapes of deployments."""

from __future__ import annotations

from rest_framework import serializers

from console.serializers import CharField, IntegerField, ModelSerializer, Serializer
from fleet.catalog.models import ModelArtifact, slug_validator
from fleet.deployments.choices import Routing
from fleet.deployments.models import Deployment, Instance


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


class DeploymentSerializer(ModelSerializer):
    model = serializers.PrimaryKeyRelatedField(queryset=ModelArtifact.objects.all())
    options = serializers.DictField(required=False, default=dict)
    selector = serializers.DictField(required=False, default=dict)
    instances = InstanceSerializer(many=True, read_only=True)
    ready = serializers.SerializerMethodField()

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
            "force",
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
    fallback = serializers.PrimaryKeyRelatedField(
        queryset=Deployment.objects.all(),
        allow_null=True,
        help_text="The deployment that answers while this one has no Ready instance or fails before "
        "the first byte; null for none.",
    )
