"""JSON, not pickle, for values in the Redis cache.

Node agents hold credentials for the same Redis (broker and channel layer). Django's default
Redis serializer unpickles what it reads, so anyone able to write a cache key could run code in
the console; JSON cannot carry code. Integers stay raw so incr()/decr() remain atomic.
"""

from __future__ import annotations

import json
from typing import Any


class JSONSerializer:
    def dumps(self, obj: Any) -> int | bytes:
        if type(obj) is int:  # noqa: E721 - exactly int, as Django's serializer does (not bool)
            return obj
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Any:
        try:
            return int(data)
        except ValueError:
            return json.loads(data)
