"""/api/ for model access: the catalog, access requests, grants, gateway keys, quotas and usage."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from access.grants import services
from access.grants.filtersets import AccessRequestFilterSet, ApiKeyFilterSet, GrantFilterSet
from access.grants.models import LIMIT_FIELDS, AccessRequest, Grant
from access.grants.serializers import (
    AccessRequestSerializer,
    ApiKeySerializer,
    CatalogSerializer,
    DecisionSerializer,
    GrantSerializer,
    LimitsSerializer,
    NewApiKeySerializer,
)
from access.people.models import Department
from access.people.permissions import ADMIN_ONLY, AnyRole
from console.filtering import FilteredListMixin
from fleet.catalog.models import ModelArtifact


@extend_schema(responses=CatalogSerializer(many=True))
@api_view(["GET"])
@permission_classes([IsAuthenticated, AnyRole])
def catalog(request):
    """Every registered model, and the names it is served under, to ask for access to."""
    qs = ModelArtifact.objects.select_related("parent").prefetch_related("deployments").order_by("name")
    q = request.query_params.get("q")
    return Response(CatalogSerializer(qs.filter(name__icontains=q) if q else qs, many=True).data)


class AccessRequestViewSet(
    FilteredListMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Department users ask (POST) and may withdraw; admins approve or deny. ?state= filters."""

    permission_classes = [IsAuthenticated, AnyRole]
    serializer_class = AccessRequestSerializer
    filterset_class = AccessRequestFilterSet

    def perform_create(self, serializer: BaseSerializer[AccessRequest]) -> None:
        data = serializer.validated_data
        serializer.instance = services.request_access(
            self.request.user,
            models=data["models"],
            justification=data["justification"],
            duration_days=data["duration_days"],
            for_department=data.get("for_department", False),
        )

    def _decide(self, request, approve: bool) -> Response:
        if not request.user.is_fleet_admin:
            raise PermissionDenied("Only admins decide access requests.")
        body = DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        target = self.get_object()
        if approve:
            done = services.approve(
                request.user,
                target,
                reason=d["reason"],
                duration_days=d.get("duration_days"),
                for_department=d.get("for_department"),
                limits={k: d.get(k) for k in LIMIT_FIELDS},
            )
        else:
            done = services.deny(request.user, target, reason=d["reason"])
        return Response(AccessRequestSerializer(done).data)

    @extend_schema(request=DecisionSerializer, responses=AccessRequestSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None) -> Response:
        return self._decide(request, True)

    @extend_schema(request=DecisionSerializer, responses=AccessRequestSerializer)
    @action(detail=True, methods=["post"])
    def deny(self, request, pk=None) -> Response:
        return self._decide(request, False)

    @extend_schema(request=None, responses=AccessRequestSerializer)
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None) -> Response:
        return Response(AccessRequestSerializer(services.withdraw(request.user, self.get_object())).data)


class GrantViewSet(
    FilteredListMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Grants you hold (yours or your department's); admins and auditors see all.
    ?expiring=1: those running out within 14 days; ?active=1: only usable ones."""

    permission_classes = [IsAuthenticated, AnyRole]
    serializer_class = GrantSerializer
    filterset_class = GrantFilterSet

    def perform_create(self, serializer: BaseSerializer[Grant]) -> None:
        if not self.request.user.is_fleet_admin:
            raise PermissionDenied("Only admins grant access directly; department users request it.")
        d = serializer.validated_data
        serializer.instance = services.create_grant(
            self.request.user,
            user=d.get("user"),
            department=d.get("department"),
            models=d["models"],
            duration_days=d["duration_days"],
            note=d.get("note", ""),
            limits={k: d.get(k) for k in LIMIT_FIELDS},
        )

    @extend_schema(request=None, responses=GrantSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None) -> Response:
        if not request.user.is_fleet_admin:
            raise PermissionDenied("Only admins revoke grants.")
        return Response(GrantSerializer(services.revoke_grant(request.user, self.get_object())).data)


class ApiKeyViewSet(
    FilteredListMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Gateway keys: yours (admins and auditors: everyone's, ?user= filters). POST returns the key
    once; DELETE revokes it (the row stays, for the record)."""

    permission_classes = [IsAuthenticated, AnyRole]
    serializer_class = ApiKeySerializer
    filterset_class = ApiKeyFilterSet

    @extend_schema(responses={201: NewApiKeySerializer})
    def create(self, request, *args, **kwargs) -> Response:
        body = ApiKeySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        key, plaintext = services.create_key(
            request.user,
            grant=d["grant"],
            name=d["name"],
            models=d.get("models"),
            expires_in_days=d.get("expires_in_days"),
            limits={k: d.get(k) for k in LIMIT_FIELDS},
        )
        return Response(NewApiKeySerializer(key).data | {"key": plaintext}, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs) -> Response:
        key = self.get_object()
        if not request.user.is_fleet_admin and key.user_id != request.user.pk:
            raise PermissionDenied("You can only revoke your own keys.")
        services.revoke_key(request.user, key)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(request=LimitsSerializer, responses=LimitsSerializer)
@api_view(["GET", "PUT"])
@permission_classes(ADMIN_ONLY)
def department_quota(request, slug: str):
    """A department's quota: all its members' keys together (empty: no limit)."""
    department = get_object_or_404(Department, slug=slug)
    if request.method == "PUT":
        body = LimitsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        quota = services.set_department_quota(
            request.user, department, {k: body.validated_data.get(k) for k in LIMIT_FIELDS}
        )
        return Response(quota.limits())
    current = getattr(department, "quota", None)
    return Response(current.limits() if current else {k: None for k in LIMIT_FIELDS})
