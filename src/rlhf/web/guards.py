"""What guards every request before a route sees it: a body bounded while it streams, strict JSON, and
the security headers of every reply.

`RequestGuard` is plain ASGI middleware (no buffering): it refuses a declared `Content-Length` over the
limit before the app runs, and counts the bytes of a body as they arrive (chunked transfer encoding
included), so a body over the limit stops being read at the limit, before authentication and parsing.
`StrictJSONRoute` parses JSON bodies as the JSON standard has them: no NaN/Infinity, no lone UTF-16
surrogates (text that cannot be stored or sent back), each refused as a 422 like any malformed JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Pages and the API: nothing cached (a shared computer's back button must not show a labeller's tasks),
# scripts and styles from this origin only (the templates have no inline script or style).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}
# FastAPI's interactive docs load Swagger UI / ReDoc from a CDN with inline script: no CSP there.
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")


class BodyTooLarge(HTTPException):
    """Raised by the counting `receive` once a body passes the limit; FastAPI re-raises HTTPExceptions
    from body reading, so the app's handler answers it like any other error (JSON under /api)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit:,} bytes")


ErrorReply = Callable[[Scope, str, int], Response]  # (scope, message, status) -> the reply


class RequestGuard:
    """Bounds request bodies and adds the security headers to every reply.

    `error_reply` formats the guard's own refusals (413, 400) the way the app formats its errors."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, error_reply: ErrorReply) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.error_reply = error_reply

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        path: str = scope["path"]
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                if not path.startswith("/static/"):
                    headers.setdefault("cache-control", "no-store")
                    if path not in DOCS_PATHS:
                        headers.setdefault("content-security-policy", CSP)
                if message["status"] == 413 or (has_body and not body_done):
                    # The server would otherwise read (and drop) the rest of the body to keep the
                    # connection: close it instead, so an unread upload costs nothing more.
                    headers["connection"] = "close"
            await send(message)

        declared = _content_length(scope)
        has_body = bool(declared) or any(name == b"transfer-encoding" for name, _ in scope["headers"])
        body_done = False
        if declared is not None:
            refusal = None
            if declared < 0:
                refusal = ("Content-Length is not a number", 400)
            elif declared > limit:
                refusal = (f"request body over {limit:,} bytes", 413)
            if refusal is not None:
                await self.error_reply(scope, *refusal)(scope, receive, send_with_headers)
                return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, counting_receive, send_with_headers)
        except BodyTooLarge as exc:  # raised outside a route's body reading (no handler saw it)
            if started:
                raise
            await self.error_reply(scope, exc.detail, 413)(scope, receive, send_with_headers)


def _content_length(scope: Scope) -> int | None:
    """The declared length, None without one, -1 when it is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


# ----------------------------------------------------------------------------- strict JSON

_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(body: bytes) -> Any:
    """JSON as the standard has it. Raises json.JSONDecodeError (a 422 in FastAPI) for NaN, Infinity
    and strings holding a lone UTF-16 surrogate ("\\ud800"), which no database or UTF-8 reply can hold,
    for bytes that are not UTF-8 (RFC 8259), and for what Python's parser cannot take: nesting deeper
    than its recursion limit, integers of more than 4,300 digits."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8", "", exc.start) from None

    def no_constant(name: str):
        raise json.JSONDecodeError(f"{name} is not a JSON number", text, text.find(name))

    try:
        value = json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise json.JSONDecodeError("the JSON is nested too deeply", "", 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer of more than 4,300 digits (Python's int conversion limit)
        raise json.JSONDecodeError("a number has too many digits", "", 0) from None
    # Escaped surrogates are rare (pairs encode emoji); only then walk the value for lone ones.
    if _MAYBE_SURROGATE.search(body) and _has_lone_surrogate(value):
        raise json.JSONDecodeError("a string holds a lone UTF-16 surrogate (not valid Unicode)", text, 0)
    return value


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An API route whose JSON body is read with `parse_json` (set as the API routers' `route_class`)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
