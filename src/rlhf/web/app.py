"""The app factory: settings, routers, error handlers, the request guard (body limit, headers), static files."""

from __future__ import annotations

import logging
import os
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlhf.errors import UserError
from rlhf.feedback.store import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from rlhf.web.guards import RequestGuard
from rlhf.web.settings import WebSettings

HERE = Path(__file__).parent
log = logging.getLogger(__name__)


# Store refusals become these statuses; the message is the store's own, meant for the user.
STATUS = {Unauthenticated: 401, Forbidden: 403, NotFound: 404, Conflict: 409, InvalidInput: 422}
MAX_PROBLEMS = 20  # validation problems listed in one reply


def public_error(err: dict) -> dict:
    """A pydantic error without the input it rejected: location (a key's name cut to 40 characters),
    message and type, plus the JSON parser's reason for a malformed body."""
    loc = [part if isinstance(part, int) else _cut(str(part), 40) for part in err.get("loc", ())]
    msg = str(err.get("msg", "invalid"))
    reason = (err.get("ctx") or {}).get("error")
    if err.get("type") == "json_invalid" and isinstance(reason, str):
        msg = f"{msg}: {reason[:200]}"
    return {"loc": loc, "msg": msg, "type": str(err.get("type", ""))}


def create_app(settings: WebSettings | None = None) -> FastAPI:
    from rlhf.web.deps import SignInRequired
    from rlhf.web.routes import admin, api_admin, api_labels, api_tasks, auth, pages

    settings = settings or WebSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        runner = getattr(app.state, "db", None)
        if runner is not None:
            runner.close()
        store = getattr(app.state, "store", None)
        if store is not None:
            store.close()

    app = FastAPI(
        title="rlhf labelling",
        version="1",
        description="Human feedback collection: tasks, labels and exports. API calls take `Authorization: Bearer TOKEN`.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = None  # opened on first use (deps.get_db), so tests can put theirs in before that
    app.state.db = None  # the store's runner (deps.get_db), made with the store
    app.state.exports = threading.Lock()  # one label export at a time (routes/api_admin.jsonl_download)

    def reply_error(request: Request, message: str, status: int, headers=None):
        """Every error reply: JSON `{"detail": ...}` under /api, the error page for the browser pages."""
        if request.url.path.startswith("/api"):
            return JSONResponse({"detail": message}, status_code=status, headers=headers)
        return pages.error_page(request, message, status)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError):
        status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return reply_error(request, " ".join(str(exc).split()), status, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # One readable line per problem ("body.ranking: ..."), never the submitted values: they can be
        # megabytes long, or hold what no reply can encode (NaN, bytes of a non-JSON body).
        errors = [public_error(err) for err in exc.errors()]
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:MAX_PROBLEMS]
        )
        content_type = request.headers.get("content-type", "")
        if any(e["loc"] == ["body"] for e in errors) and content_type and "json" not in content_type:
            message = (
                f"send the body as JSON (Content-Type: application/json, not {content_type[:100]}); {message}"
            )
        if len(errors) > MAX_PROBLEMS:
            message += f"; and {len(errors) - MAX_PROBLEMS} more"
        if request.url.path.startswith("/api"):
            return JSONResponse({"detail": message, "errors": errors[:MAX_PROBLEMS]}, status_code=422)
        return pages.error_page(request, message, 422)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired):
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return reply_error(request, str(exc.detail), exc.status_code, exc.headers)

    @app.exception_handler(OperationalError)
    async def _database_busy(request: Request, exc: OperationalError):
        # SQLite's write lock held past its busy timeout (a large `rlhf label import` in another
        # process), or the database server gone: the request did nothing; the client may retry.
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc.orig)
        return reply_error(
            request, "the database is busy or unavailable; try again in a moment", 503, {"Retry-After": "5"}
        )

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception):
        # Still logged with its traceback by the server; the client gets the documented shape.
        return reply_error(request, "internal server error", 500)

    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        error_reply=lambda scope, message, status: reply_error(Request(scope), message, status),
    )

    for module in (api_tasks, api_labels, api_admin, auth, pages, admin):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def app_from_env() -> FastAPI:
    """The uvicorn factory for `rlhf label serve --workers N`: each worker builds its app from env, and
    a worker of several watches the server process, stopping when it is gone (`serve.watch_parent`)."""
    from rlhf.web.serve import PARENT_ENV, watch_parent

    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit() and int(parent) != os.getpid() and not _watching:
        _watching.append(watch_parent(int(parent)))
    return create_app(WebSettings.from_env())


_watching: list = []  # the parent watch started in this process, at most one
