"""`rlhf bench serve`: simulated labellers against a real server on loopback.

Steps: (1) a fresh store with N pairwise tasks and L onboarded labellers, (2) uvicorn in a subprocess,
(3) L threads, each a labeller with its own keep-alive HTTP connection, loop `GET /api/tasks/next` ->
`POST /api/labels` until the queue is empty, re-sending a share of the labels with the same client
request id (a client retry, which must be stored once), (4) throughput and latency percentiles,
(5) the check: exactly N labels stored, one per task, none lost and none duplicated.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from rlhf.errors import UserError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def start_server(db_url: str, project: str, port: int, workers: int = 1) -> subprocess.Popen:
    """uvicorn on 127.0.0.1:port serving the app from environment settings; waits until it answers."""
    import httpx

    env = {
        **os.environ,
        "RLHF_LABEL_DB_URL": db_url,
        "RLHF_LABEL_PROJECT": project,
        "RLHF_LABEL_RUN_MIGRATIONS": "0",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "rlhf.web.app:app_from_env", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"the benchmark server exited with code {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise UserError("the benchmark server did not answer within 60 s")


def bench_serve(
    out: str | Path | None,
    n_labellers: int = 50,
    n_labels: int = 5000,
    db_url: str | None = None,
    workers: int = 1,
    retry_share: float = 0.02,
    seed: int = 0,
) -> dict[str, Any]:
    import httpx

    from rlhf.feedback.store import Candidate, FeedbackStore, StoreSettings

    # 1. the store; a project of its own, so a shared PostgreSQL database is not disturbed
    tmp = tempfile.TemporaryDirectory(prefix="rlhf-bench-serve-")
    db_url = db_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    project = f"bench-{uuid.uuid4().hex[:8]}"
    store = FeedbackStore(db_url, StoreSettings(project=project))
    store.push_candidates(
        [
            Candidate(f"User: bench question {i}?\nAssistant:", [f"answer {i} one", f"answer {i} two"])
            for i in range(n_labels)
        ]
    )
    tokens = [store.add_labeller(f"{project}-l{i}", onboarded=True)[1] for i in range(n_labellers)]

    # 2. the server
    port = _free_port()
    server = start_server(db_url, project, port, workers)
    base = f"http://127.0.0.1:{port}"
    next_ms: list[float] = []
    label_ms: list[float] = []
    retries = [0]
    errors: list[str] = []
    lock = threading.Lock()

    # 3. the labellers
    def labeller(token: str, rng: random.Random) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            while True:
                t0 = time.perf_counter()
                r = client.get("/api/tasks/next")
                t1 = time.perf_counter()
                if r.status_code == 204:
                    return
                if r.status_code != 200:
                    errors.append(f"next: {r.status_code} {r.text[:200]}")
                    return
                task = r.json()
                body = {
                    "task_id": task["id"],
                    "client_request_id": uuid.uuid4().hex,
                    "choice": rng.choice(task["responses"])["id"],
                    "strength": rng.choice(["much_better", "better", "slightly_better"]),
                    "seconds": rng.uniform(5, 60),
                }
                r = client.post("/api/labels", json=body)
                t2 = time.perf_counter()
                if r.status_code != 201:
                    errors.append(f"label: {r.status_code} {r.text[:200]}")
                    return
                if rng.random() < retry_share:
                    again = client.post("/api/labels", json=body)
                    if again.status_code != 200 or again.json()["created"]:
                        errors.append(f"retry stored twice or failed: {again.status_code}")
                    with lock:
                        retries[0] += 1
                with lock:
                    next_ms.append((t1 - t0) * 1000)
                    label_ms.append((t2 - t1) * 1000)

    threads = [
        threading.Thread(target=labeller, args=(token, random.Random(seed + i)))
        for i, token in enumerate(tokens)
    ]
    try:
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)

    # 5. the check, straight from the database
    from sqlalchemy import func, select

    from rlhf.feedback.models import Label, Task

    with store.transaction() as s:
        in_project = Task.project_id == store.project_id
        stored = s.scalar(
            select(func.count()).select_from(Label).join(Task, Task.id == Label.task_id).where(in_project)
        )
        distinct_tasks = s.scalar(
            select(func.count(func.distinct(Label.task_id)))
            .join(Task, Task.id == Label.task_id)
            .where(in_project)
        )
        open_tasks = s.scalar(select(func.count()).select_from(Task).where(in_project, Task.status != "done"))
    store.close()
    tmp.cleanup()
    figures = {
        "labellers": n_labellers,
        "labels_expected": n_labels,
        "labels_stored": stored,
        "distinct_tasks_labelled": distinct_tasks,
        "tasks_left_open": open_tasks,
        "retries_sent": retries[0],
        "errors": errors[:20],
        "ok": stored == n_labels and distinct_tasks == n_labels and open_tasks == 0 and not errors,
        "seconds": round(wall, 3),
        "labels_per_second": round(len(label_ms) / wall, 1),
        "requests_per_second": round((len(label_ms) + len(next_ms) + retries[0] + n_labellers) / wall, 1),
        "label_ms_p50": round(_percentile(label_ms, 0.5), 2),
        "label_ms_p99": round(_percentile(label_ms, 0.99), 2),
        "next_task_ms_p50": round(_percentile(next_ms, 0.5), 2),
        "next_task_ms_p99": round(_percentile(next_ms, 0.99), 2),
        "database": db_url.split(":", 1)[0],
        "workers": workers,
        "cpus": os.cpu_count(),
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(figures, indent=2) + "\n")
    return figures
