from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "access"
    verbose_name = "People and access"

    def ready(self) -> None:
        from access import schema, signals  # noqa: F401  (OpenAPI auth scheme; audit of people changes)
