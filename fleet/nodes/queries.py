"""Read side of nodes beyond the list (its FilterSet): chart history and the planner's view of the fleet."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from fleet.nodes.models import HOST, Node, TelemetryRollup
from fleet.planning.placement import GpuView, NodeView

RANGES = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def history(node: Node, range_name: str) -> dict:
    """Rollups of the last hour or day as columns for a chart: {"t": [...], "series": {label: [...]}}.
    Utilization average per GPU (CPU % of the host on a CPU node) and memory used %."""
    since = timezone.now() - RANGES[range_name]
    rows = (
        TelemetryRollup.objects.filter(node=node, minute__gte=since)
        .order_by("minute", "gpu_index")
        .values_list("minute", "gpu_index", "stats")
    )
    times: list[int] = []
    series: dict[str, dict[int, float]] = {}
    totals = {g.index: g.memory_total for g in node.gpus.all()}
    for minute, index, stats in rows:
        t = int(minute.timestamp())
        if not times or times[-1] != t:
            times.append(t)
        if index == HOST:
            if node.kind == "cpu":
                series.setdefault("CPU %", {})[t] = stats.get("cpu", [None, None])[1]
                if node.ram_bytes and "ram_used" in stats:
                    series.setdefault("RAM %", {})[t] = round(100 * stats["ram_used"][1] / node.ram_bytes, 1)
            continue
        series.setdefault(f"GPU {index} util %", {})[t] = stats.get("util", [None, None])[1]
        if totals.get(index) and "mem_used" in stats:
            series.setdefault(f"GPU {index} mem %", {})[t] = round(100 * stats["mem_used"][1] / totals[index], 1)
    return {"t": times, "series": {label: [values.get(t) for t in times] for label, values in series.items()}}


def fleet_view() -> list:
    """Nodes as the placement planner sees them; free memory from each node's latest sample."""
    views = []
    for node in Node.objects.prefetch_related("gpus").order_by("name"):
        sample = node.last_sample or {}
        readings = {g.get("i"): g for g in sample.get("gpus", []) if isinstance(g, dict)}
        gpus = []
        for gpu in node.gpus.all():
            reading = readings.get(gpu.index, {})
            mem_used = reading.get("mem_used")
            used = mem_used if isinstance(mem_used, (int, float)) else 0
            gpus.append(GpuView(gpu.index, gpu.memory_total, max(0, gpu.memory_total - int(used))))
        host = sample.get("host") or {}
        host_ram_used = host.get("ram_used")
        ram_used = host_ram_used if isinstance(host_ram_used, (int, float)) else 0
        views.append(
            NodeView(
                id=node.pk,
                name=node.name,
                kind=node.kind,
                online=node.state == "online",
                cordoned=node.cordoned,
                labels=node.labels or {},
                gpus=gpus,
                ram_free=max(0, node.ram_bytes - int(ram_used)),
            )
        )
    return views
