from django.core.management.base import BaseCommand, CommandError

from audit.chain import verify


class Command(BaseCommand):
    help = "Walk the audit hash chain and name the first broken event (exit status 1 if any)."

    def handle(self, *args, **options) -> None:
        result = verify()
        if not result.ok:
            raise CommandError(str(result))
        self.stdout.write(self.style.SUCCESS(str(result)))
