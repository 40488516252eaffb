"""Registered models: what a Hugging Face-layout directory holds, parsed once, kept exactly."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from console.filtering import VisibleQuerySet
from fleet.catalog.choices import ChecksumState, Sensitivity

slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9._-]{0,99}$",
    "Use lower-case letters, digits, dots, hyphens and underscores (it becomes the served name).",
)


class ModelArtifact(models.Model):
    objects = VisibleQuerySet.as_manager()  # visible_to(user): admins only

    name = models.CharField(max_length=100, unique=True, validators=[slug_validator])
    path = models.CharField(max_length=1024, help_text="The model's directory, resolved, inside a model root.")
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="variants",
        help_text="The model this one was quantized from.",
    )
    recipe = models.JSONField(default=dict, blank=True)  # how a variant was made (quantization jobs)
    # Parsed from config.json
    architecture = models.CharField(max_length=128, blank=True)
    architecture_known = models.BooleanField(default=True)
    model_type = models.CharField(max_length=64, blank=True)
    num_layers = models.PositiveIntegerField(default=0)
    hidden_size = models.PositiveIntegerField(default=0)
    intermediate_size = models.PositiveIntegerField(default=0)
    num_attention_heads = models.PositiveIntegerField(default=0)
    num_kv_heads = models.PositiveIntegerField(default=0)
    head_dim = models.PositiveIntegerField(default=0)
    vocab_size = models.PositiveIntegerField(default=0)
    max_position_embeddings = models.PositiveIntegerField(default=0)
    num_experts = models.PositiveIntegerField(default=0)
    rope_scaling = models.JSONField(null=True, blank=True)
    torch_dtype = models.CharField(max_length=32, blank=True)
    quantization = models.JSONField(default=dict, blank=True)  # {"method", "bits", "group_size", ...}
    config = models.JSONField(default=dict)
    # Counted from the safetensors headers
    parameter_count = models.BigIntegerField(default=0)  # stored elements (packed weights count as stored)
    weights_bytes = models.BigIntegerField(default=0)
    dtypes = models.JSONField(default=dict)  # {"BF16": elements, ...}
    warnings = models.JSONField(default=list, blank=True)
    # People's facts
    license = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    sensitivity = models.CharField(max_length=16, choices=Sensitivity.choices, default=Sensitivity.INTERNAL)
    checksum_state = models.CharField(max_length=16, choices=ChecksumState.choices, default=ChecksumState.PENDING)
    checksum_progress = models.PositiveSmallIntegerField(default=0)  # percent of bytes hashed
    checksum_error = models.CharField(max_length=500, blank=True)
    checksum_claim = models.CharField(max_length=64, blank=True)  # the task computing it (a redelivery resumes)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_variant(self) -> bool:
        return self.parent_id is not None


class ModelFile(models.Model):
    class Kind(models.TextChoices):
        WEIGHTS = "weights", "Weights"
        CONFIG = "config", "Config"
        TOKENIZER = "tokenizer", "Tokenizer"
        OTHER = "other", "Other"

    artifact = models.ForeignKey(ModelArtifact, on_delete=models.CASCADE, related_name="files")
    name = models.CharField(max_length=512)  # relative to the model's directory
    kind = models.CharField(max_length=16, choices=Kind.choices)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["artifact", "name"]
        constraints = [models.UniqueConstraint(fields=["artifact", "name"], name="model_file_unique_name")]

    def __str__(self) -> str:
        return self.name
