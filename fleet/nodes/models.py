"""Nodes, their GPUs, the join tokens that admit them, and 1-minute telemetry rollups."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from console.filtering import VisibleQuerySet
from console.states import Revocable, check_transition
from fleet.nodes.choices import NODE_TRANSITIONS, NodeKind, NodeState

# A node name appears in URLs, topics and host names: keep it to DNS-label characters.
NODE_NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
node_name_validator = RegexValidator(
    NODE_NAME_RE, "Use 1–63 lower-case letters, digits and hyphens (not at either end)."
)


class JoinToken(Revocable, models.Model):
    """Admits one node, once, before it expires. Only the SHA-256 of the token is kept."""

    label = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, unique=True)
    digest = models.CharField(max_length=64)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey("Node", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"join token {self.prefix}" + (f" ({self.label})" if self.label else "")

    def unusable_reason(self, now=None) -> str | None:
        now = now or timezone.now()
        if self.revoked_at:
            return "this join token was revoked"
        if self.used_at:
            return "this join token was already used; create a new one"
        if self.expires_at <= now:
            return "this join token has expired; create a new one"
        return None

    @property
    def status(self) -> str:
        if self.used_at:
            return "used"
        if self.revoked_at:
            return "revoked"
        return "expired" if self.expires_at <= timezone.now() else "usable"


class Node(models.Model):
    objects = VisibleQuerySet.as_manager()  # visible_to(user): admins only

    name = models.CharField(max_length=63, unique=True, validators=[node_name_validator])
    kind = models.CharField(max_length=8, choices=NodeKind.choices)
    state = models.CharField(max_length=16, choices=NodeState.choices, default=NodeState.ONLINE)
    cordoned = models.BooleanField(default=False, help_text="No new placements on this node.")
    labels = models.JSONField(default=dict, blank=True)
    agent_digest = models.CharField(max_length=64)  # SHA-256 of the agent's own secret
    agent_version = models.CharField(max_length=32, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    address = models.CharField(
        max_length=255, default="127.0.0.1", help_text="Where the console reaches its vLLM instances."
    )
    os = models.CharField(max_length=255, blank=True)
    cpu_model = models.CharField(max_length=255, blank=True)
    cpu_cores = models.PositiveIntegerField(default=0)
    ram_bytes = models.BigIntegerField(default=0)
    driver_version = models.CharField(max_length=64, blank=True)
    cuda_version = models.CharField(max_length=32, blank=True)
    nvml_error = models.CharField(max_length=255, blank=True)  # why a node has no NVML, if it said
    telemetry_interval_s = models.FloatField(default=1.0)
    registered_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    last_sample = models.JSONField(default=dict, blank=True)
    runtimes = models.JSONField(default=dict, blank=True)  # "engine==version" → {"state", "at"}

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def topic(self) -> str:
        return f"telemetry.node.{self.pk}"

    def set_state(self, new: str) -> None:
        check_transition(NODE_TRANSITIONS, self.state, new)
        self.state = new


class GPU(models.Model):
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveSmallIntegerField()
    uuid = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=128, blank=True)
    memory_total = models.BigIntegerField(default=0)
    compute_capability = models.CharField(max_length=8, blank=True)
    mig_mode = models.BooleanField(null=True)
    pcie_gen = models.PositiveSmallIntegerField(null=True)
    pcie_width = models.PositiveSmallIntegerField(null=True)
    nvlink_peers = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["node", "index"]
        constraints = [models.UniqueConstraint(fields=["node", "index"], name="gpu_unique_index")]

    def __str__(self) -> str:
        return f"{self.node.name}/gpu{self.index} {self.name}"


HOST = -1  # gpu_index of a node's host (CPU/RAM) rollup row


class TelemetryRollup(models.Model):
    """min/avg/max of each metric over one minute, for one GPU (or the host, gpu_index=-1)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="rollups")
    gpu_index = models.SmallIntegerField()
    minute = models.DateTimeField()
    samples = models.PositiveSmallIntegerField()
    stats = models.JSONField()  # {"util": [min, avg, max], ...}

    class Meta:
        constraints = [models.UniqueConstraint(fields=["node", "gpu_index", "minute"], name="rollup_unique_minute")]
        indexes = [models.Index(fields=["minute"], name="rollup_minute")]
