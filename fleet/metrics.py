"""/metrics: the fleet, the gateway, deployments, jobs, the ledger and the audit chain in the
Prometheus text format, for the Prometheus/Grafana sites run (deploy/ holds rules and dashboards).

Every series comes from the database or Redis, not from one process's memory, so each web process
serves the same counts; a scrape costs a fixed number of queries whatever the fleet's size.
Gateway calls are counted by the ledger's trigger (access.usage.models.CallCounter): what is
counted is what was written, once. Labels are bounded: no key, user or request ids.

Access: a Bearer token equal to FLEET_METRICS_TOKEN, or a signed-in admin, or anyone when
FLEET_METRICS_PUBLIC is set (for a scrape network that is already trusted).
"""

from __future__ import annotations

import functools
import hmac
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

import redis
from django.conf import settings
from django.db.models import Count, Max, Sum
from django.http import HttpRequest, HttpResponse

from access.gateway import ledger
from access.people.choices import Role
from access.people.models import Department
from access.usage.models import LATENCY_BUCKETS_MS, CallCounter
from audit import verification
from audit.models import AuditEvent
from fleet.deployments.choices import DesiredState, InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job
from fleet.nodes import services
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node

# Every family /metrics serves: name → (type, help). Dashboards and alert rules name only these
# (a test checks both against a real scrape).
SERIES: dict[str, tuple[str, str]] = {
    "fleet_nodes": ("gauge", "Nodes by state."),
    "fleet_nodes_cordoned": ("gauge", "Nodes that take no new placements."),
    "fleet_telemetry_malformed_total": ("counter", "Agent messages dropped because they were malformed."),
    "fleet_host_cpu_percent": ("gauge", "Host CPU utilization (latest heartbeat)."),
    # Per GPU, as NVIDIA's DCGM exporter names them less its prefix (DCGM_FI_DEV_GPU_UTIL, _FB_USED,
    # _GPU_TEMP, _POWER_USAGE, _ECC_DBE_VOL_TOTAL, _XID_ERRORS), in base units.
    "fleet_gpu_utilization_percent": ("gauge", "GPU utilization (latest heartbeat)."),
    "fleet_gpu_memory_used_bytes": ("gauge", "GPU memory used (latest heartbeat)."),
    "fleet_gpu_memory_total_bytes": ("gauge", "GPU memory total (latest heartbeat)."),
    "fleet_gpu_temperature_celsius": ("gauge", "GPU temperature (latest heartbeat)."),
    "fleet_gpu_power_watts": ("gauge", "GPU power draw (latest heartbeat)."),
    "fleet_gpu_ecc_uncorrected_errors": ("gauge", "Uncorrected (double-bit) ECC errors since the driver loaded."),
    "fleet_gpu_xid_errors": ("gauge", "Xid errors seen since the agent started."),
    "fleet_gateway_requests_total": ("counter", "Gateway calls written to the ledger, by answer status."),
    "fleet_gateway_prompt_tokens_total": ("counter", "Prompt tokens of gateway calls."),
    "fleet_gateway_completion_tokens_total": ("counter", "Completion tokens of gateway calls."),
    "fleet_gateway_request_duration_seconds": ("histogram", "Gateway call latency, to the last byte."),
    "fleet_gateway_ttft_seconds": ("histogram", "Gateway streams' time to the first token."),
    "fleet_deployment_replicas_wanted": ("gauge", "Replicas a running deployment should have."),
    "fleet_deployment_replicas_ready": ("gauge", "Replicas that are Ready."),
    "fleet_instances": ("gauge", "Instances by deployment and state."),
    "fleet_instance_restarts": ("gauge", "Restarts after a crash, summed over a deployment's current instances."),
    "fleet_jobs": ("gauge", "Jobs by kind and state."),
    "fleet_ledger_backlog": ("gauge", "Gateway calls queued for the usage ledger and not yet written."),
    "fleet_ledger_oldest_age_seconds": ("gauge", "Age of the oldest call still queued for the ledger (0: none)."),
    "fleet_celery_queue_length": ("gauge", "Tasks waiting in a Celery queue."),
    "fleet_audit_events": ("gauge", "The audit chain's last sequence number."),
    "fleet_audit_verified_event": ("gauge", "The last event the latest verification found intact."),
    "fleet_audit_chain_broken": ("gauge", "1 if the latest verification found the chain broken, else 0."),
    "fleet_audit_verified_timestamp_seconds": ("gauge", "When the latest verification finished (Unix time)."),
}
GPU_GAUGES = [  # (metric, reading key)
    ("fleet_gpu_utilization_percent", "util"),
    ("fleet_gpu_memory_used_bytes", "mem_used"),
    ("fleet_gpu_memory_total_bytes", "mem_total"),
    ("fleet_gpu_temperature_celsius", "temp"),
    ("fleet_gpu_power_watts", "power"),
    ("fleet_gpu_ecc_uncorrected_errors", "ecc"),
    ("fleet_gpu_xid_errors", "xid"),
]
CELERY_QUEUES = ("console",)
Labels = tuple[tuple[str, object], ...]
Sample = tuple[str, Labels, float]  # (name, labels, value): a family's lines
LE = tuple(f"{bound / 1000:g}" for bound in LATENCY_BUCKETS_MS)  # seconds, as Prometheus expects


