from django.core.management.base import BaseCommand, CommandError

from console.actions import ServiceError
from fleet.nodes import services


class Command(BaseCommand):
    help = "Create a join token for a new node and print it (shown once; stored hashed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--label", default="", help="what the token is for, e.g. the node")
        parser.add_argument("--hours", type=int, default=24, help="hours until it expires (default 24)")

    def handle(self, *args, label: str, hours: int, **options) -> None:
        try:
            _token, plaintext = services.create_join_token("manage.py", label=label, expires_in_hours=hours)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(plaintext)
