"""The audit trail at scale, on real PostgreSQL (a throwaway database, bench_audit).

    .venv/bin/python bench/audit.py [--quick]

- append_per_s: events/s through audit.record() from 8 writer processes at once (web workers and
  Celery workers are processes); the chain is then checked to be linear and intact.
- verify_per_s: a full verification walk over all events (the 1M of the export run; 100k quick).
- export_1m_s, export_peak_mb: the CSV export of 1,000,000 events (100,000 with --quick) in a
  child process, wall time and its peak resident memory.
- trail_p50_ms: the auditor's trail page (first page, and filtered by action) with 10,000,000
  events in the table (1,000,000 with --quick); the bulk rows are made in SQL, unchained, as only
  the page's speed is measured on them.
Ends with one JSON line of these figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import servers  # noqa: E402

WRITERS = 8


def _writer(db_name: str, k: int, n: int, start, done) -> None:
    import django

    django.setup()
    from django.db import connection

    import audit

    connection.settings_dict["NAME"] = db_name
    start.wait()
    for i in range(n):
        audit.record(f"bench-{k}", "bench.append", None, n=i)
    done.put(k)


def append_rate(db_name: str, per_writer: int) -> float:
    ctx = mp.get_context("fork")
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(db_name, k, per_writer, start, done)) for k in range(WRITERS)]
    for p in procs:
        p.start()
    time.sleep(2)  # every writer has set Django up and waits
    t = time.perf_counter()
    start.set()
    for _ in procs:
        done.get(timeout=600)
    rate = WRITERS * per_writer / (time.perf_counter() - t)
    for p in procs:
        p.join()
    return rate


def fill(total: int, batch: int = 5000) -> None:
    """Valid chained events in batches (record_many), for verification and export."""
    from audit.chain import record_many

    for start in range(0, total, batch):
        record_many(
            [
                {
                    "actor": (7, "nurse-7", "dept_user", "Radiology"),
                    "action": "gateway.request",
                    "target": ("access.apikey", 3, "key 1a2b3c…"),
                    "channel": "gateway",
                    "request_id": f"r{start + i}",
                    "context": {
                        "model": "demo",
                        "status": 200,
                        "prompt_tokens": 12,
                        "completion_tokens": 30,
                        "latency_ms": 41.5,
                        "input_sha256": "ab" * 32,
                    },
                }
                for i in range(min(batch, total - start))
            ]
        )


def _export(db_name: str, out) -> None:
    import django

    django.setup()
    from django.db import connection

    from audit import exports

    connection.settings_dict["NAME"] = db_name
    connection.ensure_connection()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    size = 0
    with open(os.devnull, "wb") as sink:
        for chunk in exports.csv_lines(exports.Period(None, None)):
            sink.write(chunk)
            size += len(chunk)
    out.put((time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, size, baseline))


def export_run(db_name: str) -> tuple[float, float, int, float]:
    ctx = mp.get_context("spawn")  # a fresh interpreter: its peak memory is the export's own
    out = ctx.Queue()
    proc = ctx.Process(target=_export, args=(db_name, out))
    proc.start()
    result = out.get(timeout=900)
    proc.join()
    return result


def bulk_rows(total: int) -> None:
    """Unchained rows made by the database itself, to give the trail page a table of this size."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(seq), 0) FROM audit_auditevent")
        base = cursor.fetchone()[0]
        step = 1_000_000
        for lo in range(0, total, step):
            cursor.execute(
                """
                INSERT INTO audit_auditevent (seq, created_at, actor_id, actor_name, actor_role, actor_department,
                    action, target_type, target_id, target_repr, context, source_ip, request_id, channel,
                    prev_hash, hash)
                SELECT %s + g, now() - (%s - g) * interval '10 ms', g %% 500, 'user-' || (g %% 500), 'dept_user',
                       'dept-' || (g %% 20), (ARRAY['gateway.request','auth.login','deployment.scale',
                       'apikey.create','access.request'])[1 + g %% 5], 'access.apikey', (g %% 1000)::text,
                       'key', '{}'::jsonb, '10.0.0.1', 'bulk' || g, 'gateway', md5(g::text) || md5((g+1)::text),
                       md5((g+2)::text) || md5((g+3)::text)
                FROM generate_series(%s, %s) AS g""",
                [base, total, lo + 1, min(lo + step, total)],
            )
        cursor.execute("ANALYZE audit_auditevent")


def trail_p50(n: int = 21) -> tuple[float, float]:
    from django.test import Client

    from access.people.choices import Role
    from access.people.models import User

    auditor, _ = User.objects.get_or_create(username="bench-auditor", defaults={"role": Role.AUDITOR})
    client = Client()
    client.force_login(auditor)

    def timed(url: str) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            assert client.get(url).status_code == 200
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times)

    return timed("/audit/"), timed("/audit/?action=deployment.scale&department=dept-2")


def main(quick: bool) -> dict:
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    from audit.chain import verify
    from audit.models import AuditEvent

    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = "bench_audit"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    db_name = connection.settings_dict["NAME"]
    try:
        connection.close()
        append = append_rate(db_name, 250 if quick else 1000)
        linear = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(
            range(1, AuditEvent.objects.count() + 1)
        )
        export_n = 100_000 if quick else 1_000_000
        fill(export_n - AuditEvent.objects.count())
        connection.close()
        t = time.perf_counter()
        result = verify()
        verify_rate = result.checked / (time.perf_counter() - t)
        assert result.ok and linear, (result, linear)
        export_s, export_mb, export_bytes, baseline_mb = export_run(db_name)
        bulk_rows((1_000_000 if quick else 10_000_000) - AuditEvent.objects.count())
        rows = AuditEvent.objects.count()
        first_page, filtered = trail_p50()
        return {
            "append_per_s": round(append, 1),
            "verify_per_s": round(verify_rate, 1),
            "export_1m_s": round(export_s * 1_000_000 / export_n, 2) if quick else round(export_s, 2),
            "export_peak_mb": round(export_mb, 1),
            "export_process_before_mb": round(baseline_mb, 1),
            "trail_p50_ms": round(max(first_page, filtered), 2),
            "writers": WRITERS,
            "chain_linear": linear,
            "verified_events": result.checked,
            "exported_events": export_n,
            "export_s": round(export_s, 2),
            "export_mb_written": round(export_bytes / 2**20, 1),
            "trail_rows": rows,
            "trail_first_page_p50_ms": round(first_page, 2),
            "trail_filtered_p50_ms": round(filtered, 2),
            "note": "quick: export_1m_s scaled from 100k events, trail over 1M rows" if quick else "",
        }
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a run under 60 s (smaller tables)")
    args = parser.parse_args()
    servers.run(lambda: main(args.quick))
