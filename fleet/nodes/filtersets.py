"""The node list's filters, for the Nodes page and /api/nodes/ alike."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from console.filtering import ListFilterSet, choice, search
from fleet.nodes.choices import NodeKind, NodeState
from fleet.nodes.models import Node


class NodeFilterSet(ListFilterSet):
    q = search("name", "hostname")
    state = choice(NodeState.choices, "any state")
    kind = choice(NodeKind.choices, "any kind")

    class Meta:
        model = Node
        fields = ["q", "state", "kind"]

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return qs.annotate(gpu_count=Count("gpus")).order_by("name")
