from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from console import backup


class Command(BaseCommand):
    help = "Bring a backup bundle up in this console's empty database and data dir, then say how to verify it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("bundle", help="a file written by `manage.py backup`")
        parser.add_argument("--force", action="store_true", help="replace a database and secrets that already exist")

    def handle(self, *args, **options) -> None:
        bundle = Path(options["bundle"])
        if not bundle.is_file():
            raise CommandError(f"{bundle} does not exist.")
        try:
            manifest = backup.restore(bundle, force=options["force"])
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Restored {bundle} (taken {manifest['created_at']})."))
        self.stdout.write("Next: `manage.py migrate` (for a newer release), then `manage.py audit_verify`.")
