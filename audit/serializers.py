from __future__ import annotations

from rest_framework import serializers

from audit.models import COLUMNS, AuditEvent
from console.serializers import BooleanField, IntegerField, ModelSerializer, Serializer

_FIELDS = [*COLUMNS, "hash", "actor_role_label"]


class AuditEventSerializer(ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = _FIELDS
        read_only_fields = _FIELDS


def public_event(event: AuditEvent) -> dict:
    """The JSON an auditor's browser receives live (the serializer's fields, built without DRF:
    the gateway's ledger publishes hundreds of these a second)."""
    return event.as_dict() | {"hash": event.hash, "actor_role_label": event.actor_role_label}


class AuditEventPageSerializer(serializers.Serializer):
    results = AuditEventSerializer(many=True)
    next_before = IntegerField(allow_null=True, help_text="pass as before= for the next (older) page")


class VerifyRequestSerializer(Serializer):
    full = BooleanField(default=False, help_text="from the chain's start, not the last checkpoint")


class VerificationSerializer(serializers.Serializer):
    ok = BooleanField()
    checked = IntegerField()
    from_seq = IntegerField(allow_null=True)
    intact_up_to = IntegerField(allow_null=True)
    broken_seq = IntegerField(allow_null=True)
    problem = serializers.CharField(allow_blank=True, allow_null=True)
    full = BooleanField()
    summary = serializers.CharField()
