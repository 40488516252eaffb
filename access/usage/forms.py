"""The usage page's filter form."""

from __future__ import annotations

from django import forms


class UsageFilterForm(forms.Form):
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    model = forms.CharField(required=False)
    scope = forms.ChoiceField(
        required=False,
        choices=[("", "Default"), ("mine", "Mine"), ("department", "My department"), ("all", "Whole fleet")],
    )
    department = forms.CharField(required=False, help_text="Short name")
    user = forms.CharField(required=False)
