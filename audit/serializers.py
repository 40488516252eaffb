from __future__ import annotations

from rest_framework import serializers

from audit.models import COLUMNS, AuditEvent

_FIELDS = [*COLUMNS, "hash"]


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = _FIELDS
        read_only_fields = _FIELDS


def public_event(event: AuditEvent) -> dict:
    """The JSON an auditor's browser receives live (the serializer's fields, built without DRF:
    the gateway's ledger publishes hundreds of these a second)."""
    return event.as_dict() | {"hash": event.hash, "actor_role_label": event.actor_role_label}
