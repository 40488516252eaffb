from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from console import backup
from console.config import data_dir


class Command(BaseCommand):
    help = "Write one consistent bundle: database, audit archive segments, signing key and secret key."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "out", nargs="?", help="the bundle's path (default: <data dir>/backups/fleet-<time>.tar.gz)"
        )

    def handle(self, *args, **options) -> None:
        out = Path(options["out"] or data_dir() / "backups" / f"fleet-{timezone.now():%Y%m%d-%H%M%S}.tar.gz")
        try:
            manifest = backup.backup(out)
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from None
        head = manifest["audit_head"]
        self.stdout.write(self.style.SUCCESS(f"Wrote {out} ({len(manifest['files'])} files)."))
        if head:
            self.stdout.write(f"Audit chain head: event {head['seq']}, hash {head['hash']}")
        self.stdout.write(
            self.style.WARNING(
                "The bundle holds the console's secrets (audit signing key, secret key): keep it like a password."
            )
        )