def _allowed(request: HttpRequest) -> bool:
    if settings.FLEET_METRICS_PUBLIC:
        return True
    header = request.headers.get("Authorization", "")
    if settings.FLEET_METRICS_TOKEN and header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].encode(), settings.FLEET_METRICS_TOKEN.encode())
    return request.user.is_authenticated and request.user.has_role(Role.ADMIN)


def _label(value: object) -> str:
    text = str(value)
    if "\\" in text or "\n" in text or '"' in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return text


def _family(name: str, samples: Iterable[Sample]) -> list[str]:
    kind, help_text = SERIES[name]
    # Values print as Python prints an int or a float (shortest exact repr): a large count is not rounded.
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"] + [
        f"{sample}{{{_rendered(labels)}}} {value}" if labels else f"{sample} {value}"
        for sample, labels, value in samples
    ]


# The same label sets come back every scrape (and across a node's GPU gauges): rendered once.
@functools.lru_cache(maxsize=65536)
def _rendered(labels: Labels) -> str:
    return ",".join(f'{k}="{_label(v)}"' for k, v in labels)


def _one(name: str, value: float) -> list[str]:
    return _family(name, [(name, (), value)])


def _nodes() -> list[str]:
    out: list[str] = []
    counts = dict(Node.objects.values_list("state").annotate(n=Count("pk")))
    out += _family("fleet_nodes", ((("fleet_nodes", (("state", s),), counts.get(s, 0))) for s in NodeState.values))
    out += _one("fleet_nodes_cordoned", Node.objects.filter(cordoned=True).count())
    out += _one("fleet_telemetry_malformed_total", services.malformed_count())
    online = list(Node.objects.filter(state=NodeState.ONLINE).values_list("name", "last_sample"))
    # 800 GPUs × 7 gauges is most of a scrape: one pass over the samples, each GPU's labels rendered once.
    gauges: dict[str, list[str]] = {metric: [] for metric, _key in GPU_GAUGES}
    for name, sample in online:
        for gpu in (sample or {}).get("gpus", []):
            if "i" not in gpu:
                continue
            labels = _rendered((("node", name), ("gpu", gpu["i"])))
            for metric, key in GPU_GAUGES:
                value = gpu.get(key)
                if value.__class__ is int or value.__class__ is float:
                    gauges[metric].append(f"{metric}{{{labels}}} {value}")
    for metric, _key in GPU_GAUGES:
        out += _family(metric, ())
        out += gauges[metric]
    out += _family(
        "fleet_host_cpu_percent",
        (
            ("fleet_host_cpu_percent", (("node", name),), cpu)
            for name, sample in online
            if isinstance(cpu := ((sample or {}).get("host") or {}).get("cpu"), int | float)
        ),
    )
    return out


def _histogram(name: str, labels: Labels, le: list[int], total_ms: float, count: int) -> Iterator[Sample]:
    for bound, n in zip(LE, le, strict=False):
        yield f"{name}_bucket", (*labels, ("le", bound)), n
    yield f"{name}_bucket", (*labels, ("le", "+Inf")), count
    yield f"{name}_sum", labels, total_ms / 1000
    yield f"{name}_count", labels, count


