"""Forms of the catalog pages."""

from __future__ import annotations

from typing import cast

from django import forms

from fleet.catalog.choices import Sensitivity
from fleet.catalog.models import ModelArtifact
from fleet.planning.estimator import QUANTIZATIONS


class ModelRegisterForm(forms.Form):
    path = forms.CharField(
        max_length=1024, help_text="The model's directory: absolute, or relative to the first model root."
    )
    name = forms.SlugField(max_length=100, help_text="Lower-case; it becomes the served model name.")
    parent: forms.ModelChoiceField[ModelArtifact] = forms.ModelChoiceField(
        queryset=None, required=False, help_text="For a quantized variant: the model it came from."
    )
    license = forms.CharField(max_length=200, required=False)
    sensitivity = forms.ChoiceField(choices=Sensitivity.choices, initial=Sensitivity.INTERNAL)
    tags = forms.CharField(max_length=400, required=False, help_text="Comma-separated.")
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        parent_field = cast("forms.ModelChoiceField[ModelArtifact]", self.fields["parent"])
        parent_field.queryset = ModelArtifact.objects.order_by("name")


class ModelEditForm(forms.Form):
    license = forms.CharField(max_length=200, required=False)
    sensitivity = forms.ChoiceField(choices=Sensitivity.choices)
    tags = forms.CharField(max_length=400, required=False, help_text="Comma-separated.")
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class FitForm(forms.Form):
    model: forms.ModelChoiceField[ModelArtifact] = forms.ModelChoiceField(queryset=None)
    max_model_len = forms.IntegerField(min_value=1, max_value=10_000_000, initial=4096, label="Context length (tokens)")
    concurrency = forms.IntegerField(min_value=1, max_value=100_000, initial=8, label="Concurrent sequences")
    quantization = forms.ChoiceField(choices=[(q, q) for q in QUANTIZATIONS], initial="none")
    kv_dtype = forms.ChoiceField(
        choices=[("auto", "auto (the model's)"), ("fp8", "fp8")], initial="auto", label="KV cache dtype"
    )
    tp = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Tensor parallel")
    pp = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Pipeline parallel")
    gpu_memory_utilization = forms.FloatField(min_value=0.05, max_value=1.0, initial=0.9)
    cpu_kv_space_gib = forms.FloatField(min_value=0.1, max_value=4096, initial=1.0, label="CPU KV space (GiB)")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        model_field = cast("forms.ModelChoiceField[ModelArtifact]", self.fields["model"])
        model_field.queryset = ModelArtifact.objects.order_by("name")
