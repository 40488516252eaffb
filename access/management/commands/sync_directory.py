"""Run the directory sync now (beat runs it every FLEET_LDAP_SYNC_MINUTES)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from access.people import directory


class Command(BaseCommand):
    help = "Deactivate whom the directory disabled or removed, and re-map everyone's role."

    def handle(self, *args, **options) -> None:
        if not directory.enabled():
            raise CommandError("No directory is configured: set FLEET_LDAP_URI (see the README).")
        result = directory.sync()
        if result.error:
            raise CommandError(f"The directory did not answer; nobody was changed: {result.error}")
        self.stdout.write(
            f"checked {result.checked}; deactivated {', '.join(result.deactivated) or 'nobody'}; "
            f"changed {', '.join(result.changed) or 'nobody'}; skipped {', '.join(result.skipped) or 'nobody'}"
        )
