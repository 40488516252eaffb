"""Read side of jobs: benchmark runs side by side."""

from __future__ import annotations

from console.actions import ServiceError
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job

MAX_COMPARE = 8


def compare_runs(ids: list[int]) -> list[dict]:
    """Succeeded benchmark runs, for charts side by side (one series per run)."""
    found = {
        j.pk: j
        for j in Job.objects.filter(pk__in=ids, kind=JobKind.BENCHMARK, state=JobState.SUCCEEDED).select_related(
            "deployment", "model"
        )
    }
    missing = [i for i in ids if i not in found]
    if missing:
        raise ServiceError(f"Not succeeded benchmark jobs: {', '.join(map(str, missing))}.", "ids")
    return [
        {
            "id": j.pk,
            "label": f"#{j.pk} {j.params.get('served') or j.model}",
            "model": j.model.name if j.model else None,
            "mode": j.result.get("mode"),
            "input_len": j.params.get("input_len"),
            "output_len": j.params.get("output_len"),
            "points": j.result.get("points", []),
        }
        for j in (found[i] for i in ids)  # none missing: checked above
    ]


def parse_ids(raw: str) -> list[int]:
    try:
        ids = list(dict.fromkeys(int(p) for p in raw.split(",") if p.strip()))
    except ValueError:
        raise ServiceError("ids: job numbers separated by commas, e.g. 4,7.", "ids") from None
    if not 1 <= len(ids) <= MAX_COMPARE:
        raise ServiceError(f"Compare 1 to {MAX_COMPARE} runs.", "ids")
    return ids
