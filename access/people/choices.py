from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Admin (IT)"
    DEPT_USER = "dept_user", "Department user"
    AUDITOR = "auditor", "Auditor"
    NONE = "none", "No role"
