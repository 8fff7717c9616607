"""Sign in with a token (rate-limited, CSRF-protected form) and sign out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from rlhf.web.deps import DbDep, FormUserDep, SettingsDep
from rlhf.web.routes.pages import render
from rlhf.web.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    begin_sign_in,
    end_session,
    end_sign_in,
    same_token,
    sign_in,
)

router = APIRouter(tags=["pages"], include_in_schema=False)


def secure(request: Request, settings) -> bool:
    return settings.secure_cookies if settings.secure_cookies is not None else request.url.scheme == "https"


def _login_page(request: Request, settings, message: str = "", status: int = 200):
    # Before a session exists the CSRF token is double-submitted: a cookie and the same value in the form.
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", {"csrf_token": token, "message": message}, status)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=secure(request, settings),
        max_age=3600,
    )
    return response


@router.get("/login")
async def login_form(request: Request, settings: SettingsDep):
    return _login_page(request, settings)


@router.post("/login")
async def login(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    token: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
):
    if not same_token(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
        return _login_page(request, settings, "The sign-in form expired; please try again.", 403)
    # The client address is the TCP peer's, or X-Forwarded-For's only from a proxy the server was told
    # to trust (`rlhf label serve --forwarded-allow-ips`); uvicorn applies that before the app runs.
    client = request.client.host if request.client else "unknown"
    attempt = await db.run(
        begin_sign_in, client, settings.sign_in_max_failures, settings.sign_in_window_seconds
    )
    if attempt is None:
        return _login_page(
            request, settings, "Too many failed sign-ins; wait a few minutes and try again.", 429
        )
    signed_in = await db.run(sign_in, token.strip(), settings.session_hours)
    await db.run(end_sign_in, attempt, signed_in is not None)
    if signed_in is None:
        return _login_page(request, settings, "That token is not valid.", 401)
    labeller, session_id, _ = signed_in
    response = RedirectResponse("/admin" if labeller.role == "admin" else "/label", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="lax",  # lax, not strict: a link to the app from elsewhere still finds you signed in
        secure=secure(request, settings),
        max_age=int(settings.session_hours * 3600),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, _user: FormUserDep, db: DbDep):
    await db.run(end_session, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
