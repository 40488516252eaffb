from django.contrib import admin

from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the database refuses changes anyway; this keeps the admin from offering them."""

    list_display = ["seq", "created_at", "actor_name", "action", "target_repr", "source_ip"]
    list_filter = ["action", "actor_role"]
    search_fields = ["actor_name", "action", "target_repr", "request_id"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
