from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "access"
    verbose_name = "People and access"

    def ready(self) -> None:
        # Imported for what importing does: the OpenAPI auth scheme registers itself, receivers
        # connect (audit of sign-ins and people changes; the gateways' route table reloads; a
        # demoted administrator's playground grant ends).
        from access.gateway import receivers as gateway_receivers  # noqa: F401
        from access.grants import receivers as grants_receivers  # noqa: F401
        from access.people import receivers as people_receivers  # noqa: F401
        from access.people import schema  # noqa: F401
