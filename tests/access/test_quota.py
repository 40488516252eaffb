"""The quota script against real Redis: each window refuses by its own name and says when it opens."""

from __future__ import annotations

import asyncio
import calendar
import secrets

import redis.asyncio as aioredis
from django.conf import settings

from access.gateway.quota import Quotas

# 23:58:30 UTC on 27 February 2026 (a 28-day month): the minute ends in 30 s, the day in 90 s,
# the month one day and 90 s later.
NOW = calendar.timegm((2026, 2, 27, 23, 58, 30, 0, 0, 0))


def test_each_window_refuses_with_its_limit_and_the_seconds_until_it_opens():
    async def go() -> list:
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        quotas = Quotas(client)
        key, dept = f"k:{secrets.token_hex(4)}", f"d:{secrets.token_hex(4)}"
        scopes = [(key, "key abc", {"requests_per_minute": 2}), (dept, "department Radiology", {})]
        seen = [await quotas.check(scopes, NOW) for _ in range(3)]  # the third is one request too many
        for limit, tokens in (("tokens_per_minute", 5), ("tokens_per_day", 5), ("tokens_per_month", 5)):
            other = f"d:{secrets.token_hex(4)}"
            await quotas.add_tokens({other: tokens}, NOW)
            scopes = [(f"k:{secrets.token_hex(4)}", "key def", {}), (other, "department Radiology", {limit: 5})]
            seen.append(await quotas.check(scopes, NOW))
            seen.append(await quotas.check([(other, "department Radiology", {limit: 6})], NOW))  # 5 used < 6
        await client.aclose()
        return seen

    ok1, ok2, rpm, tpm, tpm_under, tpd, tpd_under, tpmo, tpmo_under = asyncio.run(go())
    assert ok1.allowed and ok2.allowed and tpm_under.allowed and tpd_under.allowed and tpmo_under.allowed
    assert (rpm.allowed, rpm.retry_after) == (False, 30)
    assert rpm.message == "Over quota: key abc's limit of 2 requests per minute. Retry after 30 s."
    assert (tpm.retry_after, tpd.retry_after, tpmo.retry_after) == (30, 90, 86400 + 90)
    assert "department Radiology's limit of 5 tokens per day" in tpd.message
    assert "department Radiology's limit of 5 tokens per month" in tpmo.message
