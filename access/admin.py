from typing import Any, cast

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from access.grants.models import AccessRequest, ApiKey, Grant
from access.people.models import Department, PersonalToken, User
from access.usage.models import UsageRecord


@admin.register(User)
class FleetUserAdmin(UserAdmin):
    list_display = ["username", "email", "role", "department", "is_active", "last_login"]
    list_filter = ["role", "department", "is_active"]
    list_select_related = ["department"]
    fieldsets = (
        cast("tuple[Any, ...]", UserAdmin.fieldsets)[:1]  # a tuple of fieldsets, never None
        + (("Fleet", {"fields": ["role", "department"]}),)
        + (
            (None, {"fields": ["first_name", "last_name", "email", "is_active"]}),
            ("Dates", {"fields": ["last_login", "date_joined"]}),
        )
    )
    add_fieldsets = UserAdmin.add_fieldsets + (("Fleet", {"fields": ["role", "department"]}),)
    readonly_fields = ["last_login", "date_joined"]


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(PersonalToken)
class PersonalTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_select_related = ["user"]
    readonly_fields = ["user", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    exclude = ["digest"]

    def has_add_permission(self, request) -> bool:  # tokens are made by their owner, shown once
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # revoke instead; the row stays
        return False


class ViewOnlyAdmin(admin.ModelAdmin):
    """Access is changed through the console (its services audit each step and tell the gateways);
    Django admin only shows it."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AccessRequest)
class AccessRequestAdmin(ViewOnlyAdmin):
    list_display = ["pk", "requester", "department", "state", "duration_days", "created_at", "decided_by"]
    list_filter = ["state", "department"]
    list_select_related = ["requester", "department", "decided_by"]


@admin.register(Grant)
class GrantAdmin(ViewOnlyAdmin):
    list_display = ["pk", "user", "department", "expires_at", "revoked_at", "tokens_per_minute", "tokens_per_day"]
    list_select_related = ["user", "department"]


@admin.register(ApiKey)
class ApiKeyAdmin(ViewOnlyAdmin):
    list_display = ["name", "user", "prefix", "grant", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_select_related = ["user", "grant"]
    exclude = ["digest"]


@admin.register(UsageRecord)
class UsageRecordAdmin(ViewOnlyAdmin):
    list_display = [
        "created_at",
        "user",
        "department",
        "model",
        "endpoint",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
    ]
    list_filter = ["model", "status", "endpoint"]
    list_select_related = ["user", "department"]
