"""Server time of every page of every persona, on real PostgreSQL (a throwaway database,
bench_pages), at the sizes of the query-count tests (10 of each object; --rows to change it).

    .venv/bin/python bench/pages.py [--quick]

Each page is fetched in-process (Django's test client: the middleware, the views, the queries,
the templates; no network) twice to warm up, then timed (7 times, 3 with --quick).
- pages: how many (persona, page) pairs were timed
- slowest_page, slowest_p50_ms: the page with the highest median, and that median
- median_of_pages_ms: the median of the pages' medians
- pages_over_300ms: every page whose median is over the 300 ms budget (budget_ms)
Ends with one JSON line of these figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import servers  # noqa: E402

BUDGET_MS = 300


def main(rows: int, repeats: int) -> dict:
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from access.people.choices import Role
    from access.people.models import Department, User
    from tests import pages as site

    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = "bench_pages"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        radiology = Department.objects.create(name="Radiology", slug="radiology")
        personas = {
            "admin": User.objects.create(username="admin", role=Role.ADMIN),
            "dept_user": User.objects.create(username="dept_user", role=Role.DEPT_USER, department=radiology),
            "auditor": User.objects.create(username="auditor", role=Role.AUDITOR),
        }
        urls = site.urls(site.objects(personas, rows))
        timings: dict[str, float] = {}
        for persona, user in personas.items():
            client = Client()
            client.force_login(user)
            for url in urls:
                status = client.get(url).status_code
                assert status < 500, (persona, url, status)
                if status != 200:
                    continue  # not this persona's page
                client.get(url)  # warm: caches, the playground's keys, template loading
                took = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    response = client.get(url)
                    took.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (persona, url, response.status_code)
                timings[f"{persona} {url}"] = statistics.median(took)
        slowest = max(timings, key=timings.__getitem__)
        return {
            "rows_of_each": rows,
            "pages": len(timings),
            "budget_ms": BUDGET_MS,
            "slowest_page": slowest,
            "slowest_p50_ms": round(timings[slowest], 1),
            "median_of_pages_ms": round(statistics.median(timings.values()), 1),
            "pages_over_300ms": sorted(k for k, v in timings.items() if v > BUDGET_MS),
        }
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed fetches per page instead of 7")
    parser.add_argument("--rows", type=int, default=10, help="how many of each object")
    args = parser.parse_args()
    servers.run(lambda: main(args.rows, 3 if args.quick else 7), redis_db=5)
