"""Pages and API routes of the model registry and the "Will it fit?" planner."""

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.routers import SimpleRouter

from fleet.catalog import api, views

router = SimpleRouter()
router.register("models", api.ModelViewSet, basename="api-model")

urlpatterns = [
    path("models/", views.model_list, name="models"),
    path("models/fit/", views.fit, name="fit"),
    path("models/<int:pk>/", views.model_detail, name="model-detail"),
    path("models/<int:pk>/checksum/", views.model_checksum, name="model-checksum"),
    path("models/<int:pk>/unregister/", views.model_unregister, name="model-unregister"),
]

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("fit/", api.fit, name="api-fit"),
    path("", include(router.urls)),
]
