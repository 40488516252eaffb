"""The API's one body parser: JSON, with NUL characters refused wherever they sit."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ValidationError

NUL_MESSAGE = "NUL characters (\\u0000) are not allowed."


def nul_path(value: Any, path: str = "") -> str | None:
    """Where in a parsed body a string (value or key) holds a NUL character, as ``a.b.0``; None if nowhere."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        here = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and "\x00" in key:
            return here
        found = nul_path(item, here)
        if found is not None:
            return found
    return None


class JSONParser(parsers.JSONParser):
    """PostgreSQL text cannot hold NUL and no field here means one: refuse it in the body, naming the field."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        where = nul_path(data)
        if where is not None:
            raise ValidationError({where or "body": NUL_MESSAGE})
        return data
