"""`rlhf bench serve`: simulated labellers against a real server on loopback.

Steps: (1) a fresh store with N pairwise tasks and L onboarded labellers, (2) uvicorn in a subprocess,
(3) the load generator in a second subprocess: L labellers as asyncio tasks, each with its own
keep-alive connection, loop `GET /api/tasks/next` -> `POST /api/labels` until the queue is empty,
re-sending a share of the labels with the same client request id (a client retry, which must be stored
once), (4) throughput, latency percentiles and the CPU time of the server and of the load generator,
(5) the check: exactly N labels stored, one per task, none lost and none duplicated.

Two ways to load the server:
- as fast as it answers (`rate=None`): every labeller sends its next request the moment the last one
  is answered. This measures the most labels per second; the latency is then mostly queueing (with L
  requests always in flight, mean latency = L / requests per second, Little's law).
- paced (`rate=R` labels per second in all): labeller i starts its k-th task at (k * L + i) / R seconds,
  or at once if it is behind. This measures the latency a labeller sees while the server carries R
  labels/s; `schedule_lag_ms_p99` says whether the server kept up (near 0) or the load fell behind.

The load generator speaks just enough HTTP/1.1 over asyncio streams itself (no client library: a
request costs it ~0.1 ms of CPU), so on a small machine it leaves the cores to the server; its CPU time
is measured and reported (`loadgen_cpu_seconds`), as is the server's during the load.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rlhf.errors import UserError

STRENGTHS = ("much_better", "better", "slightly_better")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def _tree_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by a process and its descendants, from /proc (Linux);
    None elsewhere."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, todo = 0.0, [pid]
    try:
        while todo:
            current = todo.pop()
            # Fields after the command name (which may hold spaces): utime and stime are the 12th/13th.
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
    except (OSError, ValueError, IndexError):
        return None
    return total


def _children_cpu() -> float:
    """User + system CPU seconds of the children this process has waited for (0 where unsupported)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
            # 401 from an API route: the app is up and has opened its store (the first request does).
            if httpx.get(f"http://127.0.0.1:{port}/api/me", timeout=5).status_code == 401:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise UserError("the benchmark server did not answer within 60 s")


# ---------------------------------------------------------------------- the load generator (subprocess)