def _gateway() -> list[str]:
    out: list[str] = []
    names = dict(Deployment.objects.values_list("pk", "name"))
    departments = dict(Department.objects.values_list("pk", "name"))
    columns: tuple[str, ...] = ("deployment_id", "department_id", "model", "endpoint", "status", "calls")
    columns += ("prompt_tokens", "completion_tokens", "latency_le", "latency_ms_sum", "ttft_le", "ttft_ms_sum")
    columns += ("ttft_count",)
    rows = CallCounter.objects.order_by("pk").values_list(*columns)
    requests: list[Sample] = []
    tokens: dict[str, dict[tuple, float]] = {"prompt": defaultdict(float), "completion": defaultdict(float)}
    latency: dict[tuple, list] = {}
    ttft: dict[tuple, list] = {}
    for deployment_id, department_id, model, endpoint, status, calls, prompt, completion, *histograms in rows:
        deployment = names.get(deployment_id, "") if deployment_id else ""
        department = departments.get(department_id, "") if department_id else ""
        labels = (("model", model), ("deployment", deployment), ("department", department))
        requests.append(("fleet_gateway_requests_total", (*labels, ("endpoint", endpoint), ("code", status)), calls))
        key = (model, deployment, department)
        tokens["prompt"][key] += prompt
        tokens["completion"][key] += completion
        latency_le, latency_sum, ttft_le, ttft_sum, ttft_count = histograms
        # Histograms by model and deployment only: each bucket is a series of its own.
        for into, le, total, count in (
            (latency, latency_le, latency_sum, calls),
            (ttft, ttft_le, ttft_sum, ttft_count),
        ):
            acc = into.setdefault((model, deployment), [[0] * len(LATENCY_BUCKETS_MS), 0.0, 0])
            acc[0] = [a + b for a, b in zip(acc[0], le, strict=False)]
            acc[1] += total
            acc[2] += count
    out += _family("fleet_gateway_requests_total", requests)
    for kind in ("prompt", "completion"):
        name = f"fleet_gateway_{kind}_tokens_total"
        out += _family(
            name,
            (
                (name, (("model", m), ("deployment", d), ("department", dept)), n)
                for (m, d, dept), n in tokens[kind].items()
            ),
        )
    for name, into in (("fleet_gateway_request_duration_seconds", latency), ("fleet_gateway_ttft_seconds", ttft)):
        out += _family(
            name,
            (
                s
                for (m, d), (le, total, count) in into.items()
                for s in _histogram(name, (("model", m), ("deployment", d)), le, total, count)
            ),
        )
    return out


def _deployments() -> list[str]:
    out: list[str] = []
    wanted = Deployment.objects.values_list("name", "replicas", "desired_state").order_by("name")
    states = Instance.objects.values_list("deployment__name", "state").annotate(n=Count("pk"), r=Sum("restarts"))
    by_state: dict[str, dict[str, int]] = defaultdict(dict)
    restarts: dict[str, int] = defaultdict(int)
    for name, state, n, r in states.order_by():
        by_state[name][state] = n
        restarts[name] += r or 0
    out += _family(
        "fleet_deployment_replicas_wanted",
        (
            ("fleet_deployment_replicas_wanted", (("deployment", n),), r if s == DesiredState.RUNNING else 0)
            for n, r, s in wanted
        ),
    )
    out += _family(
        "fleet_deployment_replicas_ready",
        (
            ("fleet_deployment_replicas_ready", (("deployment", n),), by_state[n].get(InstanceState.READY, 0))
            for n, _r, _s in wanted
        ),
    )
    out += _family(
        "fleet_instances",
        (
            ("fleet_instances", (("deployment", n), ("state", s)), c)
            for n in sorted(by_state)
            for s, c in by_state[n].items()
        ),
    )
    out += _family(
        "fleet_instance_restarts",
        (("fleet_instance_restarts", (("deployment", n),), restarts[n]) for n in sorted(restarts)),
    )
    return out


def _jobs() -> list[str]:
    out: list[str] = []
    counts = {(k, s): n for k, s, n in Job.objects.values_list("kind", "state").annotate(n=Count("pk")).order_by()}
    out += _family(
        "fleet_jobs",
        (
            ("fleet_jobs", (("kind", k), ("state", s)), counts.get((k, s), 0))
            for k in JobKind.values
            for s in JobState.values
        ),
    )
    return out


def _queues() -> list[str]:
    out: list[str] = []
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    pipe = client.pipeline(transaction=False)
    pipe.xlen(ledger.STREAM)
    pipe.xrange(ledger.STREAM, count=1)
    for queue in CELERY_QUEUES:
        pipe.llen(queue)
    backlog, first, *lengths = pipe.execute()
    # A stream entry's id starts with the milliseconds it was added at.
    oldest = max(0.0, time.time() - int(first[0][0].split(b"-")[0]) / 1000) if first else 0.0
    out += _one("fleet_ledger_backlog", backlog)
    out += _one("fleet_ledger_oldest_age_seconds", round(oldest, 3))
    out += _family(
        "fleet_celery_queue_length",
        (("fleet_celery_queue_length", (("queue", q),), n) for q, n in zip(CELERY_QUEUES, lengths, strict=True)),
    )
    return out


def _audit() -> list[str]:
    out: list[str] = []
    last = AuditEvent.objects.aggregate(seq=Max("seq"))["seq"] or 0
    run = verification.latest()
    out += _one("fleet_audit_events", last)
    out += _one("fleet_audit_verified_event", run.intact_up_to if run else 0)
    out += _one("fleet_audit_chain_broken", 0 if run is None or run.ok else 1)
    out += _one("fleet_audit_verified_timestamp_seconds", run.finished_at.timestamp() if run else 0)
    return out


def lines() -> list[str]:
    return [line for part in (_nodes, _gateway, _deployments, _jobs, _queues, _audit) for line in part()]


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
