"""Helpers shared by test files (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

from django.db import connection


def tamper(sql: str, params: list) -> None:
    """What an attacker with superuser SQL could do: bypass the trigger and edit the table."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s: a real server a test started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def call_gateway(gateway: Any, method: str, path: str, key: str, body: bytes = b"") -> list[dict]:
    """One request through the gateway's ASGI app in this process; the ASGI messages it sent back."""
    sent: list[dict] = []

    async def call() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else await asyncio.sleep(3600)

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "path": path,
            "method": method,
            "client": ("127.0.0.1", 1),
            "headers": [(b"authorization", f"Bearer {key}".encode())],
        }
        await gateway(scope, receive, send)

    asyncio.run(call())
    return sent
