"""Pages and API routes of nodes and join tokens."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from fleet.nodes import api, views

router = SimpleRouter()
router.register("nodes", api.NodeViewSet, basename="api-node")
router.register("join-tokens", api.JoinTokenViewSet, basename="api-join-token")

urlpatterns = [
    path("nodes/", views.node_list, name="nodes"),
    path("nodes/join/", views.join, name="node-join"),
    path("nodes/join/<int:pk>/revoke/", views.join_token_revoke, name="join-token-revoke"),
    path("nodes/<int:pk>/", views.node_detail, name="node-detail"),
    path("nodes/<int:pk>/cordon/", views.node_cordon, {"cordon": True}, name="node-cordon"),
    path("nodes/<int:pk>/uncordon/", views.node_cordon, {"cordon": False}, name="node-uncordon"),
    path("nodes/<int:pk>/remove/", views.node_remove, name="node-remove"),
    path("nodes/<int:pk>/rotate/", views.node_rotate, name="node-rotate"),
    path("nodes/<int:pk>/runtimes/", views.node_runtime, name="node-runtime"),
]

api_urlpatterns = [path("", include(router.urls))]
