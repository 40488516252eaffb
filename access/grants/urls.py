"""Pages and API routes of access requests, grants, gateway keys and quotas."""

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.routers import SimpleRouter

from access.grants import api, views

router = SimpleRouter()
router.register("access-requests", api.AccessRequestViewSet, basename="api-access-request")
router.register("grants", api.GrantViewSet, basename="api-grant")
router.register("api-keys", api.ApiKeyViewSet, basename="api-key")

urlpatterns = [
    path("access/", views.my_access, name="my-access"),
    path("access/requests/<int:pk>/withdraw/", views.withdraw, name="access-withdraw"),
    path("access/keys/<int:pk>/revoke/", views.revoke_key, name="key-revoke"),
    path("access/queue/", views.queue, name="access-queue"),
    path("access/requests/", views.request_list, name="access-requests"),
    path("access/queue/<int:pk>/<str:decision>/", views.decide, name="access-decide"),
    path("access/grants/", views.grant_list, name="grants"),
    path("access/grants/<int:pk>/revoke/", views.revoke_grant, name="grant-revoke"),
    path("access/keys/", views.key_list, name="keys"),
]

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("catalog/", api.catalog, name="api-catalog"),
    path("departments/<slug:slug>/quota/", api.department_quota, name="api-department-quota"),
    path("", include(router.urls)),
]
