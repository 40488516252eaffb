from __future__ import annotations

from typing import cast

from django import forms

from access.grants.models import LIMIT_FIELDS, LIMIT_MAX, Grant
from access.people.choices import Role
from access.people.models import Department, User
from fleet.catalog.models import ModelArtifact

# --- model access (access.grants) ---------------------------------------------------------------


class LimitsForm(forms.Form):
    """The four quota fields; empty means no limit at this level."""

    requests_per_minute = forms.IntegerField(
        min_value=1, max_value=LIMIT_MAX["requests_per_minute"], required=False, label="Requests / minute"
    )
    tokens_per_minute = forms.IntegerField(
        min_value=1, max_value=LIMIT_MAX["tokens_per_minute"], required=False, label="Tokens / minute"
    )
    tokens_per_day = forms.IntegerField(
        min_value=1, max_value=LIMIT_MAX["tokens_per_day"], required=False, label="Tokens / day"
    )
    tokens_per_month = forms.IntegerField(
        min_value=1, max_value=LIMIT_MAX["tokens_per_month"], required=False, label="Tokens / month"
    )

    def limits(self) -> dict:
        return {name: self.cleaned_data.get(name) for name in LIMIT_FIELDS}


def _model_field(**kwargs) -> forms.ModelMultipleChoiceField:
    return forms.ModelMultipleChoiceField(
        queryset=ModelArtifact.objects.order_by("name"),
        to_field_name="name",
        widget=forms.CheckboxSelectMultiple,
        **kwargs,
    )


class AccessRequestForm(forms.Form):
    models = _model_field(help_text="The models (or quantized variants) you need.")
    justification = forms.CharField(
        min_length=10,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What you will use it for; the admins read this.",
    )
    duration_days = forms.IntegerField(min_value=1, max_value=366, initial=90, label="For how many days")
    for_department = forms.BooleanField(required=False, label="For my whole department")


class ApiKeyForm(LimitsForm):
    name = forms.CharField(max_length=64, help_text="What will use it, e.g. 'discharge-summaries'.")
    grant: forms.ModelChoiceField[Grant] = forms.ModelChoiceField(queryset=None, empty_label=None)
    expires_in_days = forms.IntegerField(
        min_value=1,
        max_value=366,
        required=False,
        label="Expires after (days)",
        help_text="Empty: when the grant ends.",
    )

    def __init__(self, *args, grants_qs=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        grant_field = cast("forms.ModelChoiceField[Grant]", self.fields["grant"])
        grant_field.queryset = grants_qs
        grant_field.label_from_instance = lambda g: (  # type: ignore[method-assign, assignment]  # per-form labels
            f"#{g.pk}: {', '.join(sorted(m.name for m in g.models.all()))} (until {g.expires_at:%Y-%m-%d})"
        )
        self.order_fields(["name", "grant", "expires_in_days"])


class DecisionForm(LimitsForm):
    reason = forms.CharField(max_length=500, required=False)
    duration_days = forms.IntegerField(min_value=1, max_value=366, required=False, label="Days (empty: as asked)")


class GrantForm(LimitsForm):
    user: forms.ModelChoiceField[User] = forms.ModelChoiceField(queryset=None, required=False, help_text="One user…")
    department = forms.ModelChoiceField(
        queryset=Department.objects.all(), required=False, help_text="…or a whole department."
    )
    models = _model_field()
    duration_days = forms.IntegerField(min_value=1, max_value=366, initial=90, label="Days")
    note = forms.CharField(max_length=500, required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        user_field = cast("forms.ModelChoiceField[User]", self.fields["user"])
        user_field.queryset = User.objects.filter(role=Role.DEPT_USER, is_active=True)
        self.order_fields(["user", "department", "models", "duration_days", "note"])

    def clean(self) -> dict:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        if bool(data.get("user")) == bool(data.get("department")):
            raise forms.ValidationError("Choose one user or one department.")
        return data
