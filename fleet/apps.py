from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet"

    def ready(self) -> None:
        # Receivers connect on import; imported here, where every model is loaded.
        from fleet.jobs import receivers  # noqa: F401
