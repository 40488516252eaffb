"""Streaming a synchronous generator (an ORM cursor, say) from the ASGI server in constant memory.

Django serves a *synchronous* iterator under ASGI by first reading it whole into a list; this
hands it over one chunk at a time instead, each produced in Django's thread for synchronous code
(so the database cursor stays on its connection)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import cast

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

_DONE = object()


async def _chunks(source: Iterator[bytes]) -> AsyncIterator[bytes]:
    take = sync_to_async(lambda: next(source, _DONE), thread_sensitive=True)
    while (chunk := await take()) is not _DONE:
        yield cast(bytes, chunk)  # not _DONE: one of source's chunks


def stream(
    source: Iterator[bytes], content_type: str, filename: str | None = None, asynchronous: bool = True
) -> StreamingHttpResponse:
    """``asynchronous``: the request came through ASGI (the test client's is synchronous)."""
    response = StreamingHttpResponse(_chunks(source) if asynchronous else source, content_type=content_type)
    if filename:
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
