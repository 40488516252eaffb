"""Helpers shared by test files (fixtures live in conftest.py)."""

from __future__ import annotations

from django.db import connection


def tamper(sql: str, params: list) -> None:
    """What an attacker with superuser SQL could do: bypass the trigger and edit the table."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")
