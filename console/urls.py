"""The root URL configuration: the console's own few routes, then each app's."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from access import urls as access_urls
from audit import urls as audit_urls
from console import api, views
from fleet import urls as fleet_urls

api_patterns: list[URLPattern | URLResolver] = [
    path("me/", api.me, name="api-me"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    *audit_urls.api_urlpatterns,
    *access_urls.api_urlpatterns,
    *fleet_urls.api_urlpatterns,
]

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("", include(access_urls.urlpatterns)),
    path("", include(audit_urls.urlpatterns)),
    path("", include(fleet_urls.urlpatterns)),
    path("api/", include(api_patterns)),
    path("admin/", admin.site.urls),
]

handler400 = views.bad_request
handler403 = views.permission_denied
handler404 = views.page_not_found
handler500 = views.server_error
