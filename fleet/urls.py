"""The fleet's pages and API routes: each domain's own, in the order Django must try them."""

from django.urls import path

from fleet import metrics
from fleet.catalog import urls as catalog
from fleet.deployments import urls as deployments
from fleet.jobs import urls as jobs
from fleet.nodes import urls as nodes

urlpatterns = [
    *nodes.urlpatterns,
    *catalog.urlpatterns,
    *deployments.urlpatterns,
    *jobs.urlpatterns,
    *deployments.action_urlpatterns,
    path("metrics", metrics.metrics, name="metrics"),
]

api_urlpatterns = [
    *nodes.api_urlpatterns,
    *catalog.api_urlpatterns,
    *deployments.api_urlpatterns,
    *jobs.api_urlpatterns,
]
