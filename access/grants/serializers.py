"""API shapes of access requests, grants, keys and quotas."""

from __future__ import annotations

from rest_framework import serializers

from access.grants import services
from access.grants.models import LIMIT_FIELDS, LIMIT_MAX, AccessRequest, ApiKey, Grant
from access.people.models import Department, User
from console.serializers import (
    BooleanField,
    CharField,
    IntegerField,
    ModelSerializer,
    PrimaryKeyRelatedField,
    Serializer,
    SlugRelatedField,
)
from fleet.catalog.models import ModelArtifact


class _Models(SlugRelatedField):
    def __init__(self, **kwargs) -> None:
        super().__init__(slug_field="name", queryset=ModelArtifact.objects.all(), many=False, **kwargs)


def _limit_fields() -> dict:
    return {
        name: IntegerField(required=False, allow_null=True, min_value=1, max_value=LIMIT_MAX[name])
        for name in LIMIT_FIELDS
    }


class LimitsSerializer(Serializer):
    locals().update(_limit_fields())


class CatalogSerializer(ModelSerializer):
    # a declared field (the metaclass takes it off the class), not Field.parent
    parent: serializers.SlugRelatedField[ModelArtifact] = serializers.SlugRelatedField(  # type: ignore[assignment]
        slug_field="name", read_only=True
    )
    served_as = serializers.SerializerMethodField()

    class Meta:
        model = ModelArtifact
        fields = ["id", "name", "parent", "architecture", "parameter_count", "quantization", "license", "served_as"]

    def get_served_as(self, obj: ModelArtifact) -> list[str]:
        return [d.name for d in obj.deployments.all()]


class AccessRequestSerializer(ModelSerializer):
    requester: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    department: serializers.SlugRelatedField[Department] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    decided_by: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    models = serializers.ListField(child=_Models(), min_length=1, write_only=True)
    model_names = serializers.SerializerMethodField()

    class Meta:
        model = AccessRequest
        fields = [
            "id",
            "requester",
            "department",
            "models",
            "model_names",
            "for_department",
            "justification",
            "duration_days",
            "state",
            "reason",
            "decided_by",
            "decided_at",
            "grant",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "requester",
            "department",
            "state",
            "reason",
            "decided_by",
            "decided_at",
            "grant",
            "created_at",
        ]
        extra_kwargs = {"duration_days": {"min_value": 1, "max_value": services.MAX_DURATION_DAYS}}

    def get_model_names(self, obj: AccessRequest) -> list[str]:
        return sorted(m.name for m in obj.models.all())


class DecisionSerializer(LimitsSerializer):
    reason = CharField(required=False, allow_blank=True, max_length=500, default="")
    duration_days = IntegerField(required=False, min_value=1, max_value=services.MAX_DURATION_DAYS)
    for_department = BooleanField(required=False, allow_null=True, default=None)


class GrantSerializer(ModelSerializer):
    locals().update(_limit_fields())  # the same bounds as every quota field
    user = SlugRelatedField(slug_field="username", queryset=User.objects.all(), required=False, allow_null=True)
    department = SlugRelatedField(slug_field="slug", queryset=Department.objects.all(), required=False, allow_null=True)
    models = serializers.ListField(child=_Models(), min_length=1, write_only=True)
    model_names = serializers.SerializerMethodField()
    duration_days = IntegerField(write_only=True, min_value=1, max_value=services.MAX_DURATION_DAYS)
    active = BooleanField(read_only=True)

    class Meta:
        model = Grant
        fields = [
            "id",
            "user",
            "department",
            "models",
            "model_names",
            "duration_days",
            "expires_at",
            "note",
            "created_at",
            "revoked_at",
            "active",
            *LIMIT_FIELDS,
        ]
        read_only_fields = ["id", "expires_at", "created_at", "revoked_at", "active"]

    def get_model_names(self, obj: Grant) -> list[str]:
        return sorted(m.name for m in obj.models.all())


class ApiKeySerializer(ModelSerializer):
    locals().update(_limit_fields())  # the same bounds as every quota field
    user: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    grant = PrimaryKeyRelatedField(queryset=Grant.objects.all())
    models = serializers.ListField(child=_Models(), required=False, write_only=True)
    model_names = serializers.SerializerMethodField()
    expires_in_days = IntegerField(
        write_only=True, required=False, allow_null=True, min_value=1, max_value=services.MAX_DURATION_DAYS
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "user",
            "grant",
            "models",
            "model_names",
            "prefix",
            "created_at",
            "expires_at",
            "expires_in_days",
            "last_used_at",
            "revoked_at",
            "purpose",
            *LIMIT_FIELDS,
        ]
        read_only_fields = ["id", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at", "purpose"]

    def get_model_names(self, obj: ApiKey) -> list[str]:
        return sorted(m.name for m in obj.models.all())


class NewApiKeySerializer(ApiKeySerializer):
    key = CharField(read_only=True, help_text="Shown once; store it now. Only its hash is kept.")

    class Meta(ApiKeySerializer.Meta):
        fields = ApiKeySerializer.Meta.fields + ["key"]
