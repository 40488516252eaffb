"""Pages and API routes of deployments, and draining a node (it moves deployments' instances)."""

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.routers import SimpleRouter

from fleet.deployments import api, views

router = SimpleRouter()
router.register("deployments", api.DeploymentViewSet, basename="api-deployment")
router.register("instances", api.InstanceViewSet, basename="api-instance")

urlpatterns = [
    path("nodes/<int:pk>/drain/", views.node_drain, name="node-drain"),
    path("deployments/", views.deployment_list, name="deployments"),
    path("instances/", views.instance_list, name="instances"),
    path("deployments/check/", views.deployment_check, name="deployment-check"),
    path("deployments/<int:pk>/", views.deployment_detail, name="deployment-detail"),
]

# After the jobs' routes: "deployments/<pk>/benchmark/" is a job's page, not an action.
action_urlpatterns = [
    path("deployments/<int:pk>/<str:action>/", views.deployment_action, name="deployment-action"),
]

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("nodes/<int:pk>/drain/", api.drain_node, name="api-node-drain"),
    path("", include(router.urls)),
]
