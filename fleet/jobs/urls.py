"""Pages and API routes of quantization and benchmark jobs."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from fleet.jobs import api, views

router = SimpleRouter()
router.register("jobs", api.JobViewSet, basename="api-job")

urlpatterns = [
    path("deployments/<int:pk>/benchmark/", views.benchmark, name="deployment-benchmark"),
    path("jobs/", views.job_list, name="jobs"),
    path("jobs/compare/", views.job_compare, name="job-compare"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("models/<int:pk>/quantize/", views.quantize, name="model-quantize"),
]

api_urlpatterns = [path("", include(router.urls))]
