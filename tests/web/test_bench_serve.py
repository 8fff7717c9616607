"""`rlhf bench serve` on a small load: a real uvicorn server, concurrent labellers, and the exact count."""

from __future__ import annotations

import json

import pytest

from tests.dbs import POSTGRES_URL


def test_bench_serve_small(tmp_path):
    from rlhf.web.bench import bench_serve

    out = tmp_path / "serve.json"
    figures = bench_serve(out, n_labellers=4, n_labels=60, retry_share=0.2)
    assert figures["ok"], figures
    assert figures["labels_stored"] == figures["distinct_tasks_labelled"] == 60
    assert figures["retries_sent"] > 0 and figures["errors"] == []  # retries were stored once
    assert figures["label_ms_p50"] <= figures["label_ms_p99"]
    assert json.loads(out.read_text())["labels_stored"] == 60


@pytest.mark.skipif(not POSTGRES_URL, reason="RLHF_TEST_POSTGRES_URL is not set (scripts/test_postgres.sh)")
def test_two_worker_processes_on_postgres_never_double_assign():
    """`--workers 2`: two uvicorn processes on one PostgreSQL database, 8 labellers, one label per task."""
    from rlhf.web.bench import bench_serve

    figures = bench_serve(None, n_labellers=8, n_labels=120, db_url=POSTGRES_URL, workers=2)
    assert figures["ok"], figures
    assert figures["labels_stored"] == figures["distinct_tasks_labelled"] == 120
