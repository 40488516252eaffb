"""Deployments (what should run) and Instances (what runs: one vLLM process on one node)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from console.filtering import VisibleQuerySet
from console.states import check_transition
from fleet.catalog.models import ModelArtifact, slug_validator
from fleet.deployments.choices import (
    DESIRED_TRANSITIONS,
    INSTANCE_TRANSITIONS,
    DesiredState,
    InstanceState,
    Routing,
)


class Deployment(models.Model):
    objects = VisibleQuerySet.as_manager()  # visible_to(user): admins only

    name = models.CharField(
        max_length=100,
        unique=True,
        validators=[slug_validator],
        help_text="Also the served model name clients ask for.",
    )
    model = models.ForeignKey(ModelArtifact, on_delete=models.PROTECT, related_name="deployments")
    desired_state = models.CharField(max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING)
    replicas = models.PositiveSmallIntegerField(default=1)
    options = models.JSONField(default=dict)  # the typed vLLM options (fleet.protocol.vllm), validated
    selector = models.JSONField(default=dict, blank=True)  # node labels that must match
    strategy = models.CharField(max_length=16, default="binpack")
    routing = models.CharField(max_length=16, choices=Routing.choices, default=Routing.LEAST_BUSY)
    # Answers this deployment's calls while it has no Ready instance or fails before the first byte.
    fallback = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="fallback_for")
    force = models.BooleanField(default=False, help_text="Start even where the estimator says it will not fit.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    placement_note = models.CharField(max_length=500, blank=True)  # why replicas are missing, if they are

    class Meta:
        ordering = ["name"]

    def set_desired_state(self, new: str) -> None:
        check_transition(DESIRED_TRANSITIONS, self.desired_state, new)
        self.desired_state = new

    def __str__(self) -> str:
        return self.name


class Instance(models.Model):
    objects = VisibleQuerySet.as_manager()  # visible_to(user): admins only

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="instances")
    replica = models.PositiveSmallIntegerField()
    node = models.ForeignKey("fleet.Node", null=True, on_delete=models.SET_NULL, related_name="instances")
    gpus = models.JSONField(default=list)
    port = models.PositiveIntegerField()
    address = models.CharField(max_length=255, default="127.0.0.1")
    state = models.CharField(max_length=16, choices=InstanceState.choices, default=InstanceState.PENDING)
    pid = models.PositiveIntegerField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    exit_code = models.IntegerField(null=True, blank=True)
    cause = models.CharField(max_length=200, blank=True)
    remedy = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["deployment", "replica", "-created_at"]
        indexes = [models.Index(fields=["state"], name="instance_state")]

    def __str__(self) -> str:
        return f"{self.deployment.name}#{self.replica} ({self.pk})"

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}/v1"

    @property
    def live(self) -> bool:
        return self.state in InstanceState.LIVE

    def set_state(self, new: str) -> None:
        check_transition(INSTANCE_TRANSITIONS, self.state, new)
        self.state = new
