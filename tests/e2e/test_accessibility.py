"""Real Chromium, every page of every persona, wide and phone-sized: axe-core (vendored) finds no
serious or critical violation, and no page scrolls sideways at 390 px.

The pages are found from the URL configuration itself (each route a persona can GET as HTML), so a
new page is checked the day it is added; a route with parameters needs an object in `_objects`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from playwright.sync_api import Error as PlaywrightError

import audit
from access.grants import services as grants
from console.config import BASE_DIR
from fleet.catalog.models import ModelArtifact
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job
from fleet.nodes.models import GPU, Node
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

AXE = BASE_DIR / "static" / "vendor" / "axe-core-4.14.1.min.js"
VIEWPORTS = {"wide": {"width": 1400, "height": 900}, "phone": {"width": 390, "height": 844}}
# Not pages: machine endpoints, downloads, redirects to elsewhere, one-time links, form posts.
NOT_PAGES = {
    "healthz", "readyz", "metrics", "logout", "oidc-begin", "oidc-callback", "set-password", "usage-csv",
    "audit-export", "deployment-check",  # the last: a fragment the deploy form swaps in
}  # fmt: skip
GIB = 1024**3


def _routes(patterns=None, prefix: str = ""):
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            yield from _routes(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern) and p.name:
            yield prefix + str(p.pattern), p.name


def _objects(personas) -> dict[str, str]:
    """One of each object a page is about, so that detail pages have something to show."""
    node = Node.objects.create(
        name="gpu-a",
        kind="gpu",
        last_heartbeat=timezone.now(),
        last_sample={"gpus": [{"i": 0, "util": 63, "mem_used": 20 * GIB, "temp": 61, "power": 250.0}]},
    )
    GPU.objects.create(node=node, index=0, name="NVIDIA H100", memory_total=80 * GIB)
    model = ModelArtifact.objects.create(name="demo", path="/models/demo")
    deployment = Deployment.objects.create(name="demo-chat", model=model, replicas=1)
    Instance.objects.create(deployment=deployment, replica=0, node=node, port=9100, state=InstanceState.READY)
    job = Job.objects.create(kind=JobKind.BENCHMARK, node=node, deployment=deployment, state=JobState.SUCCEEDED)
    grant = grants.create_grant(personas["admin"], user=personas["dept_user"], models=[model], duration_days=10)
    grants.create_key(personas["dept_user"], grant=grant, name="letters-app")
    grants.request_access(personas["dept_user"], models=[model], justification="For the letters", duration_days=5)
    event = audit.record(personas["admin"], "user.update", personas["dept_user"], before={"a": 1}, after={"a": 2})
    grant.expires_at = timezone.now() + timedelta(days=3)
    grant.save(update_fields=["expires_at"])
    return {
        "pk": {
            "person": personas["dept_user"].pk,
            "node-detail": node.pk,
            "model-detail": model.pk,
            "deployment-detail": deployment.pk,
            "deployment-benchmark": deployment.pk,
            "job-detail": job.pk,
            "model-quantize": model.pk,
        },
        "seq": {"audit-event": event.seq},
        "query": {"job-compare": f"?ids={job.pk}", "fit": f"?model={model.pk}&gpu_memory_gib=80"},
    }


def _pages(objects) -> list[str]:
    urls = []
    for route, name in _routes():
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


def _check(page, url: str) -> list[str]:
    """What is wrong on the page now: serious or critical axe findings, and sideways scrolling."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.filter(v => v.impact === "serious" || v.impact === "critical")
              .map(v => v.impact + " " + v.id + ": " + v.help + " — "
                   + v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(", "));
        }"""
    )
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if width[0] > width[1]:
        found.append(f"scrolls sideways: {width[0]} px wide in a {width[1]} px window")
    return [f"{url}: {f}" for f in found]


@pytest.mark.timeout(600)
def test_every_page_of_every_persona_passes_axe_and_fits_a_phone(personas, browser, live_server_url):
    objects = _objects(personas)
    pages = _pages(objects)
    problems, checked = [], 0
    for persona in ("admin", "dept_user", "auditor"):
        signed_in = sign_in(browser, live_server_url, persona)
        signed_in.wait_for_load_state()
        for size, viewport in VIEWPORTS.items():
            signed_in.set_viewport_size(viewport)
            for url in pages:
                try:
                    response = signed_in.goto(live_server_url + url)
                except PlaywrightError:  # an empty error answer (a 405 to a form's POST target)
                    continue
                if response is None or response.status != 200 or "text/html" not in response.headers["content-type"]:
                    continue  # not this persona's page (403), or not a page
                signed_in.wait_for_load_state("networkidle")
                problems += [f"{persona} {size} {p}" for p in _check(signed_in, url)]
                checked += 1
        signed_in.context.close()
    anonymous = browser.new_context().new_page()
    for size, viewport in VIEWPORTS.items():
        anonymous.set_viewport_size(viewport)
        anonymous.goto(live_server_url + "/login/")
        problems += [f"anonymous {size} {p}" for p in _check(anonymous, "/login/")]
    anonymous.context.close()
    assert checked >= 60, (checked, pages)  # three personas' pages, twice
    assert not problems, "\n".join(problems)
