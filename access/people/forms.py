"""Forms of the people pages."""

from __future__ import annotations

from django import forms
from django.conf import settings

from access.people.choices import LDAP_PROVIDER
from access.people.models import Department, DirectoryMapping, PersonalToken, User

EXPIRY_CHOICES = [("30", "30 days"), ("90", "90 days"), ("365", "1 year"), ("", "Never")]


class DepartmentForm(forms.ModelForm):
    class Meta:
        model = Department
        fields = ["name", "slug", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["slug"].required = False  # made from the name when left empty (services)
        self.fields["slug"].help_text = "Short name used in URLs and reports; leave empty to make one from the name."


class TokenForm(forms.Form):
    name = PersonalToken._meta.get_field("name").formfield(help_text="What will use it, e.g. 'nightly export'.")
    expires_in_days = forms.TypedChoiceField(
        choices=EXPIRY_CHOICES, coerce=int, empty_value=None, required=False, initial="90", label="Expires after"
    )


class DirectoryMappingForm(forms.ModelForm):
    """The rules (one group, one role, a department for department users) live in the model's clean()."""

    class Meta:
        model = DirectoryMapping
        fields = ["provider", "group", "role", "department"]
        labels = {"group": "Group (a DN, or a groups-claim value)", "provider": "From"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = [(LDAP_PROVIDER, "LDAP / Active Directory")] + [
            (name, f"{conf['label']} (OIDC, claim “{conf['groups_claim']}”)")
            for name, conf in settings.FLEET_OIDC_PROVIDERS.items()
        ]
        self.fields["provider"] = forms.ChoiceField(choices=choices, initial=LDAP_PROVIDER, label="From")


class PersonForm(forms.ModelForm):
    """A person's name, address, role and department (the department rule lives in User.clean)."""

    class Meta:
        model = User
        fields = ["first_name", "last_name", "email", "role", "department"]


class NewPersonForm(PersonForm):
    """A new local account: no password here; the person sets their own through a one-time link."""

    class Meta(PersonForm.Meta):
        fields = ["username", *PersonForm.Meta.fields]
