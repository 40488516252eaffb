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

# KEYS: counters; ARGV: now, then per counter: limit (0 = none), kind (r = requests, t = tokens),
# ttl, retry-after. Returns 0 when allowed (and the request counters are incremented), else the
# largest retry-after among the limits that refused, and the index of the first one.
_SCRIPT = """
local worst, which = 0, 0
for i = 1, #KEYS do
  local limit = tonumber(ARGV[4 * i - 2])
  if limit > 0 then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    local kind = ARGV[4 * i - 1]
    if (kind == 'r' and used + 1 > limit) or (kind == 't' and used >= limit) then
      local retry = tonumber(ARGV[4 * i + 1])
      if retry > worst then worst = retry end
      if which == 0 then which = i end
    end
  end
end
if worst > 0 then return {worst, which} end
for i = 1, #KEYS do
  if ARGV[4 * i - 1] == 'r' then
    redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4 * i]))
  end
end
return {0, 0}
"""

_LIMIT_OF = {
    ("r", "m"): "requests_per_minute",
    ("t", "m"): "tokens_per_minute",
    ("t", "d"): "tokens_per_day",
    ("t", "mo"): "tokens_per_month",
}
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

    def counters(self, scope: str) -> list[tuple[str, str, str, int, int]]:
        """(redis key, kind, window, ttl, retry-after) for one scope such as ``k:12``."""
        return [
            (f"{PREFIX}:{scope}:r:m:{self.minute}", "r", "m", 120, self.to_minute_end),
            (f"{PREFIX}:{scope}:t:m:{self.minute}", "t", "m", 120, self.to_minute_end),
            (f"{PREFIX}:{scope}:t:d:{self.day}", "t", "d", 2 * 86400, self.to_day_end),
            (f"{PREFIX}:{scope}:t:mo:{self.month}", "t", "mo", 32 * 86400, self.to_month_end),
        ]


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

    async def check(self, scopes: list[tuple[str, str, dict[str, int]]], now: float | None = None) -> Verdict:
        """``scopes``: (scope id, what to call it in a refusal, limits). Counts the request if allowed."""
        windows = Windows.at(time.time() if now is None else now)
        keys: list[str] = []
        args: list[int | str] = [int(time.time())]
        labels: list[str] = []
        for scope, label, limits in scopes:
            for name, kind, window, ttl, retry in windows.counters(scope):
                limit_name = _LIMIT_OF[(kind, window)]
                keys.append(name)
                args += [limits.get(limit_name, 0), kind, ttl, retry]
                labels.append(f"{label}'s limit of {limits.get(limit_name, 0)} {_DESCRIBE[limit_name]}")
        retry, which = await self._check(keys=keys, args=args)
        if retry:
            return Verdict(False, int(retry), f"Over quota: {labels[which - 1]}. Retry after {retry} s.")
        return Verdict(True)

    async def add_tokens(self, owed: dict[str, int], now: float | None = None) -> None:
        windows = Windows.at(time.time() if now is None else now)
        pipe = self.redis.pipeline(transaction=False)
        for scope, tokens in owed.items():
            for name, kind, _window, ttl, _retry in windows.counters(scope):
                if kind == "t":
                    pipe.incrby(name, tokens)
                    pipe.expire(name, ttl)
        await pipe.execute()
