"""Every model of the "access" app, for Django's registry; code imports them from their domain."""

from access.grants.models import AccessRequest, ApiKey, DepartmentQuota, Grant
from access.people.models import Department, PersonalToken, User
from access.usage.models import UsageRecord

__all__ = ["AccessRequest", "ApiKey", "Department", "DepartmentQuota", "Grant", "PersonalToken", "UsageRecord", "User"]
