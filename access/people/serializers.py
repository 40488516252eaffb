from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from access.people.choices import Role
from access.people.models import Department, PersonalToken, User
from console.serializers import CharField, IntegerField, ModelSerializer, SlugRelatedField


class DepartmentSerializer(ModelSerializer):
    member_count = IntegerField(read_only=True, required=False)

    class Meta:
        model = Department
        fields = ["id", "name", "slug", "description", "created_at", "member_count"]
        read_only_fields = ["id", "created_at", "member_count"]
        extra_kwargs = {"slug": {"required": False, "allow_blank": True}}  # empty: made from the name


class UserSerializer(ModelSerializer):
    department = SlugRelatedField(slug_field="slug", queryset=Department.objects.all(), allow_null=True, required=False)
    password = CharField(write_only=True, required=False, style={"input_type": "password"})

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "first_name",
            "last_name",
            "email",
            "role",
            "department",
            "is_active",
            "last_login",
            "date_joined",
            "password",
        ]
        read_only_fields = ["id", "last_login", "date_joined"]

    def validate(self, attrs: dict) -> dict:
        role = attrs.get("role", getattr(self.instance, "role", Role.NONE))
        department = attrs.get("department", getattr(self.instance, "department", None))
        if role == Role.DEPT_USER and department is None:
            raise serializers.ValidationError({"department": "A department user must belong to a department."})
        password = attrs.get("password")
        if password is not None:
            candidate = self.instance or User(username=attrs.get("username", ""), email=attrs.get("email", ""))
            try:
                validate_password(password, candidate)
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"password": list(exc.messages)}) from None
        elif self.instance is None:
            raise serializers.ValidationError({"password": "Give an initial password."})
        return attrs

    def create(self, validated: dict) -> User:
        password = validated.pop("password")
        user = User(**validated)
        user.set_password(password)
        user.save()
        return user

    def update(self, instance: User, validated: dict) -> User:
        password = validated.pop("password", None)
        for key, value in validated.items():
            setattr(instance, key, value)
        if password:
            instance.set_password(password)
        instance.save()
        return instance


class NewUserSerializer(UserSerializer):
    """A new user: the same fields, with the initial password required."""

    password = CharField(write_only=True, style={"input_type": "password"})


class TokenSerializer(ModelSerializer):
    expires_in_days = IntegerField(write_only=True, required=False, allow_null=True, min_value=1, max_value=3650)

    class Meta:
        model = PersonalToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at", "expires_in_days"]
        read_only_fields = ["id", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]


class NewTokenSerializer(TokenSerializer):
    token = CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(TokenSerializer.Meta):
        fields = TokenSerializer.Meta.fields + ["token"]
