"""The node list's filters, for the Nodes page and /api/nodes/ alike."""

from __future__ import annotations

import django_filters
from django.db.models import Count, QuerySet

from console.filtering import ListFilterSet, search
from fleet.nodes.choices import NodeKind, NodeState
from fleet.nodes.models import Node


class NodeFilterSet(ListFilterSet):
    q = search("name", "hostname")
    state = django_filters.ChoiceFilter(choices=NodeState.choices, empty_label="any state")
    kind = django_filters.ChoiceFilter(choices=NodeKind.choices, empty_label="any kind")

    class Meta:
        model = Node
        fields = ["q", "state", "kind"]

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return qs.annotate(gpu_count=Count("gpus")).order_by("name")
