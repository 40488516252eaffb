"""Planning one deployment over a large fleet: 1,000 nodes × 8 GPUs (mixed 80 GB and 141 GB, some
busy, some cordoned or offline, labelled by zone), Llama-3.1-70B at TP 4 × 2 replicas, and an
8B model at TP 1 × 16 replicas spread. Pure CPU: no database.

    .venv/bin/python bench/placement.py [--quick]

Ends with one JSON line: p50_ms, p99_ms (per plan() call, both deployments pooled).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleet.planning.estimator import GIB, ModelShape  # noqa: E402
from fleet.planning.placement import GpuView, NodeView, Spec, plan  # noqa: E402
from tests.model_configs import LLAMA_31_8B, LLAMA_31_70B  # noqa: E402 - public configs as data


def fleet(n: int = 1000, gpus: int = 8, seed: int = 1) -> list[NodeView]:
    rng = random.Random(seed)
    nodes = []
    for i in range(n):
        memory = 80 * GIB if i % 3 else 141 * GIB
        views = [GpuView(g, memory, memory if rng.random() > 0.6 else rng.randint(1, 40) * GIB) for g in range(gpus)]
        nodes.append(
            NodeView(
                id=i,
                name=f"node-{i:04}",
                kind="gpu",
                online=rng.random() > 0.02,
                cordoned=rng.random() < 0.03,
                labels={"zone": rng.choice("abc")},
                gpus=views,
            )
        )
    return nodes


def main(quick: bool) -> dict:
    nodes = fleet()
    specs = [
        Spec(ModelShape.from_config(LLAMA_31_70B), replicas=2, tp=4, max_model_len=8192, concurrency=16),
        Spec(
            ModelShape.from_config(LLAMA_31_8B),
            replicas=16,
            max_model_len=8192,
            concurrency=32,
            strategy="spread",
            selector=(("zone", "a"),),
        ),
    ]
    for spec in specs:  # warm up, and prove the plans are real
        placed = plan(spec, nodes)
        assert placed.ok, placed.message
    runs = 40 if quick else 300
    times = []
    for i in range(runs):
        spec = specs[i % 2]
        start = time.perf_counter()
        plan(spec, nodes)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "nodes": len(nodes),
        "gpus": sum(len(n.gpus) for n in nodes),
        "runs": runs,
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[max(0, int(runs * 0.99) - 1)], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 60 s")
    print(json.dumps(main(parser.parse_args().quick)))
