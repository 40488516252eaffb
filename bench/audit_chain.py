"""Audit chain figures on real PostgreSQL: record() latency alone and under concurrent writers,
and verification speed. Uses a throwaway database (test_<name>), never your data.

    .venv/bin/python bench/audit_chain.py [--quick]

Ends with one JSON line: record_p50_ms, record_p99_ms, concurrent_records_per_s, verify_events_per_s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402


def main(quick: bool) -> dict:
    import django

    django.setup()
    from django.db import connection, connections
    from django.test.utils import setup_test_environment

    import audit
    from audit.chain import verify

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        n_single, n_threads, n_each = (300, 4, 50) if quick else (3000, 8, 250)
        latencies = []
        for i in range(n_single):
            t = time.perf_counter()
            audit.record("bench", "bench.single", None, n=i)
            latencies.append((time.perf_counter() - t) * 1000)
        latencies.sort()

        def writer(k: int) -> None:
            for i in range(n_each):
                audit.record(f"bench-{k}", "bench.concurrent", None, n=i)
            connections.close_all()

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_threads)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        concurrent_rate = n_threads * n_each / (time.perf_counter() - t)

        t = time.perf_counter()
        result = verify()
        verify_rate = result.checked / (time.perf_counter() - t)
        assert result.ok and result.checked == n_single + n_threads * n_each, result
        return {
            "events": result.checked,
            "record_p50_ms": round(statistics.median(latencies), 3),
            "record_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
            "concurrent_writers": n_threads,
            "concurrent_records_per_s": round(concurrent_rate, 1),
            "verify_events_per_s": round(verify_rate, 1),
        }
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 60 s")
    args = parser.parse_args()
    servers.run(lambda: main(args.quick))
