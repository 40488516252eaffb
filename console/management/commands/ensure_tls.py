"""Make the agent endpoint's CA and certificate unless they exist (or check the organisation's),
and print where they are and the CA fingerprint that join tokens carry."""

from django.core.management.base import BaseCommand

from console import tls


class Command(BaseCommand):
    help = "Make (once) and show the agent endpoint's TLS material and its CA fingerprint."

    def handle(self, *args, **options) -> None:
        made = tls.material()
        self.stdout.write(f"certificate {made.cert}\nkey {made.key}\nCA {made.ca} (sha256 {made.ca_fingerprint})")
