"""The deployment and instance lists' filters, for the pages and the API alike."""

from __future__ import annotations

import django_filters
from django.db.models import Count, Q, QuerySet

from console.filtering import IdFilter, ListFilterSet, choice, search
from fleet.deployments.choices import DesiredState, InstanceState
from fleet.deployments.models import Deployment, Instance


class DeploymentFilterSet(ListFilterSet):
    q = search("name", "model__name")
    desired_state = choice(DesiredState.choices, "running or stopped")

    class Meta:
        model = Deployment
        fields = ["q", "desired_state"]

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return (
            qs.select_related("model")
            .prefetch_related("instances__node")
            .order_by("name")
            .annotate(
                ready=Count("instances", filter=Q(instances__state=InstanceState.READY)),
                failed=Count("instances", filter=Q(instances__state=InstanceState.FAILED)),
            )
        )


class InstanceFilterSet(ListFilterSet):
    q = search("deployment__name", "node__name")
    state = choice(InstanceState.choices, "any state")
    deployment = IdFilter(field_name="deployment_id", label="Deployment id")
    node = django_filters.CharFilter(field_name="node__name", label="Node name")

    class Meta:
        model = Instance
        fields = ["q", "state", "deployment", "node"]

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return qs.select_related("deployment", "node").order_by("deployment__name", "id")
