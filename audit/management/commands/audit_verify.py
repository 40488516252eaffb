from django.core.management.base import BaseCommand, CommandError

from audit import verification


class Command(BaseCommand):
    help = "Walk the audit hash chain and name the first broken event (exit status 1 if any)."

    def handle(self, *args, **options) -> None:
        result = verification.run(full=True, requested_by="audit_verify")
        if not result.ok:
            raise CommandError(
                f"BROKEN at event {result.broken_seq}: {result.problem} (intact up to event {result.intact_up_to})"
            )
        self.stdout.write(self.style.SUCCESS(f"OK: {result.checked} events, intact up to event {result.intact_up_to}"))
