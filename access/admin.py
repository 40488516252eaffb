from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from access.models import Department, PersonalToken, User


@admin.register(User)
class FleetUserAdmin(UserAdmin):
    list_display = ["username", "email", "role", "department", "is_active", "last_login"]
    list_filter = ["role", "department", "is_active"]
    list_select_related = ["department"]
    fieldsets = UserAdmin.fieldsets[:1] + (("Fleet", {"fields": ["role", "department"]}),) + (
        (None, {"fields": ["first_name", "last_name", "email", "is_active"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
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
