"""Browser sessions (cookie -> server-side row), CSRF tokens and the failed-sign-in limit.

The cookie holds 256 random bits; the table holds their SHA-256, the labeller and the session's CSRF
token. Rows live in the database so that every worker process (`--workers N`) sees the same sessions
and the same count of failed sign-ins.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import delete, func, select

from rlhf.feedback.models import Labeller, SignInFailure, utcnow
from rlhf.feedback.models import Session as WebSession
from rlhf.feedback.store import FeedbackStore, LabellerView, hash_token

SESSION_COOKIE = "rlhf_session"
LOGIN_CSRF_COOKIE = "rlhf_login_csrf"


def sign_in(store: FeedbackStore, token: str, hours: float) -> tuple[LabellerView, str, str] | None:
    """A new session for the active labeller holding `token`: (labeller, cookie value, CSRF token), or
    None when no active labeller holds it.

    The token check and the new session are one transaction, with the labeller's row locked
    (PostgreSQL: FOR UPDATE; SQLite's write lock covers it): a token rotation or a deactivation racing
    the sign-in either comes first, and the sign-in fails, or comes after, and deletes the new session
    with the others. Checked and then created apart, a sign-in could outlive the token it used."""
    if not token or len(token) > 200:
        return None
    session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    with store.transaction() as s:
        query = select(Labeller).where(Labeller.token_sha256 == hash_token(token), Labeller.active)
        labeller = s.scalars(query.with_for_update() if store.postgres else query).first()
        if labeller is None:
            return None
        s.execute(delete(WebSession).where(WebSession.expires_at < now))  # keep the table small
        s.add(
            WebSession(
                id_sha256=hash_token(session_id),
                labeller_id=labeller.id,
                csrf_token=csrf,
                created_at=now,
                expires_at=now + timedelta(hours=hours),
            )
        )
        view = LabellerView(labeller.id, labeller.name, labeller.role, labeller.onboarded, labeller.flagged)
    return view, session_id, csrf


def session_labeller(store: FeedbackStore, session_id: str | None) -> tuple[LabellerView, str] | None:
    """(labeller, CSRF token) of a live session, or None."""
    if not session_id or len(session_id) > 100:
        return None
    with store.read() as s:
        row = s.execute(
            select(WebSession, Labeller)
            .join(Labeller, Labeller.id == WebSession.labeller_id)
            .where(
                WebSession.id_sha256 == hash_token(session_id),
                WebSession.expires_at > utcnow(),
                Labeller.active,
            )
        ).first()
        if row is None:
            return None
        session, labeller = row
        return (
            LabellerView(labeller.id, labeller.name, labeller.role, labeller.onboarded, labeller.flagged),
            session.csrf_token,
        )


def end_session(store: FeedbackStore, session_id: str | None) -> None:
    if session_id:
        with store.transaction() as s:
            s.execute(delete(WebSession).where(WebSession.id_sha256 == hash_token(session_id)))


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def begin_sign_in(store: FeedbackStore, client: str, max_failures: int, window_seconds: float) -> int | None:
    """Count a sign-in attempt from `client` before checking its token; returns the attempt's id, or None
    when the client already has `max_failures` failures (or attempts under way) within the window.

    One transaction, serialised per client (SQLite: its write lock; PostgreSQL: an advisory lock on the
    client's address), adds the attempt and counts: the k-th concurrent attempt counts exactly k rows, so
    exactly `max_failures` attempts are let through and the rest refused. (Committed apart and counted
    after, concurrent attempts could all see each other and all be refused.) A blocked attempt leaves no
    row, so the block ends one window after the last real failure; `end_sign_in` keeps a failure's row
    and drops a success's.
    """
    client = client[:100]
    since = utcnow() - timedelta(seconds=window_seconds)
    with store.transaction() as s:
        if store.postgres:
            key = int.from_bytes(
                hashlib.sha256(b"sign-in " + client.encode()).digest()[:8], "big", signed=True
            )
            s.execute(select(func.pg_advisory_xact_lock(key)))
        s.execute(delete(SignInFailure).where(SignInFailure.at < since))
        count = s.scalar(
            select(func.count()).select_from(SignInFailure).where(SignInFailure.client == client)
        )
        if count >= max_failures:
            return None
        attempt = SignInFailure(client=client)
        s.add(attempt)
        s.flush()
        return attempt.id


def end_sign_in(store: FeedbackStore, attempt_id: int, succeeded: bool) -> None:
    """A failed attempt stays counted for the window; a successful one is forgotten."""
    if succeeded:
        with store.transaction() as s:
            s.execute(delete(SignInFailure).where(SignInFailure.id == attempt_id))
