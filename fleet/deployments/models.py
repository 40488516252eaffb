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
    RevisionOutcome,
    Rollout,
    Routing,
    ScaleMetric,
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
    # Autoscaling (fleet.deployments.autoscaler): replicas follow the load between min and max;
    # with min 0 an idle deployment stops and the gateway wakes it on the next call.
    autoscale = models.BooleanField(default=False)
    min_replicas = models.PositiveSmallIntegerField(default=1)
    max_replicas = models.PositiveSmallIntegerField(default=1)
    scale_metric = models.CharField(max_length=16, choices=ScaleMetric.choices, default=ScaleMetric.IN_FLIGHT)
    scale_target = models.FloatField(default=4.0, help_text="The metric's value per instance to hold.")
    scale_up_after_s = models.PositiveIntegerField(default=30, help_text="Load above target this long adds replicas.")
    scale_down_after_s = models.PositiveIntegerField(
        default=300, help_text="Load below target (idle, to reach zero) this long removes replicas."
    )
    scale_state = models.JSONField(default=dict, blank=True)  # the autoscaler's clocks; written without signals
    # Rolling updates: the revision (model and options) new instances start with; instances of an
    # older one are replaced one replica at a time (fleet.deployments.reconciler).
    revision = models.PositiveIntegerField(default=1)
    rollout = models.CharField(max_length=16, choices=Rollout.choices, default=Rollout.NONE, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    placement_note = models.CharField(max_length=500, blank=True)  # why replicas are missing, if they are

    class Meta:
        ordering = ["name"]

    @property
    def wakes_on_call(self) -> bool:
        """Autoscaled down to zero when idle: a call starts it again, held by the gateway meanwhile."""
        return self.autoscale and self.min_replicas == 0 and self.desired_state == DesiredState.RUNNING

    def set_desired_state(self, new: str) -> None:
        check_transition(DESIRED_TRANSITIONS, self.desired_state, new)
        self.desired_state = new

    def __str__(self) -> str:
        return self.name


class Revision(models.Model):
    """One version of a deployment's model and vLLM options: who made it, what changed, how its
    rollout ended. Rolling back makes an earlier revision current again (no new number)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    # the model by name too: a revision outlives the variant it named (rollback then says so)
    model = models.ForeignKey(ModelArtifact, null=True, on_delete=models.SET_NULL, related_name="+")
    model_name = models.CharField(max_length=200)
    options = models.JSONField(default=dict)
    changes = models.JSONField(default=dict)  # {field: [before, after]} against the revision before
    outcome = models.CharField(max_length=16, choices=RevisionOutcome.choices, default=RevisionOutcome.DONE)
    note = models.CharField(max_length=300, blank=True)  # why it was rolled back, when it was
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["deployment", "-number"]
        constraints = [models.UniqueConstraint(fields=["deployment", "number"], name="revision_number")]

    def __str__(self) -> str:
        return f"{self.deployment.name} r{self.number}"


class Instance(models.Model):
    objects = VisibleQuerySet.as_manager()  # visible_to(user): admins only

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="instances")
    replica = models.PositiveSmallIntegerField()
    revision = models.PositiveIntegerField(default=1)  # the deployment's revision it was started with
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
