"""People and their access: users, departments, personal tokens; access requests, grants, API keys
for the gateway, and the usage ledger."""
from access.models.grants import AccessRequest, ApiKey, DepartmentQuota, Grant, Limits
from access.models.people import Department, PersonalToken, User
from access.models.usage import UsageRecord

__all__ = ["Department", "PersonalToken", "User", "AccessRequest", "ApiKey", "DepartmentQuota", "Grant",
           "Limits", "UsageRecord"]
