"""The telemetry message: its shape, its check, and the per-minute rollup of its numbers.

Pure Python (no Django): the agent builds these messages and the console reads them. One message
per node per tick crosses the node's link; the agent endpoint puts it on the channel-layer group
``telemetry.fleet``, which also carries each node's topic ``telemetry.node.<id>`` (console.topics):

    {"v": 1, "node": 7, "name": "gpu-a", "ts": 1764200000.25, "seq": 42,
     "host": {"cpu": 12.5, "ram_used": ..., "ram_total": ..., "load1": 0.4},
     "gpus": [{"i": 0, "util": 97, "mem_used": ..., "mem_total": ..., "temp": 61, "power": 312.4,
               "power_limit": 700.0, "sm_clock": 1980, "ecc": 0, "xid": 0, "throttle": ["sw_power_cap"]}],
     "errors": [{"i": 1, "error": "GPU is lost"}],      # GPUs whose reading failed this tick
     "instances": []}                                   # per-instance serving metrics (deployments)
"""

from __future__ import annotations

import math
from typing import Any

VERSION = 1
GPU_METRICS = ("util", "mem_used", "temp", "power", "sm_clock")
HOST_METRICS = ("cpu", "ram_used", "load1")
MAX_GPUS = 64


class MalformedTelemetry(ValueError):
    """The message does not have the shape above; it is dropped and counted, never raised further."""


def _number(value: Any, where: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MalformedTelemetry(f"{where} must be a finite number, got {value!r}")
    return value


def _all_finite(value: Any, where: str = "message", depth: int = 0) -> None:
    """No NaN or infinity anywhere (Postgres JSON refuses them), and no deep nesting."""
    if depth > 6:
        raise MalformedTelemetry(f"{where} is nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise MalformedTelemetry(f"{where} must be finite")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MalformedTelemetry(f"{where} has a key that is not text")
            _all_finite(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _all_finite(item, f"{where}[{i}]", depth + 1)
    elif value is not None and not isinstance(value, (str, int, float)):
        raise MalformedTelemetry(f"{where} holds a {type(value).__name__}")


def check(message: Any) -> dict:
    """Return ``message`` if it is a well-formed telemetry message, else raise MalformedTelemetry."""
    if not isinstance(message, dict):
        raise MalformedTelemetry("a telemetry message is a JSON object")
    if message.get("v") != VERSION:
        raise MalformedTelemetry(f"unknown telemetry version {message.get('v')!r}")
    if not isinstance(message.get("node"), int) or isinstance(message.get("node"), bool):
        raise MalformedTelemetry("node must be the node's id")
    _number(message.get("ts"), "ts")
    _number(message.get("seq", 0), "seq")
    host = message.get("host")
    if not isinstance(host, dict):
        raise MalformedTelemetry("host must be an object")
    for key in (*HOST_METRICS, "ram_total"):
        _number(host.get(key), f"host.{key}", optional=True)
    gpus = message.get("gpus")
    if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
        raise MalformedTelemetry(f"gpus must be a list of at most {MAX_GPUS}")
    for gpu in gpus:
        index = gpu.get("i") if isinstance(gpu, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < MAX_GPUS:
            raise MalformedTelemetry(f"each GPU reading is an object with its index i (0–{MAX_GPUS - 1})")
        for key in (*GPU_METRICS, "mem_total", "power_limit"):
            _number(gpu.get(key), f"gpus[{index}].{key}", optional=True)
    if not isinstance(message.get("errors", []), list) or not isinstance(message.get("instances", []), list):
        raise MalformedTelemetry("errors and instances must be lists")
    _all_finite(message)
    return message


def check_rollup_rows(rows: Any) -> list[dict]:
    """The rows of one minute as MinuteRollup.rows() makes them; raise MalformedTelemetry otherwise."""
    if not isinstance(rows, list) or len(rows) > MAX_GPUS + 1:
        raise MalformedTelemetry("rollup rows must be a list (one per GPU and one for the host)")
    seen = set()
    for row in rows:
        if not isinstance(row, dict):
            raise MalformedTelemetry("a rollup row is an object")
        gpu, samples, stats = row.get("gpu"), row.get("samples"), row.get("stats")
        if not isinstance(gpu, int) or isinstance(gpu, bool) or not -1 <= gpu < MAX_GPUS or gpu in seen:
            raise MalformedTelemetry(f"rollup gpu must be a distinct index from -1 (host) to {MAX_GPUS - 1}")
        seen.add(gpu)
        if not isinstance(samples, int) or isinstance(samples, bool) or not 1 <= samples <= 6000:
            raise MalformedTelemetry("rollup samples must be a count from 1 to 6000")
        allowed = HOST_METRICS if gpu == -1 else GPU_METRICS
        if not isinstance(stats, dict) or not set(stats) <= set(allowed):
            raise MalformedTelemetry(f"rollup stats may hold only {', '.join(allowed)}")
        for metric, triple in stats.items():
            if not isinstance(triple, list) or len(triple) != 3:
                raise MalformedTelemetry(f"rollup {metric} must be [min, avg, max]")
            for value in triple:
                _number(value, f"rollup {metric}")
    return rows


class MinuteRollup:
    """Accumulates one minute of samples into min/avg/max per GPU and for the host."""

    def __init__(self, minute: int) -> None:
        self.minute = minute  # epoch seconds of the minute's start
        self._acc: dict[int, dict[str, list[float]]] = {}  # gpu index (-1 host) → metric → [min, sum, max, n]

    def _add(self, index: int, metric: str, value: float | None) -> None:
        if value is None:
            return
        acc = self._acc.setdefault(index, {}).get(metric)
        if acc is None:
            self._acc[index][metric] = [value, value, value, 1]
        else:
            acc[0] = min(acc[0], value)
            acc[1] += value
            acc[2] = max(acc[2], value)
            acc[3] += 1

    def add(self, message: dict) -> None:
        for metric in HOST_METRICS:
            self._add(-1, metric, message["host"].get(metric))
        for gpu in message["gpus"]:
            for metric in GPU_METRICS:
                self._add(gpu["i"], metric, gpu.get(metric))

    def rows(self) -> list[dict]:
        """[{"gpu": i, "samples": n, "stats": {metric: [min, avg, max]}}] ready to send."""
        out = []
        for index, metrics in sorted(self._acc.items()):
            stats = {m: [lo, round(total / n, 3), hi] for m, (lo, total, hi, n) in metrics.items()}
            samples = max(n for _lo, _t, _hi, n in metrics.values())
            out.append({"gpu": index, "samples": samples, "stats": stats})
        return out


def summarize(message: dict | None) -> dict:
    """Utilization and memory of a whole node in percent (GPUs if it has any, else the host).
    static/js/nodes.js computes the same from live messages."""
    if not message:
        return {"util": None, "mem": None}
    gpus = message.get("gpus") or []
    if gpus:
        util = sum(g.get("util") or 0 for g in gpus) / len(gpus)
        used, total = sum(g.get("mem_used") or 0 for g in gpus), sum(g.get("mem_total") or 0 for g in gpus)
    else:
        host = message.get("host") or {}
        util, used, total = host.get("cpu") or 0, host.get("ram_used") or 0, host.get("ram_total") or 0
    return {"util": round(util, 1), "mem": round(100 * used / total, 1) if total else None}
