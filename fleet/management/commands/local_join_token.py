"""Used by `make run`: a join token for this machine's agent, printed only when it needs one."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand

from fleet.nodes import services
from fleet.nodes.models import Node


class Command(BaseCommand):
    help = "Print a join token for the local agent unless its saved identity is still a known node."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--state-file", type=Path, required=True)

    def handle(self, *args, name: str, state_file: Path, **options) -> None:
        try:
            saved = json.loads(state_file.read_text())
            if saved.get("credential") and Node.objects.filter(pk=int(saved["node_id"]), name=name).exists():
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        _token, plaintext = services.create_join_token("make run", label=f"local agent {name}", expires_in_hours=1)
        self.stdout.write(plaintext)
