"""Helpers shared by test files (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import gc
import io
import subprocess
from dataclasses import dataclass

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


def call_gateway(method: str, path: str, key: str, body: bytes = b"") -> list[dict]:
    """One request through a fresh gateway ASGI app in this process; the ASGI messages it sent back.

    Its event loop is closed with a bounded wait for the gateway's background tasks (its Redis
    change feed can take long to wind down when cancelled mid-message), and its database threads
    are ended, so the test database can be dropped."""
    from access.gateway.app import Gateway  # the app's settings are the test's

    gateway, sent = Gateway(), []

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

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(call())
        background = asyncio.all_tasks(loop)
        for task in background:
            task.cancel()
        if background:
            loop.run_until_complete(asyncio.wait(background, timeout=5))
    finally:
        loop.close()
        gateway._db.shutdown(wait=True)
        gc.collect()  # the threads' connections go with them
    return sent


@dataclass
class ReadPdf:
    pages: list[str]  # each page's text, as a PDF reader extracts it
    bars: bool  # some page fills shapes in the chart's bar colour

    @property
    def text(self) -> str:
        return "\n".join(self.pages)


def read_pdf(data: bytes) -> ReadPdf:
    """A PDF read back with a PDF library (pypdf): its pages' text, and whether the chart drew bars."""
    import re

    from pypdf import PdfReader

    from audit.pdf import BARS

    reader = PdfReader(io.BytesIO(data))
    fill = re.compile(rb"([\d.]+) ([\d.]+) ([\d.]+) rg")
    want = (BARS.red, BARS.green, BARS.blue)
    contents = [page.get_contents() for page in reader.pages]
    bars = any(
        all(abs(float(got) - w) < 0.01 for got, w in zip(m.groups(), want, strict=True))
        for content in contents
        if content is not None  # (an empty-looking stream object is falsy: test for None)
        for m in fill.finditer(content.get_data())
    )
    return ReadPdf([" ".join(page.extract_text().split()) for page in reader.pages], bars)
