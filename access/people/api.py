"""/api/ endpoints for people and personal tokens."""

from __future__ import annotations

from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from access.people import services
from access.people.choices import Role
from access.people.models import Department, PersonalToken, User
from access.people.permissions import AnyRole, HasRole, signed_in_user
from access.people.serializers import (
    DepartmentSerializer,
    NewTokenSerializer,
    NewUserSerializer,
    TokenSerializer,
    UserSerializer,
)
from console.actions import ServiceError


class DepartmentViewSet(viewsets.ModelViewSet):
    permission_classes = [IsAuthenticated, HasRole.of(Role.ADMIN)]
    serializer_class = DepartmentSerializer
    queryset = Department.objects.annotate(member_count=Count("members")).order_by("name")
    search_fields = ["name", "slug"]

    def perform_create(self, serializer: BaseSerializer[Department]) -> None:
        department = services.create_department(**serializer.validated_data)
        department.member_count = 0  # type: ignore[attr-defined]  # the list's annotation, for the reply
        serializer.instance = department

    def perform_update(self, serializer: BaseSerializer[Department]) -> None:
        department = serializer.instance
        assert department is not None  # an update has its object
        current = {"name": department.name, "slug": department.slug, "description": department.description}
        services.save_department(department, **(current | serializer.validated_data))

    def perform_destroy(self, department: Department) -> None:
        services.delete_department(department)


class UserViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Users are deactivated (is_active=false), not deleted, so their history stays readable."""

    permission_classes = [IsAuthenticated, HasRole.of(Role.ADMIN)]
    serializer_class = UserSerializer
    queryset = User.objects.select_related("department").order_by("username")

    def get_serializer_class(self):
        return NewUserSerializer if self.action == "create" else UserSerializer

    def perform_update(self, serializer: BaseSerializer[User]) -> None:
        actor = signed_in_user(self.request)
        services.check_self_edit(actor, serializer.instance, serializer.validated_data)
        active = serializer.validated_data.pop("is_active", None)  # through the service: it closes every door
        user = serializer.save()
        if active is False:
            services.deactivate(user, f"by {actor.username}")
        elif active is True:
            services.reactivate(user)
        user.refresh_from_db()  # the reply shows what the service wrote

    def get_queryset(self):
        qs = super().get_queryset()
        role = self.request.query_params.get("role")
        if role:
            if role not in Role.values:
                raise ValidationError({"role": f"Unknown role {role!r}; use one of {', '.join(Role.values)}."})
            qs = qs.filter(role=role)
        q = self.request.query_params.get("q")
        if q:
            qs = qs.filter(username__icontains=q)
        return qs


class TokenViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Your personal API tokens. DELETE revokes (the row stays, for the record)."""

    permission_classes = [IsAuthenticated, AnyRole]
    serializer_class = TokenSerializer
    queryset = PersonalToken.objects.none()  # narrowed per user below; typed for the schema

    def get_queryset(self):
        return PersonalToken.objects.filter(user=self.request.user)

    @extend_schema(responses={201: NewTokenSerializer})
    def create(self, request, *args, **kwargs) -> Response:
        serializer = TokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, plaintext = services.create_token(
            request.user,
            name=serializer.validated_data["name"],
            expires_in_days=serializer.validated_data.get("expires_in_days"),
        )
        data = NewTokenSerializer(token).data | {"token": plaintext}
        return Response(data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs) -> Response:
        token = self.get_object()
        if token == request.auth:
            raise ServiceError("This request is signed with this token; revoke it from another token or the UI.")
        services.revoke_token(request.user, token)
        return Response(status=status.HTTP_204_NO_CONTENT)
