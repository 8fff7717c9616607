"""Dependencies shared by the routers, as `Annotated` aliases: the store, the settings, the caller.

API routes authenticate with `Authorization: Bearer TOKEN` (401 when missing or wrong, 403 for a
labeller on an admin route); page routes with the session cookie (redirect to /login when absent).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from rlhf.feedback.store import FeedbackStore, LabellerView, StoreSettings
from rlhf.web.app import WebSettings
from rlhf.web.security import SESSION_COOKIE, same_token, session_labeller

_open_lock = threading.Lock()


async def get_settings(request: Request) -> WebSettings:
    return request.app.state.settings


async def get_store(request: Request) -> FeedbackStore:
    """The app's store, opened (and migrated) on first use, in a worker thread (it touches the database)."""
    store = request.app.state.store
    return store if store is not None else await run_in_threadpool(_open_store, request.app.state)


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


SettingsDep = Annotated[WebSettings, Depends(get_settings)]
StoreDep = Annotated[FeedbackStore, Depends(get_store)]


def api_labeller(request: Request, store: StoreDep) -> LabellerView:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    labeller = store.labeller_by_token(token.strip()) if scheme.lower() == "bearer" else None
    if labeller is None:
        raise HTTPException(
            401,
            "missing or invalid token: send 'Authorization: Bearer TOKEN'",
            {"WWW-Authenticate": "Bearer"},
        )
    return labeller


def api_admin(labeller: Annotated[LabellerView, Depends(api_labeller)]) -> LabellerView:
    if labeller.role != "admin":
        raise HTTPException(403, "this needs an admin token")
    return labeller


ApiLabeller = Annotated[LabellerView, Depends(api_labeller)]
ApiAdmin = Annotated[LabellerView, Depends(api_admin)]


class SignInRequired(Exception):
    """Raised by page dependencies without a session; the pages router turns it into a redirect."""


@dataclass(frozen=True)
class PageUser:
    labeller: LabellerView
    csrf_token: str


def page_user(request: Request, store: StoreDep) -> PageUser:
    found = session_labeller(store, request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise SignInRequired()
    return PageUser(*found)


def page_admin(user: Annotated[PageUser, Depends(page_user)]) -> PageUser:
    if user.labeller.role != "admin":
        raise HTTPException(403, "this page needs an admin account")
    return user


def checked_form_user(
    user: Annotated[PageUser, Depends(page_user)], csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> PageUser:
    """A signed-in user whose form carries the session's CSRF token (else 403: a forged request)."""
    if not same_token(user.csrf_token, csrf_token):
        raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page and try again")
    return user


PageUserDep = Annotated[PageUser, Depends(page_user)]
PageAdminDep = Annotated[PageUser, Depends(page_admin)]
FormUserDep = Annotated[PageUser, Depends(checked_form_user)]
