"""Build the tiny demo Llama under the first model root and register it (nothing is downloaded)."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from console.actions import ServiceError
from fleet.catalog import demo
from fleet.catalog import services as registry
from fleet.catalog.choices import Sensitivity
from fleet.catalog.models import ModelArtifact


class Command(BaseCommand):
    help = "Build a tiny Llama (random weights, trained byte-level BPE tokenizer, chat template) and register it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", default="demo-llama")
        parser.add_argument("--layers", type=int, default=2)
        parser.add_argument("--heads", type=int, default=2)
        parser.add_argument("--kv-heads", type=int, default=1)
        parser.add_argument("--hidden", type=int, default=128)

    def handle(self, *args, name: str, layers: int, heads: int, kv_heads: int, hidden: int, **options) -> None:
        existing = ModelArtifact.objects.filter(name=name).first()
        if existing is not None:
            self.stdout.write(f"{name} is registered already ({existing.path}).")
            return
        if not (1 <= layers <= 64 and 1 <= kv_heads <= heads and heads * 64 == hidden):
            raise CommandError("Use 1–64 layers, 1 ≤ kv-heads ≤ heads, and hidden = heads × 64 (head_dim 64).")
        directory = Path(settings.FLEET_MODEL_ROOTS[0]) / name
        demo.build(directory, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, intermediate=2 * hidden)
        try:
            artifact = registry.register(
                "make_demo_model",
                path=str(directory),
                name=name,
                license="MIT (demo)",
                notes="Random weights: it answers nonsense, quickly.",
                tags=["demo"],
                sensitivity=Sensitivity.PUBLIC,
                checksum_now=True,
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Registered {artifact.name}: {artifact.parameter_count:,} parameters in {directory}")