class _Connection:
    """One keep-alive HTTP/1.1 connection: enough of the protocol for the labelling API's replies."""

    def __init__(self, port: int, token: str):
        self.port = port
        self.head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else ""
        self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + body)
        reader = self.reader
        status = int((await reader.readuntil(b"\r\n")).split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        if chunked:
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append((await reader.readexactly(size + 2))[:-2])
            await reader.readuntil(b"\r\n")
            data = b"".join(parts)
        else:
            data = await reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None


async def _labeller(
    port: int, token: str, rng: random.Random, retry_share: float, out: dict, schedule: Any = None
) -> None:
    """One labeller's loop; `schedule` (an iterator of monotonic start times) paces it."""
    connection = _Connection(port, token)
    try:
        while True:
            if schedule is not None:
                due = next(schedule)
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                out["lag_ms"].append(max(0.0, -wait) * 1000)
            t0 = time.perf_counter()
            status, data = await connection.request("GET", "/api/tasks/next")
            t1 = time.perf_counter()
            if status == 204:
                return
            if status != 200:
                out["errors"].append(f"next: {status} {data[:200].decode(errors='replace')}")
                return
            task = json.loads(data)
            body = json.dumps(
                {
                    "task_id": task["id"],
                    "client_request_id": uuid.uuid4().hex,
                    "choice": rng.choice(task["responses"])["id"],
                    "strength": rng.choice(STRENGTHS),
                    "seconds": rng.uniform(5, 60),
                }
            ).encode()
            status, data = await connection.request("POST", "/api/labels", body)
            t2 = time.perf_counter()
            if status != 201:
                out["errors"].append(f"label: {status} {data[:200].decode(errors='replace')}")
                return
            out["next_ms"].append((t1 - t0) * 1000)
            out["label_ms"].append((t2 - t1) * 1000)
            if rng.random() < retry_share:
                status, data = await connection.request("POST", "/api/labels", body)
                out["retries"] += 1
                if status != 200 or json.loads(data)["created"]:
                    out["errors"].append(f"retry stored twice or failed: {status}")
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        out["errors"].append(f"connection: {type(exc).__name__}: {exc}")
    finally:
        await connection.close()


async def _load(port: int, tokens: list[str], retry_share: float, seed: int, rate: float | None) -> dict:
    out: dict[str, Any] = {"next_ms": [], "label_ms": [], "lag_ms": [], "retries": 0, "errors": []}
    cpu0, start = time.process_time(), time.perf_counter()
    n = len(tokens)

    def schedule(i: int):
        return None if rate is None else (start + (k * n + i) / rate for k in itertools.count())

    await asyncio.gather(
        *(
            _labeller(port, t, random.Random(seed + i), retry_share, out, schedule(i))
            for i, t in enumerate(tokens)
        )
    )
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = time.process_time() - cpu0
    return out


def _load_main() -> None:
    """`python -m rlhf.web.bench`: the load generator; its job as JSON on stdin, the figures on stdout."""
    job = json.load(sys.stdin)
    result = asyncio.run(_load(job["port"], job["tokens"], job["retry_share"], job["seed"], job["rate"]))
    json.dump(result, sys.stdout)


def run_load(
    port: int, tokens: list[str], retry_share: float = 0.02, seed: int = 0, rate: float | None = None
) -> dict:
    """The load generator in a process of its own (so it does not share a GIL with anything)."""
    job = json.dumps({"port": port, "tokens": tokens, "retry_share": retry_share, "seed": seed, "rate": rate})
    done = subprocess.run(
        [sys.executable, "-m", "rlhf.web.bench"], input=job, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise UserError(f"the load generator failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


# ---------------------------------------------------------------------- the benchmark


def bench_serve(
    out: str | Path | None,
    n_labellers: int = 50,
    n_labels: int = 5000,
    db_url: str | None = None,
    workers: int = 1,
    retry_share: float = 0.02,
    seed: int = 0,
    rate: float | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module's docstring); returns the figures, also written to `out`.
    `rate`: labels per second to offer in all (paced), or None for as fast as the server answers.
    Raises UserError when the server or the load generator fails to start."""
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

    # 2. the server; 3. the labellers, in a load-generator process
    port = _free_port()
    server = start_server(db_url, project, port, workers)
    try:
        server_before, children_before = _tree_cpu(server.pid), _children_cpu()
        load = run_load(port, tokens, retry_share, seed, rate)
        loadgen_process_cpu = _children_cpu() - children_before  # with its interpreter's start-up
        server_after = _tree_cpu(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    if server_before is not None and server_after is not None:
        server_cpu = server_after - server_before  # during the load
    else:  # no /proc: the server's whole life, start-up and shutdown included
        server_cpu = _children_cpu() - children_before - loadgen_process_cpu

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
    label_ms, next_ms, wall, errors = load["label_ms"], load["next_ms"], load["seconds"], load["errors"]
    both_ms = label_ms + next_ms
    figures = {
        "labellers": n_labellers,
        "labels_expected": n_labels,
        "labels_stored": stored,
        "distinct_tasks_labelled": distinct_tasks,
        "tasks_left_open": open_tasks,
        "retries_sent": load["retries"],
        "errors": errors[:20],
        "ok": stored == n_labels and distinct_tasks == n_labels and open_tasks == 0 and not errors,
        "seconds": round(wall, 3),
        "offered_labels_per_second": rate,
        "labels_per_second": round(len(label_ms) / wall, 1),
        "requests_per_second": round(
            (len(label_ms) + len(next_ms) + load["retries"] + n_labellers) / wall, 1
        ),
        "label_ms_p50": round(_percentile(label_ms, 0.5), 2),
        "label_ms_p95": round(_percentile(label_ms, 0.95), 2),
        "label_ms_p99": round(_percentile(label_ms, 0.99), 2),
        "label_ms_max": round(max(label_ms, default=float("nan")), 2),
        "next_task_ms_p50": round(_percentile(next_ms, 0.5), 2),
        "next_task_ms_p95": round(_percentile(next_ms, 0.95), 2),
        "next_task_ms_p99": round(_percentile(next_ms, 0.99), 2),
        "request_ms_p50": round(_percentile(both_ms, 0.5), 2),
        "request_ms_p95": round(_percentile(both_ms, 0.95), 2),
        "request_ms_p99": round(_percentile(both_ms, 0.99), 2),
        "schedule_lag_ms_p99": round(_percentile(load["lag_ms"], 0.99), 2) if rate else None,
        "loadgen_cpu_seconds": round(load["cpu_seconds"], 3),
        "loadgen_process_cpu_seconds": round(loadgen_process_cpu, 3),
        "server_cpu_seconds": round(server_cpu, 3),
        "server_cpu_ms_per_label": round(1000 * server_cpu / max(1, len(label_ms)), 3),
        "database": db_url.split(":", 1)[0],
        "workers": workers,
        "cpus": os.cpu_count(),
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    _load_main()
