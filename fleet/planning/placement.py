"""Where a deployment's replicas go: a pure function from a spec and a view of the fleet.

Each replica is ``pp`` pipeline stages of ``tp`` GPUs: tensor parallel stays inside one node
(it needs the fast links), stages may sit on different nodes. Every node that cannot take a stage
gets its reason. ``binpack`` fills the fullest nodes first (keeps whole nodes free for big
models); ``spread`` uses the emptiest first (fewer replicas lost with one node). CPU nodes (vllm-cpu)
take single-process replicas only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.planning import estimator
from fleet.planning.estimator import GIB, Estimate, ModelShape


@dataclass(frozen=True)
class GpuView:
    index: int
    memory_total: int
    memory_free: int


@dataclass
class NodeView:
    id: int
    name: str
    kind: str  # "gpu" | "cpu"
    online: bool = True
    cordoned: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    gpus: list[GpuView] = field(default_factory=list)
    ram_free: int = 0


@dataclass(frozen=True)
class Spec:
    shape: ModelShape
    replicas: int = 1
    tp: int = 1
    pp: int = 1
    max_model_len: int = 4096
    concurrency: int = 1
    gpu_memory_utilization: float = 0.9
    kv_dtype: str = "auto"
    quantization: str = "none"
    strategy: str = "binpack"  # or "spread"
    selector: tuple[tuple[str, str], ...] = ()  # node labels that must match
    cpu_kv_space_bytes: int = GIB
    block_size: int | None = None  # tokens per KV block; None: the backend's own
    check_fit: bool = True  # False: an admin overrides the estimator ("force"); free memory still counts


@dataclass
class Stage:
    node_id: int
    node: str
    gpus: list[int]  # GPU indexes; empty on a CPU node


@dataclass
class Placement:
    ok: bool
    message: str
    replicas: list[list[Stage]] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    estimates: dict[str, Estimate] = field(default_factory=dict)  # per GPU size ("80.0 GiB") or "cpu"


STRATEGIES = ("binpack", "spread")


def plan(spec: Spec, fleet: list[NodeView]) -> Placement:
    if spec.strategy not in STRATEGIES:
        raise estimator.EstimateError(f"Unknown strategy {spec.strategy!r}; use binpack or spread.", "strategy")
    if spec.replicas < 1:
        raise estimator.EstimateError("Replicas start at 1.", "replicas")
    estimates: dict[int, Estimate] = {}  # by GPU memory size: fleets have few kinds of GPU

    def gpu_estimate(total: int) -> Estimate:
        if total not in estimates:
            estimates[total] = estimator.estimate_gpu(
                spec.shape,
                gpu_memory_bytes=total,
                gpu_memory_utilization=spec.gpu_memory_utilization,
                tp=spec.tp,
                pp=spec.pp,
                max_model_len=spec.max_model_len,
                concurrency=spec.concurrency,
                kv_dtype=spec.kv_dtype,
                quantization=spec.quantization,
                block_size=spec.block_size,
            )
        return estimates[total]

    cpu_estimate: Estimate | None = None
    rejected: dict[str, str] = {}
    free: dict[int, list[int]] = {}  # node id → GPU indexes that can take a rank (CPU node: [-1])
    nodes = {n.id: n for n in fleet}
    selector = dict(spec.selector)
    for node in fleet:
        if not node.online:
            rejected[node.name] = "offline"
            continue
        if node.cordoned:
            rejected[node.name] = "cordoned: takes no new placements"
            continue
        missing = {k: v for k, v in selector.items() if node.labels.get(k) != v}
        if missing:
            rejected[node.name] = "labels do not match " + ", ".join(f"{k}={v}" for k, v in missing.items())
            continue
        if node.kind == "cpu":
            if spec.tp * spec.pp > 1:
                rejected[node.name] = "CPU node: runs one process per replica (no tensor or pipeline parallel)"
                continue
            if cpu_estimate is None:
                cpu_estimate = estimator.estimate_cpu(
                    spec.shape,
                    kv_space_bytes=spec.cpu_kv_space_bytes,
                    max_model_len=spec.max_model_len,
                    concurrency=spec.concurrency,
                    kv_dtype=spec.kv_dtype,
                    quantization=spec.quantization,
                    block_size=spec.block_size,
                )
            needed = (
                spec.cpu_kv_space_bytes
                + estimator.weights_bytes(spec.shape, spec.quantization)
                + estimator.NON_TORCH_BYTES
            )
            if spec.check_fit and not cpu_estimate.fits:
                rejected[node.name] = cpu_estimate.verdict
            elif needed > node.ram_free:
                rejected[node.name] = f"needs {needed / GIB:.1f} GiB of free RAM, has {node.ram_free / GIB:.1f} GiB"
            else:
                free[node.id] = [-1] * min(64, node.ram_free // needed)  # one slot per instance its RAM holds
            continue
        usable, reasons = [], []
        for gpu in node.gpus:
            e = gpu_estimate(gpu.memory_total)
            wanted = int(spec.gpu_memory_utilization * gpu.memory_total)
            if spec.check_fit and not e.fits:
                reasons.append(f"GPU {gpu.index}: {e.verdict}")
            elif gpu.memory_free < wanted:
                reasons.append(
                    f"GPU {gpu.index}: {spec.gpu_memory_utilization} of its memory is "
                    f"{wanted / GIB:.1f} GiB, only {gpu.memory_free / GIB:.1f} GiB free"
                )
            else:
                usable.append(gpu.index)
        if len(usable) < spec.tp:
            why = f"{len(usable)} GPU{'s' if len(usable) != 1 else ''} can take a rank, tensor parallel needs {spec.tp}"
            rejected[node.name] = why + (f" ({reasons[0]})" if reasons else "" if node.gpus else "; no GPUs")
            continue
        free[node.id] = usable

    width = lambda node_id: spec.tp if nodes[node_id].kind == "gpu" else 1  # noqa: E731
    used: dict[int, int] = {}  # stages placed per node, for spread
    replicas: list[list[Stage]] = []
    for _ in range(spec.replicas):
        stages: list[Stage] = []
        for _stage in range(spec.pp):
            candidates = [i for i, gpus in free.items() if len(gpus) >= width(i)]
            if not candidates:
                break
            if spec.strategy == "binpack":
                best = min(candidates, key=lambda i: (len(free[i]), nodes[i].name))
            else:
                best = min(candidates, key=lambda i: (used.get(i, 0), -len(free[i]), nodes[i].name))
            take, free[best] = free[best][: width(best)], free[best][width(best) :]
            used[best] = used.get(best, 0) + 1
            stages.append(Stage(best, nodes[best].name, [g for g in take if g >= 0]))
        if len(stages) < spec.pp:
            break
        replicas.append(stages)
    ok = len(replicas) == spec.replicas
    if ok:
        message = f"Placed {spec.replicas} replica{'s' if spec.replicas > 1 else ''} of {spec.tp} TP × {spec.pp} PP."
    elif not fleet:
        message = "No nodes in the fleet yet."
    else:
        message = (
            f"Placed {len(replicas)} of {spec.replicas} replicas: not enough room for "
            f"{spec.tp} × {spec.pp} device{'s' if spec.tp * spec.pp > 1 else ''} per replica; "
            "see the reason for each node."
        )
    shown = {f"{size / GIB:.1f} GiB GPU": e for size, e in estimates.items()}
    if cpu_estimate is not None:
        shown["CPU node"] = cpu_estimate
    return Placement(ok, message, replicas if ok else [], rejected, shown)
