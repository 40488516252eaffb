from __future__ import annotations

from django import forms

from fleet.choices import NodeKind, NodeState
from fleet.estimator import GIB, QUANTIZATIONS, ModelShape
from fleet.models import ModelArtifact, Sensitivity
from fleet.placement import Spec
from fleet.services import MAX_JOIN_TOKEN_HOURS


class JoinTokenForm(forms.Form):
    label = forms.CharField(max_length=100, required=False, help_text="e.g. the rack or the node it is for")
    expires_in_hours = forms.IntegerField(min_value=1, max_value=MAX_JOIN_TOKEN_HOURS, initial=24,
                                          label="Expires in (hours)")


class NodeFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search", widget=forms.TextInput(attrs={"placeholder": "name or host"}))
    state = forms.ChoiceField(required=False, choices=[("", "any state"), *NodeState.choices])
    kind = forms.ChoiceField(required=False, choices=[("", "any kind"), *NodeKind.choices])


class ModelRegisterForm(forms.Form):
    path = forms.CharField(max_length=1024, help_text="The model's directory: absolute, or relative to the first model root.")
    name = forms.SlugField(max_length=100, help_text="Lower-case; it becomes the served model name.")
    parent = forms.ModelChoiceField(queryset=None, required=False, help_text="For a quantized variant: the model it came from.")
    license = forms.CharField(max_length=200, required=False)
    sensitivity = forms.ChoiceField(choices=Sensitivity.choices, initial=Sensitivity.INTERNAL)
    tags = forms.CharField(max_length=400, required=False, help_text="Comma-separated.")
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["parent"].queryset = ModelArtifact.objects.order_by("name")


class ModelEditForm(forms.Form):
    license = forms.CharField(max_length=200, required=False)
    sensitivity = forms.ChoiceField(choices=Sensitivity.choices)
    tags = forms.CharField(max_length=400, required=False, help_text="Comma-separated.")
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class FitForm(forms.Form):
    model = forms.ModelChoiceField(queryset=None)
    max_model_len = forms.IntegerField(min_value=1, max_value=10_000_000, initial=4096, label="Context length (tokens)")
    concurrency = forms.IntegerField(min_value=1, max_value=100_000, initial=8, label="Concurrent sequences")
    quantization = forms.ChoiceField(choices=[(q, q) for q in QUANTIZATIONS], initial="none")
    kv_dtype = forms.ChoiceField(choices=[("auto", "auto (the model's)"), ("fp8", "fp8")], initial="auto", label="KV cache dtype")
    tp = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Tensor parallel")
    pp = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Pipeline parallel")
    gpu_memory_utilization = forms.FloatField(min_value=0.05, max_value=1.0, initial=0.9)
    cpu_kv_space_gib = forms.FloatField(min_value=0.1, max_value=4096, initial=1.0, label="CPU KV space (GiB)")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = ModelArtifact.objects.order_by("name")

    def spec(self) -> Spec:
        d = self.cleaned_data
        return Spec(shape=ModelShape.from_artifact(d["model"]), tp=d["tp"], pp=d["pp"], max_model_len=d["max_model_len"],
                    concurrency=d["concurrency"], gpu_memory_utilization=d["gpu_memory_utilization"],
                    kv_dtype=d["kv_dtype"], quantization=d["quantization"],
                    cpu_kv_space_bytes=int(d["cpu_kv_space_gib"] * GIB))


