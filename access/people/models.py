"""People: users with one role, departments, personal API tokens."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from access.people.choices import LDAP_PROVIDER, Role, Source
from access.tokens import LABEL_VALIDATOR
from console.states import Revocable

# A department's display name may be any language, but not control characters (C0, C1, DEL).
NAME_VALIDATOR = RegexValidator(r"^[^\x00-\x1f\x7f-\x9f]+$", "Use printable characters only.")


class Department(models.Model):
    name = models.CharField(max_length=100, unique=True, validators=[NAME_VALIDATOR])
    slug = models.SlugField(max_length=50, unique=True, help_text="Short name used in URLs and reports.")
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.NONE, db_index=True)
    department = models.ForeignKey(Department, null=True, blank=True, on_delete=models.PROTECT, related_name="members")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.LOCAL, db_index=True)
    # An OIDC account's "<provider>:<sub>": the provider's own stable id (names can change there).
    external_id = models.CharField(max_length=300, blank=True, db_index=True)
    # Why the account is inactive: a directory sync's reason is lifted by the directory, an admin's by an admin.
    deactivated_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["username"]

    def clean(self) -> None:
        super().clean()
        if self.role == Role.DEPT_USER and self.department_id is None:
            raise ValidationError({"department": "A department user must belong to a department."})

    def save(self, *args, **kwargs) -> None:
        # Django admin access follows the role, so there is one source of truth for "who is IT".
        self.is_staff = self.role == Role.ADMIN
        if self.is_superuser and self.role != Role.ADMIN:
            self.role = Role.ADMIN
            self.is_staff = True
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "role" in update_fields:
            kwargs["update_fields"] = set(update_fields) | {"is_staff"}
        super().save(*args, **kwargs)

    def has_perm(self, perm: str, obj=None) -> bool:
        # IT admins hold every model permission (Django admin included); read-only models such
        # as the audit trail refuse changes in their ModelAdmin whatever the permission says.
        return (self.is_active and self.role == Role.ADMIN) or super().has_perm(perm, obj)

    def has_module_perms(self, app_label: str) -> bool:
        return (self.is_active and self.role == Role.ADMIN) or super().has_module_perms(app_label)

    def has_role(self, *roles: str) -> bool:
        return self.is_authenticated and self.is_active and self.role in roles

    @property
    def is_fleet_admin(self) -> bool:
        return self.has_role(Role.ADMIN)


def normalize_group(group: str) -> str:
    """Groups compare case-insensitively: DNs as the directory compares them, claim values likewise."""
    return group.strip().lower()


class DirectoryMapping(models.Model):
    """A directory group and the role (and department) its members get, applied at every sign-in and sync."""

    provider = models.CharField(
        max_length=64,
        default=LDAP_PROVIDER,
        help_text="The LDAP directory, or the OIDC provider whose groups claim names the group.",
    )
    group = models.CharField(
        max_length=500,
        help_text="An LDAP group's distinguished name (cn=it-admins,ou=groups,dc=example,dc=org), "
        "or a value of an OIDC provider's groups claim.",
    )
    role = models.CharField(max_length=16, choices=[c for c in Role.choices if c[0] != Role.NONE])
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.PROTECT, related_name="directory_mappings"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "group"]
        constraints = [models.UniqueConstraint(fields=["provider", "group"], name="one_mapping_per_group")]

    def __str__(self) -> str:
        return f"{self.provider}: {self.group} → {self.get_role_display()}"

    def save(self, *args, **kwargs) -> None:
        self.group = normalize_group(self.group)  # however the row is made
        super().save(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        self.group = normalize_group(self.group)  # before the form's uniqueness check
        if self.role == Role.DEPT_USER and self.department_id is None:
            raise ValidationError({"department": "A group mapped to department users needs a department."})
        if self.role != Role.DEPT_USER and self.department_id is not None:
            raise ValidationError({"department": "Only department users belong to a department."})


class PersonalToken(Revocable, models.Model):
    """A token for automation against /api/. Only its SHA-256 is stored; the prefix finds it."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(
        max_length=64,
        validators=[LABEL_VALIDATOR],
    )
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
