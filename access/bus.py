"""Tell every gateway process that keys or routes changed (Redis pub/sub; each process listens)."""

from __future__ import annotations

import logging
from functools import lru_cache

import redis
from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)
CHANNEL = "fleet:gateway:changed"
TOPICS = ("keys", "routes")


@lru_cache(maxsize=1)
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)


def publish(what: str) -> None:
    assert what in TOPICS
    try:
        _client().publish(CHANNEL, what)
    except redis.RedisError as exc:  # the gateways' caches also expire on their own (keys.TTL_S)
        log.error("could not tell the gateways that %s changed: %s", what, exc)


def publish_on_commit(what: str) -> None:
    transaction.on_commit(lambda: publish(what))
