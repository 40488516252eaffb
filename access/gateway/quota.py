"""Quotas in Redis: fixed windows per key and per department, checked and counted atomically.

Before forwarding, one script call checks every limit that is set (requests this minute + 1 ≤ rpm;
tokens used this minute/day/month < the limit) and, only if all pass, counts the request. After the
response the tokens it used are added to the windows. Counters are kept whether or not a limit is
set, so a limit set mid-window applies to what was already used.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

log = logging.getLogger(__name__)
PREFIX = "fleet:quota"
TOKENS_EVERY_S = 0.05  # used tokens reach Redis within this; a quota can overshoot by one such window

# KEYS: each scope's four counters in LIMITS' order (requests this minute, then tokens this minute,
# day, month); ARGV: now, seconds to the month's end, then each counter's limit (0 = none). Returns
# {0, 0} when allowed (and each scope's request counter is incremented), else the largest
# retry-after among the limits that refused, and the index of the first one. Ten arguments for
# two scopes, not forty: packing them is most of what a check costs the gateway's CPU.
_SCRIPT = """
local now = tonumber(ARGV[1])
local retry_of = {60 - now % 60, 60 - now % 60, 86400 - now % 86400, tonumber(ARGV[2])}
local worst, which = 0, 0
for i = 1, #KEYS do
  local limit = tonumber(ARGV[i + 2])
  if limit > 0 then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    local slot = (i - 1) % 4 + 1
    if (slot == 1 and used + 1 > limit) or (slot > 1 and used >= limit) then
      if retry_of[slot] > worst then worst = retry_of[slot] end
      if which == 0 then which = i end
    end
  end
end
if worst > 0 then return {worst, which} end
for i = 1, #KEYS, 4 do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], 120)
end
return {0, 0}
"""

LIMITS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "tokens_per_month")
_DESCRIBE = {
    "requests_per_minute": "requests per minute",
    "tokens_per_minute": "tokens per minute",
    "tokens_per_day": "tokens per day",
    "tokens_per_month": "tokens per month",
}


@dataclass(frozen=True)
class Windows:
    """The current minute, day and month (UTC) and the seconds until each ends."""

    minute: int
    day: int
    month: str
    to_minute_end: int
    to_day_end: int
    to_month_end: int

    @classmethod
    def at(cls, now: float) -> Windows:
        t = time.gmtime(now)
        days_in_month = calendar.monthrange(t.tm_year, t.tm_mon)[1]
        to_day_end = 86400 - (int(now) % 86400)
        return cls(
            minute=int(now // 60),
            day=int(now // 86400),
            month=f"{t.tm_year}{t.tm_mon:02d}",
            to_minute_end=60 - int(now) % 60,
            to_day_end=to_day_end,
            to_month_end=(days_in_month - t.tm_mday) * 86400 + to_day_end,
        )

    def counters(self, scope: str) -> list[str]:
        """One scope's (such as ``k:12``) four counters, in ``LIMITS``' order."""
        return [
            f"{PREFIX}:{scope}:r:m:{self.minute}",
            f"{PREFIX}:{scope}:t:m:{self.minute}",
            f"{PREFIX}:{scope}:t:d:{self.day}",
            f"{PREFIX}:{scope}:t:mo:{self.month}",
        ]

    def token_counters(self, scope: str) -> list[tuple[str, int]]:
        """(counter, ttl) of the three token windows."""
        _requests, minute, day, month = self.counters(scope)
        return [(minute, 120), (day, 2 * 86400), (month, 32 * 86400)]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0
    message: str = ""


class Quotas:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._check = client.register_script(_SCRIPT)
        self._owed: dict[str, int] = {}
        self._windows = Windows.at(0)
        self._windows_at = 0  # the second ``_windows`` was taken at: they change at most once a second

    def owe(self, scopes: list[str], tokens: int) -> None:
        """Count tokens a response used; ``flush_loop`` adds them to Redis every ``TOKENS_EVERY_S``."""
        for scope in scopes:
            self._owed[scope] = self._owed.get(scope, 0) + tokens

    async def flush_loop(self) -> None:
        while True:
            await asyncio.sleep(TOKENS_EVERY_S)
            owed, self._owed = self._owed, {}
            if owed:
                try:
                    await self.add_tokens(owed)
                except Exception as exc:  # Redis away: count them next time
                    log.warning("could not add used tokens to the quotas: %s", exc)
                    for scope, n in owed.items():
                        self._owed[scope] = self._owed.get(scope, 0) + n

    def windows(self, now: float) -> Windows:
        if int(now) != self._windows_at:
            self._windows, self._windows_at = Windows.at(now), int(now)
        return self._windows

    async def check(self, scopes: list[tuple[str, str, dict[str, int]]], now: float | None = None) -> Verdict:
        """``scopes``: (scope id, what to call it in a refusal, limits). Counts the request if allowed."""
        now = time.time() if now is None else now
        windows = self.windows(now)
        keys: list[str] = []
        args: list[int] = [int(now), windows.to_month_end]
        for scope, _label, limits in scopes:
            keys += windows.counters(scope)
            args += [limits.get(name, 0) for name in LIMITS]
        retry, which = await self._check(keys=keys, args=args)
        if retry:
            _scope, label, limits = scopes[(which - 1) // 4]
            name = LIMITS[(which - 1) % 4]
            what = f"{label}'s limit of {limits.get(name, 0)} {_DESCRIBE[name]}"
            return Verdict(False, int(retry), f"Over quota: {what}. Retry after {retry} s.")
        return Verdict(True)

    async def add_tokens(self, owed: dict[str, int], now: float | None = None) -> None:
        windows = self.windows(time.time() if now is None else now)
        pipe = self.redis.pipeline(transaction=False)
        for scope, tokens in owed.items():
            for name, ttl in windows.token_counters(scope):
                pipe.incrby(name, tokens)
                pipe.expire(name, ttl)
        await pipe.execute()
