"""Forms of the nodes pages."""

from __future__ import annotations

from django import forms

from fleet.nodes.services import MAX_JOIN_TOKEN_HOURS


class JoinTokenForm(forms.Form):
    label = forms.CharField(max_length=100, required=False, help_text="e.g. the rack or the node it is for")
    expires_in_hours = forms.IntegerField(
        min_value=1, max_value=MAX_JOIN_TOKEN_HOURS, initial=24, label="Expires in (hours)"
    )
