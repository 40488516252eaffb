"""Shared by the benches: run ``main`` against DATABASE_URL/REDIS_URL, or the embedded servers
`make run` uses (Redis on its own database number, off the run command's), then print its JSON line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable


def run(main: Callable[[], dict], *, redis_db: int | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    os.environ.setdefault("FLEET_MODE", "local")
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        figures = main()
    else:
        from console import embedded
        from console.config import data_dir

        with embedded.services(data_dir(), log=lambda *_: None) as extra:
            if redis_db is not None:
                extra["REDIS_URL"] = extra["REDIS_URL"].rsplit("/", 1)[0] + f"/{redis_db}"
            os.environ.update(extra)
            figures = main()
    print(json.dumps(figures))
