"""API shapes every app's serializers share: a field takes the JSON type its document names and
nothing else (DRF takes 0 as "0", "5" as 5 and 0 as false), a request names only fields the
document names, and one paginator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class _OnlyStrings:
    """A string and nothing else (NUL characters are refused by the JSON parser, console.parsers)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class IntegerField(serializers.IntegerField):
    """A JSON integer: not "5", 5.0 or true."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class FloatField(serializers.FloatField):
    """A JSON number: not "5" or true (2 is 2.0)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class BooleanField(serializers.BooleanField):
    """true or false: not 0, 1 or "yes"."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class CharField(_OnlyStrings, serializers.CharField):
    pass


class SlugField(_OnlyStrings, serializers.SlugField):
    pass


class EmailField(_OnlyStrings, serializers.EmailField):
    pass


class SlugRelatedField(serializers.SlugRelatedField):
    """An object named by a non-empty string (DRF takes "" as null and 5 as "5" for a relation)."""

    def run_validation(self, data: Any = serializers.empty) -> Any:
        if data == "" or (data not in (None, serializers.empty) and not isinstance(data, str)):
            self.fail("invalid")
        return super().run_validation(data)


class PrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """An object named by its JSON integer id: not "5", "" (DRF's null) or true."""

    def run_validation(self, data: Any = serializers.empty) -> Any:
        if data not in (None, serializers.empty) and (isinstance(data, bool) or not isinstance(data, int)):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().run_validation(data)


class _RefuseUnknownFields:
    """A field the request's document does not name is a 400 naming it, not silently dropped (a
    misspelt ``expires_in_day`` would make a token that never expires). Read-only fields are not
    part of a request either: the document's request shapes leave them out (and say so with
    ``additionalProperties: false``, console.api.close_requests)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            fields = self.fields  # type: ignore[attr-defined]
            writable = sorted(name for name, field in fields.items() if not field.read_only)
            unknown = sorted(str(k) for k in data if k not in writable and k != "csrfmiddlewaretoken")
            if unknown:
                takes = ", ".join(writable) or "no fields"
                raise ValidationError({k: [f"Unknown field; this request takes {takes}."] for k in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]


class Serializer(_RefuseUnknownFields, serializers.Serializer):
    pass


class ModelSerializer(_RefuseUnknownFields, serializers.ModelSerializer):
    serializer_related_field = PrimaryKeyRelatedField
    serializer_field_mapping = serializers.ModelSerializer.serializer_field_mapping | {
        models.CharField: CharField,
        models.TextField: CharField,
        models.SlugField: SlugField,
        models.EmailField: EmailField,
        models.IntegerField: IntegerField,
        models.PositiveIntegerField: IntegerField,
        models.PositiveSmallIntegerField: IntegerField,
        models.SmallIntegerField: IntegerField,
        models.BigIntegerField: IntegerField,
        models.FloatField: FloatField,
        models.BooleanField: BooleanField,
    }


class Pagination(PageNumberPagination):
    """DRF's, but ``?page=`` names a page: blank or not a whole number is a 400, past the last a 404."""

    def get_page_number(self, request: Any, paginator: Any) -> Any:
        given = request.query_params.get(self.page_query_param)
        if given is not None and not (given.isdigit() and int(given) >= 1):
            raise ValidationError({self.page_query_param: "A page is a whole number from 1."})
        return super().get_page_number(request, paginator)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters
