from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "access"
    verbose_name = "People and access"

    def ready(self) -> None:
        from access import signals  # noqa: F401  (audit of logins and people changes)