class DeploymentForm(forms.Form):
    name = forms.SlugField(max_length=100, help_text="Also the model name clients ask for.")
    model = forms.ModelChoiceField(queryset=None)
    replicas = forms.IntegerField(min_value=0, max_value=64, initial=1)
    max_model_len = forms.IntegerField(min_value=16, max_value=10_000_000, initial=2048, label="Context length")
    dtype = forms.ChoiceField(choices=[(c, c) for c in ("auto", "bfloat16", "float16", "float32")], initial="bfloat16")
    gpu_memory_utilization = forms.FloatField(min_value=0.05, max_value=1.0, initial=0.9)
    max_num_seqs = forms.IntegerField(min_value=1, max_value=4096, initial=256, label="Max concurrent sequences")
    tensor_parallel_size = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Tensor parallel")
    pipeline_parallel_size = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Pipeline parallel")
    kv_cache_dtype = forms.ChoiceField(choices=[(c, c) for c in ("auto", "fp8")], initial="auto", label="KV cache dtype")
    cpu_kv_space_gib = forms.IntegerField(min_value=1, max_value=4096, initial=1, label="CPU KV space (GiB)")
    enable_prefix_caching = forms.BooleanField(required=False, label="Prefix caching")
    strategy = forms.ChoiceField(choices=[("binpack", "binpack"), ("spread", "spread")], initial="binpack")
    force = forms.BooleanField(required=False, label="Start even if the estimate says it will not fit")

    OPTION_FIELDS = ("max_model_len", "dtype", "gpu_memory_utilization", "max_num_seqs", "tensor_parallel_size",
                     "pipeline_parallel_size", "kv_cache_dtype", "cpu_kv_space_gib", "enable_prefix_caching")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = ModelArtifact.objects.order_by("name")

    def service_kwargs(self) -> dict:
        d = self.cleaned_data
        return {"name": d["name"], "model": d["model"], "replicas": d["replicas"], "strategy": d["strategy"],
                "force": d["force"], "selector": {}, "options": {k: d[k] for k in self.OPTION_FIELDS}}


class QuantizeForm(forms.Form):
    """The raw values; fleet.job_params checks them (the API sends the same through the same code)."""
    scheme = forms.ChoiceField(choices=[], help_text="GPTQ and AWQ need calibration text; FP8 dynamic does not.")
    group_size = forms.ChoiceField(choices=[("32", "32"), ("64", "64"), ("128", "128")], initial="128",
                                   required=False, help_text="4-bit schemes: weights per scale.")
    calibration = forms.ChoiceField(choices=[("builtin", "Built-in set (32 texts shipped with the console)"),
                                             ("upload", "Upload a file")], initial="builtin", widget=forms.RadioSelect)
    calibration_file = forms.FileField(required=False, help_text="UTF-8 text; samples separated by blank lines; up to 2 MiB.")
    num_samples = forms.IntegerField(initial=64, min_value=1, max_value=4096, label="Calibration samples")
    max_seq_length = forms.IntegerField(initial=512, min_value=16, max_value=8192, label="Max sequence length")
    smoothing_strength = forms.FloatField(initial=0.8, min_value=0, max_value=1, required=False,
                                          help_text="W8A8 int8: SmoothQuant's migration strength.")
    name = forms.CharField(max_length=100, required=False, label="Variant name",
                           help_text="Default: <model>-<scheme>. It becomes the served name when deployed.")
    node = forms.ChoiceField(choices=[], required=False, help_text="Default: the best-suited online node.")

    def __init__(self, *args, **kwargs) -> None:
        from fleet.job_params import SCHEMES
        from fleet.models import Node

        super().__init__(*args, **kwargs)
        self.fields["scheme"].choices = [(k, s.label) for k, s in SCHEMES.items()]
        self.fields["node"].choices = [("", "automatic"), *((n, n) for n in Node.objects.filter(
            state=NodeState.ONLINE).order_by("name").values_list("name", flat=True))]

    def params(self) -> dict:
        data = {k: v for k, v in self.cleaned_data.items() if k != "calibration_file" and v not in (None, "")}
        return data


class BenchmarkForm(forms.Form):
    mode = forms.ChoiceField(choices=[("concurrency", "Concurrency sweep (requests in flight)"),
                                      ("rate", "Request-rate sweep (requests/s, Poisson arrivals)")])
    levels = forms.CharField(initial="1, 4", max_length=100, help_text="Comma-separated, e.g. 1, 4, 16.")
    input_len = forms.IntegerField(initial=128, min_value=1, max_value=32768, label="Input tokens")
    output_len = forms.IntegerField(initial=64, min_value=1, max_value=8192, label="Output tokens")
    num_prompts = forms.IntegerField(initial=32, min_value=1, max_value=5000, label="Prompts per level")


class JobFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search", widget=forms.TextInput(attrs={"placeholder": "model, deployment or node"}))
    kind = forms.ChoiceField(required=False, choices=[])
    state = forms.ChoiceField(required=False, choices=[])

    def __init__(self, *args, **kwargs) -> None:
        from fleet.choices import JobKind, JobState

        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [("", "any kind"), *JobKind.choices]
        self.fields["state"].choices = [("", "any state"), *JobState.choices]
