from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from access import api as access_api
from access import grant_api
from access import grant_views
from access import views as access_views
from audit import api as audit_api
from audit import views as audit_views
from console import api as console_api
from console import views
from fleet import api as fleet_api
from fleet import metrics as fleet_metrics
from fleet import deployment_views, job_api, job_views, model_views
from fleet import views as fleet_views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("departments", access_api.DepartmentViewSet, basename="department")
router.register("users", access_api.UserViewSet, basename="user")
router.register("tokens", access_api.TokenViewSet, basename="token")
router.register("access-requests", grant_api.AccessRequestViewSet, basename="api-access-request")
router.register("grants", grant_api.GrantViewSet, basename="api-grant")
router.register("api-keys", grant_api.ApiKeyViewSet, basename="api-key")
router.register("nodes", fleet_api.NodeViewSet, basename="api-node")
router.register("join-tokens", fleet_api.JoinTokenViewSet, basename="api-join-token")
router.register("models", fleet_api.ModelViewSet, basename="api-model")
router.register("deployments", fleet_api.DeploymentViewSet, basename="api-deployment")
router.register("jobs", job_api.JobViewSet, basename="api-job")

api_patterns = [
    path("me/", console_api.me, name="api-me"),
    path("audit/events/", audit_api.events, name="api-audit-events"),
    path("audit/verify/", audit_api.verify_chain, name="api-audit-verify"),
    path("fit/", fleet_api.fit, name="api-fit"),
    path("catalog/", grant_api.catalog, name="api-catalog"),
    path("departments/<slug:slug>/quota/", grant_api.department_quota, name="api-department-quota"),
    path("usage/", grant_api.usage_rows, name="api-usage"),
    path("usage/summary/", grant_api.usage_summary, name="api-usage-summary"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include(router.urls)),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("login/", access_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("people/", access_views.people, name="people"),
    path("account/tokens/", access_views.tokens, name="tokens"),
    path("account/tokens/<int:pk>/revoke/", access_views.revoke_token, name="token-revoke"),
    path("audit/", audit_views.trail, name="audit-trail"),
    path("audit/verify/", audit_views.verify_now, name="audit-verify"),
    path("audit/export/<str:kind>/", audit_views.export, name="audit-export"),
    path("access/", grant_views.my_access, name="my-access"),
    path("access/requests/<int:pk>/withdraw/", grant_views.withdraw, name="access-withdraw"),
    path("access/keys/<int:pk>/revoke/", grant_views.revoke_key, name="key-revoke"),
    path("access/queue/", grant_views.queue, name="access-queue"),
    path("access/queue/<int:pk>/<str:decision>/", grant_views.decide, name="access-decide"),
    path("access/grants/", grant_views.grant_list, name="grants"),
    path("access/grants/<int:pk>/revoke/", grant_views.revoke_grant, name="grant-revoke"),
    path("access/keys/", grant_views.key_list, name="keys"),
    path("usage/", grant_views.usage_page, name="usage"),
    path("usage.csv", grant_views.usage_csv, name="usage-csv"),
    path("nodes/", fleet_views.node_list, name="nodes"),
    path("nodes/join/", fleet_views.join, name="node-join"),
    path("nodes/join/<int:pk>/revoke/", fleet_views.join_token_revoke, name="join-token-revoke"),
    path("nodes/<int:pk>/", fleet_views.node_detail, name="node-detail"),
    path("nodes/<int:pk>/cordon/", fleet_views.node_cordon, {"cordon": True}, name="node-cordon"),
    path("nodes/<int:pk>/uncordon/", fleet_views.node_cordon, {"cordon": False}, name="node-uncordon"),
    path("nodes/<int:pk>/remove/", fleet_views.node_remove, name="node-remove"),
    path("nodes/<int:pk>/drain/", fleet_views.node_drain, name="node-drain"),
    path("nodes/<int:pk>/runtimes/", fleet_views.node_runtime, name="node-runtime"),
    path("models/", model_views.model_list, name="models"),
    path("models/fit/", model_views.fit, name="fit"),
    path("models/<int:pk>/", model_views.model_detail, name="model-detail"),
    path("models/<int:pk>/checksum/", model_views.model_checksum, name="model-checksum"),
    path("models/<int:pk>/unregister/", model_views.model_unregister, name="model-unregister"),
    path("deployments/", deployment_views.deployment_list, name="deployments"),
    path("deployments/check/", deployment_views.deployment_check, name="deployment-check"),
    path("deployments/<int:pk>/", deployment_views.deployment_detail, name="deployment-detail"),
    path("deployments/<int:pk>/benchmark/", job_views.benchmark, name="deployment-benchmark"),
    path("deployments/<int:pk>/<str:action>/", deployment_views.deployment_action, name="deployment-action"),
    path("jobs/", job_views.job_list, name="jobs"),
    path("jobs/compare/", job_views.job_compare, name="job-compare"),
    path("jobs/<int:pk>/", job_views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/cancel/", job_views.job_cancel, name="job-cancel"),
    path("models/<int:pk>/quantize/", job_views.quantize, name="model-quantize"),
    path("metrics", fleet_metrics.metrics, name="metrics"),
    path("api/", include(api_patterns)),
    path("admin/", admin.site.urls),
]

handler400 = views.bad_request
handler403 = views.permission_denied
handler404 = views.page_not_found
handler500 = views.server_error
