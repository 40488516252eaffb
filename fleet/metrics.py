"""/metrics: fleet gauges in the Prometheus text format, for the Prometheus/Grafana sites run.

Access: a Bearer token equal to FLEET_METRICS_TOKEN, or a signed-in admin, or anyone when
FLEET_METRICS_PUBLIC is set (for a scrape network that is already trusted).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse

from access.gateway import ledger
from access.people.choices import Role
from fleet.nodes import services
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node

GPU_GAUGES = [  # (metric, help, reading key)
    ("fleet_gpu_utilization_percent", "GPU utilization", "util"),
    ("fleet_gpu_memory_used_bytes", "GPU memory used", "mem_used"),
    ("fleet_gpu_memory_total_bytes", "GPU memory total", "mem_total"),
    ("fleet_gpu_temperature_celsius", "GPU temperature", "temp"),
    ("fleet_gpu_power_watts", "GPU power draw", "power"),
]


def _allowed(request: HttpRequest) -> bool:
    if settings.FLEET_METRICS_PUBLIC:
        return True
    header = request.headers.get("Authorization", "")
    if settings.FLEET_METRICS_TOKEN and header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].encode(), settings.FLEET_METRICS_TOKEN.encode())
    return request.user.is_authenticated and request.user.has_role(Role.ADMIN)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def lines() -> Iterator[str]:
    counts = dict(Node.objects.values_list("state").annotate(n=Count("pk")))
    yield "# HELP fleet_nodes Nodes by state."
    yield "# TYPE fleet_nodes gauge"
    for state in NodeState.values:
        yield f'fleet_nodes{{state="{state}"}} {counts.get(state, 0)}'
    yield "# HELP fleet_nodes_cordoned Nodes that take no new placements."
    yield "# TYPE fleet_nodes_cordoned gauge"
    yield f"fleet_nodes_cordoned {Node.objects.filter(cordoned=True).count()}"
    yield "# HELP fleet_telemetry_malformed_total Agent messages dropped because they were malformed."
    yield "# TYPE fleet_telemetry_malformed_total counter"
    yield f"fleet_telemetry_malformed_total {services.malformed_count()}"
    yield "# HELP fleet_ledger_backlog Gateway calls queued for the usage ledger and not yet written."
    yield "# TYPE fleet_ledger_backlog gauge"
    yield f"fleet_ledger_backlog {ledger.backlog()}"
    online = list(Node.objects.filter(state=NodeState.ONLINE).values_list("name", "last_sample"))
    for metric, help_text, key in GPU_GAUGES:
        yield f"# HELP {metric} {help_text} (latest heartbeat)."
        yield f"# TYPE {metric} gauge"
        for name, sample in online:
            for gpu in (sample or {}).get("gpus", []):
                if gpu.get(key) is not None:
                    yield f'{metric}{{node="{_label(name)}",gpu="{gpu["i"]}"}} {gpu[key]}'
    yield "# HELP fleet_host_cpu_percent Host CPU utilization (latest heartbeat)."
    yield "# TYPE fleet_host_cpu_percent gauge"
    for name, sample in online:
        cpu = ((sample or {}).get("host") or {}).get("cpu")
        if cpu is not None:
            yield f'fleet_host_cpu_percent{{node="{_label(name)}"}} {cpu}'


def metrics(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        response = HttpResponse(
            "Send Authorization: Bearer <FLEET_METRICS_TOKEN>, or sign in as an admin.\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse("\n".join(lines()) + "\n", content_type="text/plain; version=0.0.4; charset=utf-8")
