"""Every page of the console, found from the URL configuration, and one of each object the
detail pages are about: the accessibility test and the page-time bench walk the same pages."""

from __future__ import annotations

from datetime import timedelta

from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

import audit
from access.grants import services as grants
from fleet.catalog.models import ModelArtifact
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job
from fleet.nodes.models import GPU, Node

# Not pages: machine endpoints, downloads, redirects to elsewhere, one-time links, form posts.
NOT_PAGES = {
    "healthz", "readyz", "metrics", "logout", "oidc-begin", "oidc-callback", "set-password", "usage-csv",
    "audit-export", "deployment-check",  # the last: a fragment the deploy form swaps in
}  # fmt: skip
GIB = 1024**3
BENCHMARK_PARAMS = {"mode": "concurrency", "levels": [1], "input_len": 16, "output_len": 8, "num_prompts": 4}
BENCHMARK_POINT = {
    "concurrency": 1,
    "completed": 4,
    "failed": 0,
    "duration_s": 1.0,
    "request_throughput": 4.0,
    "output_throughput": 32.0,
    **{f"{m}_p{q}_ms": 1.0 + q for m in ("ttft", "tpot", "itl", "e2el") for q in (50, 90, 99)},
}


def routes(patterns=None, prefix: str = ""):
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            yield from routes(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern) and p.name:
            yield prefix + str(p.pattern), p.name


def objects(personas, n: int = 1) -> dict:
    """``n`` of each object the pages are about (so detail pages have something to show, and lists
    have rows); the ids of the first, by the name of the page that shows it."""
    made: list[dict] = []
    for i in range(n):
        node = Node.objects.create(
            name=f"gpu-{chr(97 + i % 26)}{i // 26 or ''}",
            kind="gpu",
            last_heartbeat=timezone.now(),
            last_sample={"gpus": [{"i": 0, "util": 63, "mem_used": 20 * GIB, "temp": 61, "power": 250.0}]},
        )
        GPU.objects.create(node=node, index=0, name="NVIDIA H100", memory_total=80 * GIB)
        model = ModelArtifact.objects.create(name=f"demo{i or ''}", path=f"/models/demo{i or ''}")
        deployment = Deployment.objects.create(name=f"demo-chat{i or ''}", model=model, replicas=1)
        Instance.objects.create(deployment=deployment, replica=0, node=node, port=9100 + i, state=InstanceState.READY)
        job = Job.objects.create(
            kind=JobKind.BENCHMARK,
            node=node,
            model=model,
            deployment=deployment,
            state=JobState.SUCCEEDED,
            params=BENCHMARK_PARAMS | {"served": deployment.name},
            result={"mode": "concurrency", "points": [BENCHMARK_POINT]},
        )
        grant = grants.create_grant(personas["admin"], user=personas["dept_user"], models=[model], duration_days=10)
        grants.create_key(personas["dept_user"], grant=grant, name=f"letters-app-{i}")
        grants.request_access(personas["dept_user"], models=[model], justification="For the letters", duration_days=5)
        event = audit.record(personas["admin"], "user.update", personas["dept_user"], before={"a": 1}, after={"a": 2})
        grant.expires_at = timezone.now() + timedelta(days=3)
        grant.save(update_fields=["expires_at"])
        made.append({"node": node, "model": model, "deployment": deployment, "job": job, "event": event})
    first = made[0]
    return {
        "pk": {
            "person": personas["dept_user"].pk,
            "node-detail": first["node"].pk,
            "model-detail": first["model"].pk,
            "deployment-detail": first["deployment"].pk,
            "deployment-benchmark": first["deployment"].pk,
            "job-detail": first["job"].pk,
            "model-quantize": first["model"].pk,
        },
        "seq": {"audit-event": first["event"].seq},
        "query": {
            "job-compare": f"?ids={first['job'].pk}",
            "fit": f"?model={first['model'].pk}&gpu_memory_gib=80",
        },
    }


def urls(objects) -> list[str]:
    urls = []
    for route, name in routes():
        # /api/ is the REST API (its browsable pages and Swagger UI are the libraries' own), admin/
        # Django's: neither is the console's UI
        if name in NOT_PAGES or route.startswith(("api/", "admin/", "v1", "agent/")):
            continue
        if "<" in route:
            if name in objects["pk"]:
                route = route.split("<")[0] + f"{objects['pk'][name]}/" + route.split(">/", 1)[1]
            elif name in objects["seq"]:
                route = route.split("<")[0] + f"{objects['seq'][name]}/"
            else:
                continue  # an action (a form's POST target): not a page
        urls.append("/" + route + objects["query"].get(name, ""))
    return sorted(set(urls))
