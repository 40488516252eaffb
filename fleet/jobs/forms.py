"""Forms of the jobs pages."""

from __future__ import annotations

from typing import cast

from django import forms

from fleet.jobs.params import SCHEMES
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node


class QuantizeForm(forms.Form):
    """The raw values; fleet.jobs.params checks them (the API sends the same through the same code)."""

    scheme = forms.ChoiceField(choices=[], help_text="GPTQ and AWQ need calibration text; FP8 dynamic does not.")
    group_size = forms.ChoiceField(
        choices=[("32", "32"), ("64", "64"), ("128", "128")],
        initial="128",
        required=False,
        help_text="4-bit schemes: weights per scale.",
    )
    calibration = forms.ChoiceField(
        choices=[("builtin", "Built-in set (32 texts shipped with the console)"), ("upload", "Upload a file")],
        initial="builtin",
        widget=forms.RadioSelect,
    )
    calibration_file = forms.FileField(
        required=False, help_text="UTF-8 text; samples separated by blank lines; up to 2 MiB."
    )
    num_samples = forms.IntegerField(initial=64, min_value=1, max_value=4096, label="Calibration samples")
    max_seq_length = forms.IntegerField(initial=512, min_value=16, max_value=8192, label="Max sequence length")
    smoothing_strength = forms.FloatField(
        initial=0.8, min_value=0, max_value=1, required=False, help_text="W8A8 int8: SmoothQuant's migration strength."
    )
    name = forms.CharField(
        max_length=100,
        required=False,
        label="Variant name",
        help_text="Default: <model>-<scheme>. It becomes the served name when deployed.",
    )
    node = forms.ChoiceField(choices=[], required=False, help_text="Default: the best-suited online node.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["scheme"]).choices = [(k, s.label) for k, s in SCHEMES.items()]
        cast(forms.ChoiceField, self.fields["node"]).choices = [
            ("", "automatic"),
            *(
                (n, n)
                for n in Node.objects.filter(state=NodeState.ONLINE).order_by("name").values_list("name", flat=True)
            ),
        ]

    def params(self) -> dict:
        data = {k: v for k, v in self.cleaned_data.items() if k != "calibration_file" and v not in (None, "")}
        return data


class BenchmarkForm(forms.Form):
    mode = forms.ChoiceField(
        choices=[
            ("concurrency", "Concurrency sweep (requests in flight)"),
            ("rate", "Request-rate sweep (requests/s, Poisson arrivals)"),
        ]
    )
    levels = forms.CharField(initial="1, 4", max_length=100, help_text="Comma-separated, e.g. 1, 4, 16.")
    input_len = forms.IntegerField(initial=128, min_value=1, max_value=32768, label="Input tokens")
    output_len = forms.IntegerField(initial=64, min_value=1, max_value=8192, label="Output tokens")
    num_prompts = forms.IntegerField(initial=32, min_value=1, max_value=5000, label="Prompts per level")
