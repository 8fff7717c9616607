"""Dependencies shared by the routers, as `Annotated` aliases: the store, the settings, the caller.

API routes authenticate with `Authorization: Bearer TOKEN` (401 when missing or wrong, 403 for a
labeller on an admin route); page routes with the session cookie (redirect to /login when absent).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from rlhf.feedback.store import FeedbackStore, LabellerView, StoreSettings, Token
from rlhf.web.security import SESSION_COOKIE, same_token, session_labeller
from rlhf.web.settings import WebSettings

_open_lock = threading.Lock()


async def get_settings(request: Request) -> WebSettings:
    return request.app.state.settings


def _open_store(state) -> FeedbackStore:
    if state.store is None:
        with _open_lock:
            if state.store is None:
                settings: WebSettings = state.settings
                state.store = FeedbackStore(
                    settings.db_url,
                    StoreSettings(
                        project=settings.project,
                        assignment_seconds=settings.assignment_seconds,
                        onboarding_questions=settings.onboarding_questions,
                        gold_accuracy_threshold=settings.gold_accuracy_threshold,
                    ),
                    run_migrations=settings.run_migrations,
                )
    return state.store


T = TypeVar("T")


class StoreRunner:
    """The app's store, called from the event loop: each call runs on the app's database threads.

    `await db.next_task(labeller_id)` runs `store.next_task(labeller_id)` on the writer thread(s);
    `await db.run(fn, *args)` runs `fn(store, *args)` there (a function of the store holding one or
    several transactions); `await db.read(fn, *args)` runs a function that only reads (dashboards,
    exports, lists) on the reader threads, so a long read never holds up labelling.

    SQLite gets one writer thread: it has a single writer, so more threads would only queue on its write
    lock (whose busy handler sleeps in steps of up to 100 ms) and hand the GIL back and forth; with one,
    the labelling requests' transactions run back to back while the event loop parses and answers the
    next requests. Its readers see a snapshot (WAL) and never wait for the writer. PostgreSQL gets
    `threads` writers (4 by default: row locks let them work side by side; more only trade the GIL
    for round trips).
    """

    READERS = 4

    def __init__(self, store: FeedbackStore, threads: int = 0) -> None:
        self.store = store
        if threads <= 0:
            threads = 4 if store.postgres else 1
        self.threads = threads
        self._writers = ThreadPoolExecutor(threads, thread_name_prefix="rlhf-db")
        self._readers = ThreadPoolExecutor(self.READERS, thread_name_prefix="rlhf-db-read")

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await _on(self._writers, functools.partial(fn, self.store, *args))

    async def read(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await _on(self._readers, functools.partial(fn, self.store, *args))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.store, name)  # AttributeError for a name the store does not have
        if name.startswith("_") or not callable(method):
            raise AttributeError(f"StoreRunner offers the store's public methods, not {name!r}")

        async def call(*args: Any) -> Any:
            return await _on(self._writers, functools.partial(method, *args))

        return call

    def close(self) -> None:
        self._writers.shutdown(wait=True)
        self._readers.shutdown(wait=True)


async def _on(executor: ThreadPoolExecutor, job: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(executor, job)


async def get_db(request: Request) -> StoreRunner:
    """The runner of the app's store, both made on first use (the store opened and migrated in a worker
    thread: it touches the database). Tests put their own store in `app.state.store` before that."""
    state = request.app.state
    runner: StoreRunner | None = state.db
    if runner is None or runner.store is not state.store:
        store = state.store if state.store is not None else await run_in_threadpool(_open_store, state)
        if state.db is None or state.db.store is not store:  # another request may have made it meanwhile
            state.db = StoreRunner(store, state.settings.db_threads)
        runner = state.db
    return runner


SettingsDep = Annotated[WebSettings, Depends(get_settings)]
DbDep = Annotated[StoreRunner, Depends(get_db)]


def unauthenticated() -> HTTPException:
    return HTTPException(
        401, "missing or invalid token: send 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": "Bearer"}
    )


async def api_token(request: Request) -> Token:
    """The caller's bearer token, read off the header (401 when there is none). The labelling routes
    pass it to the store, which checks it in the same transaction as their work (`Token`); so with a
    wrong token and a malformed body, those two answer the body's 422 before the token's 401."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthenticated()
    return Token(token)


async def api_labeller(request: Request, token: Annotated[Token, Depends(api_token)]) -> LabellerView:
    """The caller (401 for a wrong, rotated or revoked token)."""
    # a read, on the reader threads: a long write (a large push of tasks) does not hold it up
    labeller = await (await get_db(request)).read(FeedbackStore.labeller_by_token, token)
    if labeller is None:
        raise unauthenticated()
    return labeller


async def api_admin(labeller: Annotated[LabellerView, Depends(api_labeller)]) -> LabellerView:
    if labeller.role != "admin":
        raise HTTPException(403, "this needs an admin token")
    return labeller


ApiToken = Annotated[Token, Depends(api_token)]
ApiLabeller = Annotated[LabellerView, Depends(api_labeller)]
ApiAdmin = Annotated[LabellerView, Depends(api_admin)]


class SignInRequired(Exception):
    """Raised by page dependencies without a session; the pages router turns it into a redirect."""


@dataclass(frozen=True)
class PageUser:
    labeller: LabellerView
    csrf_token: str


async def page_user(request: Request) -> PageUser:
    found = await (await get_db(request)).read(session_labeller, request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise SignInRequired()
    return PageUser(*found)


async def page_admin(user: Annotated[PageUser, Depends(page_user)]) -> PageUser:
    if user.labeller.role != "admin":
        raise HTTPException(403, "this page needs an admin account")
    return user


async def checked_form_user(
    user: Annotated[PageUser, Depends(page_user)], csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> PageUser:
    """A signed-in user whose form carries the session's CSRF token (else 403: a forged request)."""
    if not same_token(user.csrf_token, csrf_token):
        raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page and try again")
    return user


PageUserDep = Annotated[PageUser, Depends(page_user)]
PageAdminDep = Annotated[PageUser, Depends(page_admin)]
FormUserDep = Annotated[PageUser, Depends(checked_form_user)]
