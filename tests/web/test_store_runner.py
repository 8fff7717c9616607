"""The web app's database threads (`rlhf.web.deps.StoreRunner`): on SQLite every write runs on one
thread (no lock waits between threads), a long read never holds up labelling, and the routes' store
calls go through it."""

from __future__ import annotations

import asyncio
import threading

import pytest
from fastapi.testclient import TestClient

from rlhf.feedback.store import Candidate, FeedbackStore
from rlhf.web import WebSettings, create_app
from rlhf.web.deps import StoreRunner


def test_sqlite_writes_run_on_one_thread_and_postgres_gets_several(make_store):
    store = make_store()
    runner = StoreRunner(store)
    try:
        assert runner.threads == (4 if store.postgres else 1)
        assert StoreRunner(store, threads=3).threads == 3

        async def names():
            return await asyncio.gather(
                *(runner.run(lambda _s: threading.current_thread().name) for _ in range(20))
            )

        seen = set(asyncio.run(names()))
        assert len(seen) <= runner.threads  # PostgreSQL: any of its 4 writers; SQLite: its one
        if not store.postgres:
            assert len(seen) == 1
        assert all(name.startswith("rlhf-db_") for name in seen)
        assert threading.current_thread().name not in seen  # never on the event loop's thread
    finally:
        runner.close()


def test_a_long_read_does_not_hold_up_a_write(make_store):
    store = make_store()
    store.push_candidates([Candidate("User: q\nAssistant:", ["one", "two"])])
    labeller = store.add_labeller("ann", onboarded=True)[0]
    runner = StoreRunner(store)
    release = threading.Event()

    def slow_read(s: FeedbackStore):
        with s.read():
            release.wait(10)  # an export of a large project, say
        return "read"

    async def both():
        reading = asyncio.ensure_future(runner.read(slow_read))
        task = await asyncio.wait_for(runner.next_task(labeller.id), 5)  # not queued behind the read
        assert not reading.done()
        release.set()
        return task, await reading

    try:
        task, read = asyncio.run(both())
        assert task is not None and read == "read"
    finally:
        release.set()
        runner.close()


def test_only_the_stores_public_methods_are_offered(make_store):
    runner = StoreRunner(make_store())
    try:
        with pytest.raises(AttributeError):
            runner._submit  # noqa: B018
        with pytest.raises(AttributeError):
            runner.settings  # noqa: B018  (not a method)
        with pytest.raises(AttributeError):
            runner.no_such_method  # noqa: B018
    finally:
        runner.close()


def test_the_labelling_routes_run_their_store_calls_off_the_event_loop(make_store):
    store = make_store()
    store.push_candidates([Candidate("User: q\nAssistant:", ["one", "two"])])
    token = store.add_labeller("ann", onboarded=True)[1]
    threads = []
    original = store.next_task

    def recording_next_task(labeller_id):
        threads.append(threading.current_thread().name)
        return original(labeller_id)

    store.next_task = recording_next_task
    app = create_app(WebSettings(db_url="sqlite:///never-opened.db"))
    app.state.store = store
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/tasks/next", headers=headers).status_code == 200
        assert client.get("/api/tasks/next", headers=headers).status_code == 200  # the same task, held
    assert len(threads) == 2 and all(name.startswith("rlhf-db_") for name in threads)


def _app_with(store):
    app = create_app(WebSettings(db_url="sqlite:///never-opened.db"))
    app.state.store = store
    return app


def test_sign_in_checks_and_reads_are_not_held_up_by_a_long_write(make_store):
    """A token lookup (every API route but the two labelling ones), a session lookup (every page) and the
    reads themselves run on the reader threads: an admin's large push holding the writer thread (found
    stalling every labeller for 15 s) does not hold them up."""
    store = make_store()
    store.push_candidates([Candidate("User: q\nAssistant:", ["one", "two"])])
    token = store.add_labeller("ann", onboarded=True)[1]
    app = _app_with(store)
    release = threading.Event()
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {token}"}
        task = client.get("/api/tasks/next", headers=headers).json()  # makes the runner
        busy = app.state.db._writers.submit(release.wait, 30)  # a long write on the writer thread
        try:
            assert client.get("/api/me", headers=headers).json()["name"] == "ann"
            assert client.get(f"/api/tasks/{task['id']}", headers=headers).status_code == 200
            assert client.get("/api/labels", headers=headers).json() == []
            assert not busy.done()  # all answered while the writer was still busy
        finally:
            release.set()


def test_a_locked_or_unreachable_database_is_a_503_to_retry(make_store, monkeypatch):
    """SQLite's write lock held past its busy timeout (a large import in another process) was a 500."""
    from sqlalchemy.exc import OperationalError

    store = make_store()
    token = store.add_labeller("ann", onboarded=True)[1]

    def locked(*_args):
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    monkeypatch.setattr(store, "next_task", locked)
    with TestClient(_app_with(store)) as client:
        r = client.get("/api/tasks/next", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json() == {"detail": "the database is busy or unavailable; try again in a moment"}
