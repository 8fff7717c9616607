"""`rlhf bench serve` on a small load: a real uvicorn server, concurrent labellers, and the exact count;
and a real server killed with SIGKILL mid-load keeps every label it acknowledged."""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid

import pytest

from tests.dbs import POSTGRES_URL


def test_bench_serve_small(tmp_path):
    from rlhf.web.bench import bench_serve

    out = tmp_path / "serve.json"
    figures = bench_serve(out, n_labellers=4, n_labels=60, retry_share=0.2)
    assert figures["ok"], figures
    assert figures["labels_stored"] == figures["distinct_tasks_labelled"] == 60
    assert figures["retries_sent"] > 0 and figures["errors"] == []  # retries were stored once
    assert figures["label_ms_p50"] <= figures["label_ms_p95"] <= figures["label_ms_p99"]
    assert figures["next_task_ms_p50"] <= figures["next_task_ms_p95"] <= figures["next_task_ms_p99"]
    # the CPU time of both sides is measured, so a figure taken where they competed says so
    assert 0 < figures["loadgen_cpu_seconds"] <= figures["loadgen_process_cpu_seconds"]
    assert figures["server_cpu_seconds"] > 0 and figures["server_cpu_ms_per_label"] > 0
    assert figures["offered_labels_per_second"] is None and figures["schedule_lag_ms_p99"] is None
    assert json.loads(out.read_text())["labels_stored"] == 60


def test_bench_serve_paced_offers_the_rate_it_is_asked(tmp_path):
    """4 labellers sharing 40 labels/s: 60 labels take about 1.5 s, not as fast as the server can go."""
    from rlhf.web.bench import bench_serve

    figures = bench_serve(None, n_labellers=4, n_labels=60, rate=40.0)
    assert figures["ok"], figures
    assert figures["offered_labels_per_second"] == 40.0
    assert figures["labels_per_second"] <= 40.0 * 1.1, figures  # paced, never faster than offered
    assert figures["seconds"] >= 59 / 40.0 * 0.95
    assert figures["schedule_lag_ms_p99"] is not None


def test_kill_9_loses_no_acknowledged_label(tmp_path):
    """Four labellers label through a real server; the server gets SIGKILL mid-load. Every label it
    answered 201 for is in the database afterwards, with its task and request id (a commit precedes
    every reply; WAL with synchronous=NORMAL survives the death of the process)."""
    import httpx

    from rlhf.feedback.models import Label
    from rlhf.feedback.store import Candidate, FeedbackStore, StoreSettings
    from rlhf.web.bench import _free_port, start_server

    db_url, project = f"sqlite:///{tmp_path / 'labels.db'}", "crash"
    store = FeedbackStore(db_url, StoreSettings(project=project))
    store.push_candidates([Candidate(f"User: q{i}?\nAssistant:", [f"a{i}", f"b{i}"]) for i in range(2000)])
    tokens = [store.add_labeller(f"l{i}", onboarded=True)[1] for i in range(4)]
    port = _free_port()
    server = start_server(db_url, project, port)
    acknowledged: list[tuple[int, int, str]] = []  # (label id, task id, client request id)
    enough = threading.Event()

    def labeller(token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as client:
            try:
                while True:
                    task = client.get("/api/tasks/next").json()
                    body = {"task_id": task["id"], "client_request_id": uuid.uuid4().hex, "strength": "tie"}
                    r = client.post("/api/labels", json=body)
                    if r.status_code == 201:
                        acknowledged.append((r.json()["label"]["id"], task["id"], body["client_request_id"]))
                    if len(acknowledged) >= 150:
                        enough.set()
            except (httpx.HTTPError, ValueError, KeyError):
                return  # the server died under us

    threads = [threading.Thread(target=labeller, args=(t,)) for t in tokens]
    try:
        for t in threads:
            t.start()
        assert enough.wait(60), "the server did not acknowledge 150 labels within 60 s"
        os.kill(server.pid, signal.SIGKILL)  # mid-load: requests are in flight
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=30)
        for t in threads:
            t.join(timeout=30)

    assert len(acknowledged) >= 150
    reopened = FeedbackStore(db_url, StoreSettings(project=project))
    with reopened.read() as s:
        stored = {(x.id, x.task_id, x.client_request_id) for x in s.query(Label)}
    reopened.close()
    store.close()
    assert set(acknowledged) <= stored, f"lost: {sorted(set(acknowledged) - stored)[:5]}"


@pytest.mark.skipif(not POSTGRES_URL, reason="RLHF_TEST_POSTGRES_URL is not set (scripts/test_postgres.sh)")
def test_two_worker_processes_on_postgres_never_double_assign():
    """`--workers 2`: two uvicorn processes on one PostgreSQL database, 8 labellers, one label per task."""
    from rlhf.web.bench import bench_serve

    figures = bench_serve(None, n_labellers=8, n_labels=120, db_url=POSTGRES_URL, workers=2)
    assert figures["ok"], figures
    assert figures["labels_stored"] == figures["distinct_tasks_labelled"] == 120


def test_rlhf_bench_serve_from_the_command_line(capsys, tmp_path):
    from rlhf.cli import main

    out = tmp_path / "serve.json"
    code = main(["bench", "serve", "--labels", "20", "--labellers", "2", "--rate", "40", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "20 labels stored of 20 (ok)" in printed and "offered 40/s" in printed and "p50/p95/p99" in printed
    assert "load generator" in printed and json.loads(out.read_text())["ok"]
