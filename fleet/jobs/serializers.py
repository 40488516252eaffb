"""API shapes of jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework import serializers

from console.serializers import IntegerField, ModelSerializer, Serializer
from fleet.jobs.choices import JobKind
from fleet.jobs.models import Job

if TYPE_CHECKING:
    from access.people.models import User
    from fleet.catalog.models import ModelArtifact
    from fleet.deployments.models import Deployment
    from fleet.nodes.models import Node


class JobSerializer(ModelSerializer):
    node: serializers.SlugRelatedField[Node] = serializers.SlugRelatedField(slug_field="name", read_only=True)
    model: serializers.SlugRelatedField[ModelArtifact] = serializers.SlugRelatedField(slug_field="name", read_only=True)
    deployment: serializers.SlugRelatedField[Deployment] = serializers.SlugRelatedField(
        slug_field="name", read_only=True
    )
    variant: serializers.SlugRelatedField[ModelArtifact] = serializers.SlugRelatedField(
        slug_field="name", read_only=True
    )
    created_by: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "state",
            "params",
            "node",
            "model",
            "deployment",
            "variant",
            "progress",
            "phase",
            "error",
            "cancel_requested",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class JobDetailSerializer(JobSerializer):
    class Meta(JobSerializer.Meta):
        fields = JobSerializer.Meta.fields + ["result", "artifacts", "log"]
        read_only_fields = fields


class JobCreateSerializer(Serializer):
    """What POST /api/jobs/ takes: the shape only; the services judge the rest (fleet.jobs.params)."""

    kind = serializers.ChoiceField(choices=JobKind.choices)
    model = IntegerField(required=False, min_value=1, max_value=2**63 - 1, help_text="quantize: its id")
    deployment = IntegerField(required=False, min_value=1, max_value=2**63 - 1, help_text="benchmark: its id")
    params = serializers.DictField(required=False, default=dict, help_text="the kind's parameters (see the README)")


class JobUploadSerializer(JobCreateSerializer):
    """The same as a multipart form, with the text to calibrate on."""

    calibration_file = serializers.FileField(
        required=False, allow_empty_file=True, help_text="quantize: your own calibration text"
    )
