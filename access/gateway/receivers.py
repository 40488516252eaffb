"""Deployments and instances that change reload every gateway's route table."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from access import bus
from fleet.deployments.models import Deployment, Instance


def _routes_changed(sender: Any, **kwargs: Any) -> None:
    # Every gateway process reloads its route table (instances turned Ready, moved or stopped).
    bus.publish_on_commit("routes")


def _connect_route_signals() -> None:

    for model in (Deployment, Instance):
        post_save.connect(_routes_changed, sender=model, dispatch_uid=f"gateway-routes-save-{model.__name__}")
        post_delete.connect(_routes_changed, sender=model, dispatch_uid=f"gateway-routes-del-{model.__name__}")


_connect_route_signals()
