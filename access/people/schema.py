"""Tells the OpenAPI schema how personal tokens authenticate."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class PersonalTokenScheme(OpenApiAuthenticationExtension):
    target_class = "access.people.authentication.PersonalTokenAuthentication"
    name = "personalToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "fct_<prefix>_<secret>",
            "description": "A personal API token from Account → API tokens.",
        }
