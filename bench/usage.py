"""Usage pages and summaries over a big ledger: 100 million rows (5 million with --quick).

    .venv/bin/python bench/usage.py [--quick] [--rows N]

Fills a throwaway database (bench_usage) with N ledger rows over 90 days — 200 users in 10
departments, each calling 2 of 4 models — then times, in process through Django's full stack:

- summary_p50_ms / summary_p95_ms: GET /api/usage/summary/ as an admin (the whole fleet, the
  default last 30 days), and summary_dept_p50_ms as a department user (their own scope);
- rows_p50_ms: GET /api/usage/ (first page, with its count) as an admin;
- page_p50_ms: GET /usage/ (the page: summary, chart data, first page of rows) as an admin;
- bulk_fill_rows_per_s, index_build_s, rollup_build_s: rows loaded without indexes, key checks or
  trigger, then the indexes, then the rollups in one pass (as the migration backfills a ledger);
- ledger_insert_rows_per_s: then 100 batches of 500 rows with the trigger on, as the gateway's
  ledger writes them; rollup_rows and table sizes.
Each request is warmed up 3 times and measured 20 times. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import servers  # noqa: E402

USERS, DEPARTMENTS, BATCH = 200, 10, 1_000_000

FILL = f"""
INSERT INTO access_usagerecord (created_at, user_id, department_id, model, endpoint, stream, status, prompt_tokens,
    completion_tokens, latency_ms, ttft_ms, input_sha256, request_id, instance_id, key_id, deployment_id)
SELECT now() - random() * interval '90 days', (%(users)s::bigint[])[1 + g %% {USERS}],
       (%(depts)s::bigint[])[1 + g %% {USERS}],
       (ARRAY['chat-a', 'chat-b', 'chat-c', 'chat-d'])[1 + ((g %% {USERS}) + (g / {USERS}) %% 2) %% 4],
       'chat', g %% 3 = 0, CASE WHEN g %% 50 = 0 THEN 429 ELSE 200 END, 20 + g %% 400, 1 + g %% 200,
       50 + random() * 900, CASE WHEN g %% 3 = 0 THEN 20 + random() * 80 END, %(sha)s,
       lpad(to_hex(g), 16, '0'), NULL, NULL, NULL
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""


def timed(client, url: str, n: int = 20) -> list[float]:
    for _ in range(3):
        assert client.get(url).status_code == 200, url
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(url)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return out


def main(rows: int) -> dict:
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from access.people.choices import Role
    from access.people.models import Department, User

    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = "bench_usage"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        depts = [Department.objects.create(name=f"Dept {i}", slug=f"dept-{i}") for i in range(DEPARTMENTS)]
        users = [
            User.objects.create(username=f"user-{i}", role=Role.DEPT_USER, department=depts[i % DEPARTMENTS])
            for i in range(USERS)
        ]
        admin = User.objects.create(username="bench-admin", role=Role.ADMIN)
        params = {"users": [u.pk for u in users], "depts": [u.department_id for u in users], "sha": "0" * 64}
        rollups = importlib.import_module("access.migrations.0004_usage_rollups")
        started = time.perf_counter()
        with connection.cursor() as cursor:
            # A bulk load: rows without their indexes, key checks and trigger, then the indexes and
            # the rollups in one pass each (as the migration backfills an existing ledger).
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'access_usagerecord' "
                "AND indexname <> 'access_usagerecord_pkey'"
            )
            indexes = cursor.fetchall()
            for name, _definition in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
            cursor.execute("SET session_replication_role = replica")  # no FK checks, no trigger
            for first in range(0, rows, BATCH):
                cursor.execute(FILL, params | {"first": first, "last": min(rows, first + BATCH) - 1})
                if first and first % (10 * BATCH) == 0:
                    print(f"{first:,} rows", file=sys.stderr, flush=True)
            cursor.execute("SET session_replication_role = origin")
            filled_s = time.perf_counter() - started
            cursor.execute("SET maintenance_work_mem = '1GB'")
            for _name, definition in indexes:
                cursor.execute(definition)
            indexed_s = time.perf_counter() - started - filled_s
            started = time.perf_counter()
            for period in ("hour", "day"):
                cursor.execute(
                    f"INSERT INTO access_usagerollup ({rollups.COLUMNS}) "
                    + rollups.TOTALS.format(period=period, source="access_usagerecord")
                )
            rolled_s = time.perf_counter() - started
            # The gateway's path: batches of 500 rows, each statement updating the rollups.
            trigger_started, extra = time.perf_counter(), 100 * 500
            for first in range(rows, rows + extra, 500):
                cursor.execute(FILL, params | {"first": first, "last": first + 499})
            ledger_rows_per_s = extra / (time.perf_counter() - trigger_started)
            cursor.execute("ANALYZE access_usagerecord; ANALYZE access_usagerollup")
            cursor.execute("SELECT count(*) FROM access_usagerollup")
            rollup_rows = cursor.fetchone()[0]
            cursor.execute(
                "SELECT pg_total_relation_size('access_usagerecord'), pg_total_relation_size('access_usagerollup')"
            )
            raw_bytes, rollup_bytes = cursor.fetchone()

        as_admin, as_user = Client(), Client()
        as_admin.force_login(admin)
        as_user.force_login(users[0])
        summary = timed(as_admin, "/api/usage/summary/")
        summary_dept = timed(as_user, "/api/usage/summary/?scope=department")
        rows_page = timed(as_admin, "/api/usage/")
        page = timed(as_admin, "/usage/")
        count = as_admin.get("/api/usage/").json()["count"]
        return {
            "rows": rows,
            "rows_in_default_30_days": count,
            "summary_p50_ms": round(statistics.median(summary), 1),
            "summary_p95_ms": round(sorted(summary)[int(len(summary) * 0.95) - 1], 1),
            "summary_dept_p50_ms": round(statistics.median(summary_dept), 1),
            "rows_p50_ms": round(statistics.median(rows_page), 1),
            "page_p50_ms": round(statistics.median(page), 1),
            "bulk_fill_rows_per_s": round(rows / filled_s),
            "index_build_s": round(indexed_s, 1),
            "rollup_build_s": round(rolled_s, 1),
            "ledger_insert_rows_per_s": round(ledger_rows_per_s),
            "rollup_rows": rollup_rows,
            "ledger_table_mb": round(raw_bytes / 2**20),
            "rollup_table_mb": round(rollup_bytes / 2**20),
        }
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 million rows instead of 100 million")
    parser.add_argument("--rows", type=int, help="how many ledger rows to fill")
    args = parser.parse_args()
    n = args.rows or (5_000_000 if args.quick else 100_000_000)
    servers.run(lambda: main(n), redis_db=4)
