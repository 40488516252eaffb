"""Pages and API routes of people, access requests, grants, keys and usage."""
from django.contrib.auth import views as auth_views
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from access import api as access_api
from access import grant_api, grant_views
from access import views as access_views

router = SimpleRouter()
router.register("departments", access_api.DepartmentViewSet, basename="department")
router.register("users", access_api.UserViewSet, basename="user")
router.register("tokens", access_api.TokenViewSet, basename="token")
router.register("access-requests", grant_api.AccessRequestViewSet, basename="api-access-request")
router.register("grants", grant_api.GrantViewSet, basename="api-grant")
router.register("api-keys", grant_api.ApiKeyViewSet, basename="api-key")

urlpatterns = [
    path("login/", access_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("people/", access_views.people, name="people"),
    path("account/tokens/", access_views.tokens, name="tokens"),
    path("account/tokens/<int:pk>/revoke/", access_views.revoke_token, name="token-revoke"),
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
]

api_urlpatterns = [
    path("catalog/", grant_api.catalog, name="api-catalog"),
    path("departments/<slug:slug>/quota/", grant_api.department_quota, name="api-department-quota"),
    path("usage/", grant_api.usage_rows, name="api-usage"),
    path("usage/summary/", grant_api.usage_summary, name="api-usage-summary"),
    path("", include(router.urls)),
]
