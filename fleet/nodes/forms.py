"""Forms of the nodes pages."""
from __future__ import annotations

from django import forms

from fleet.nodes.choices import NodeKind, NodeState
from fleet.nodes.services import MAX_JOIN_TOKEN_HOURS


class JoinTokenForm(forms.Form):
    label = forms.CharField(max_length=100, required=False, help_text="e.g. the rack or the node it is for")
    expires_in_hours = forms.IntegerField(min_value=1, max_value=MAX_JOIN_TOKEN_HOURS, initial=24,
                                          label="Expires in (hours)")


class NodeFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search", widget=forms.TextInput(attrs={"placeholder": "name or host"}))
    state = forms.ChoiceField(required=False, choices=[("", "any state"), *NodeState.choices])
    kind = forms.ChoiceField(required=False, choices=[("", "any kind"), *NodeKind.choices])
