"""Read side of the catalog beyond its list: the "Will it fit?" question, from the page's form or
the API's request alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet.planning.estimator import GIB, ModelShape
from fleet.planning.placement import Spec


def fit_spec(data: Mapping[str, Any]) -> Spec:
    """The placement question in cleaned data (the fit form's or POST /api/fit/'s); what the form
    does not ask (replicas, strategy, node labels) keeps the planner's default."""
    return Spec(
        shape=ModelShape.from_artifact(data["model"]),
        replicas=data.get("replicas", 1),
        tp=data["tp"],
        pp=data["pp"],
        max_model_len=data["max_model_len"],
        concurrency=data["concurrency"],
        gpu_memory_utilization=data["gpu_memory_utilization"],
        kv_dtype=data["kv_dtype"],
        quantization=data["quantization"],
        strategy=data.get("strategy", "binpack"),
        selector=tuple(sorted(data.get("selector", {}).items())),
        cpu_kv_space_bytes=int(data["cpu_kv_space_gib"] * GIB),
    )
