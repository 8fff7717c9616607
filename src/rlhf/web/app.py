"""The app factory: settings, routers, error handlers, a request-size limit and static files."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlhf.errors import UserError
from rlhf.feedback.store import Conflict, Forbidden, InvalidInput, NotFound

HERE = Path(__file__).parent


@dataclass
class WebSettings:
    db_url: str = "sqlite:///rlhf-feedback.db"
    project: str = "default"
    secure_cookies: bool | None = None  # None: Secure exactly when the request came over HTTPS
    session_hours: float = 12.0
    sign_in_max_failures: int = 5  # failed sign-ins per client address within the window, then 429
    sign_in_window_seconds: float = 300.0
    max_body_bytes: int = 1_000_000
    gold_accuracy_threshold: float = 0.7
    onboarding_questions: int = 5
    assignment_seconds: float = 1800.0
    run_migrations: bool = True
    guidelines_file: str = ""  # Markdown/plain text shown above the built-in guidelines

    @classmethod
    def from_env(cls, prefix: str = "RLHF_LABEL_") -> WebSettings:
        """Settings from RLHF_LABEL_DB_URL, RLHF_LABEL_PROJECT, ... (how `--workers N` passes them on)."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(prefix + f.name.upper())
            if raw is None:
                continue
            kind = str(f.type)
            if "bool" in kind:
                values[f.name] = None if raw == "" else raw.lower() in ("1", "true", "yes")
            elif "int" in kind:
                values[f.name] = int(raw)
            elif "float" in kind:
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        return cls(**values)

    def to_env(self, prefix: str = "RLHF_LABEL_") -> dict[str, str]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[prefix + f.name.upper()] = "" if value is None else str(value)
        return out


# Store refusals become these statuses; the message is the store's own, meant for the user.
STATUS = {Forbidden: 403, NotFound: 404, Conflict: 409, InvalidInput: 422}


def create_app(settings: WebSettings | None = None) -> FastAPI:
    from rlhf.web.deps import SignInRequired
    from rlhf.web.routes import admin, api_admin, api_labels, api_tasks, auth, pages

    settings = settings or WebSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
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
    app.state.store = None  # opened on first use (deps.get_store), so tests can swap it before that

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError):
        status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
        message = " ".join(str(exc).split())
        if request.url.path.startswith("/api"):
            return JSONResponse({"detail": message}, status_code=status)
        return pages.error_page(request, message, status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # One readable line per problem ("body.ranking: ..."), not pydantic's nested structure only.
        problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        if request.url.path.startswith("/api"):
            return JSONResponse({"detail": "; ".join(problems), "errors": exc.errors()}, status_code=422)
        return pages.error_page(request, "; ".join(problems), 422)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired):
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if request.url.path.startswith("/api"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return pages.error_page(request, str(exc.detail), exc.status_code)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return PlainTextResponse(f"request body over {settings.max_body_bytes:,} bytes", status_code=413)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    for module in (api_tasks, api_labels, api_admin, auth, pages, admin):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory for `rlhf label serve --workers N`: each worker builds its app from env."""
    return create_app(WebSettings.from_env())
