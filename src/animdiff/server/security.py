"""Who may call the server, and how much they may send.

Both are ASGI middlewares rather than route dependencies, so they guard every route (the docs,
SSE, WebSocket and whatever is added later) and refuse an oversized body before it is read.

Credentials: an API key in `X-API-Key` or `Authorization: Bearer`, or A1111's `--api-auth`
user/password as HTTP basic. Browsers cannot set headers on EventSource or WebSocket, so those
may pass the key as `?api_key=`. Secrets are compared through their SHA-256 digests with
`hmac.compare_digest`, so neither content nor length leaks through timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/api/v1/health",)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class Credentials:
    """The accepted keys and user/password pairs, kept only as digests."""

    def __init__(self, api_keys: tuple[str, ...], api_auth: tuple[tuple[str, str], ...]) -> None:
        self._keys = [_digest(key) for key in api_keys]
        self._basic = [_digest(f"{user}:{password}") for user, password in api_auth]

    @property
    def enabled(self) -> bool:
        return bool(self._keys or self._basic)

    @property
    def uses_basic(self) -> bool:
        return bool(self._basic)

    def key_ok(self, key: str) -> bool:
        given = _digest(key)
        # every comparison runs, so the time does not tell which key matched
        return any([hmac.compare_digest(given, known) for known in self._keys])

    def basic_ok(self, token: str) -> bool:
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = _digest(decoded)
        return any([hmac.compare_digest(given, known) for known in self._basic])

    def allows(self, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
        key = headers.get("x-api-key")
        if key is not None and self.key_ok(key):
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.key_ok(token.strip()):
            return True
        if scheme == "basic" and self.basic_ok(token.strip()):
            return True
        return any(self.key_ok(value) for value in query.get("api_key", [])[:1])


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _send_json(send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class AuthMiddleware:
    """Refuses every request without valid credentials when any are configured."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.credentials.enabled:
            await self.app(scope, receive, send)
            return
        if scope.get("path") in OPEN_PATHS or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)  # CORS preflight carries no credentials
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if self.credentials.allows(_headers(scope), query):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "not authenticated"})
            return
        challenge = b'Basic realm="animdiff"' if self.credentials.uses_basic else b"Bearer"
        await _send_json(
            send,
            401,
            {"detail": "not authenticated: give the API key (X-API-Key or Bearer) or the --api-auth user"},
            [(b"www-authenticate", challenge)],
        )


class BodyTooLargeError(HTTPException):
    """Raised from `receive`: an HTTPException, so FastAPI's body parsing passes it on as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit))


class BodyLimitMiddleware:
    """413 for bodies over the limit: by Content-Length at once, else while the body streams in.

    Uploads (paths under `upload_prefix`) have their own, larger limit.
    """

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int, upload_prefix: str) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit
        self.upload_prefix = upload_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope.get("path", "").startswith(self.upload_prefix) else self.limit
        length = _headers(scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_json(send, 413, {"detail": _too_large(limit)}, [(b"connection", b"close")])
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await _send_json(send, 413, {"detail": _too_large(limit)}, [(b"connection", b"close")])


def _too_large(limit: int) -> str:
    return f"request body too large: this server accepts at most {limit} bytes here"
