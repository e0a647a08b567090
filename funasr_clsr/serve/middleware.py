"""Plain ASGI middleware for the API key and the body size limit.

Both act before the application reads a byte of the body: a route dependency would run only
after FastAPI has parsed (and spooled to disk) a whole multipart upload.
"""
from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable, Iterable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def send_error(send: Send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """A one-line JSON error ``{"error": message}``."""
    body = json.dumps({"error": " ".join(message.split())}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class APIKeyMiddleware:
    """Every request but those for ``public`` paths needs ``Authorization: Bearer <key>``.

    The key is compared in constant time and never logged or echoed.
    """

    def __init__(self, app: Callable, key: str, public: Callable[[str], bool]):
        self.app = app
        self._key = key.encode()
        self._public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._public(scope["path"]):
            await self.app(scope, receive, send)
            return
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, given = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._key):
            await send_error(send, 401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                             [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a body over the limit: refused from Content-Length, else counted while it streams.

    ``limit_for(content_type)`` gives the limit in bytes (uploads get more than JSON bodies).
    Once the count passes the limit, reading stops, whatever the application answers is
    dropped and the 413 goes out instead.
    """

    def __init__(self, app: Callable, limit_for: Callable[[str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.limit_for(headers.get(b"content-type", b"").decode("latin-1"))
        message = f"request body over the {_size(limit)} limit of this server"
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_error(send, 413, message)
            return
        state = {"seen": 0, "over": False, "started": False}

        async def counted() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                state["seen"] += len(msg.get("body", b""))
                if state["seen"] > limit:
                    state["over"] = True
                    raise _TooLarge
            return msg

        async def guarded(msg: Message) -> None:
            if state["over"]:
                return  # the application's reaction to the cut-off body; the 413 replaces it
            state["started"] = True
            await send(msg)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await send_error(send, 413, message)


def _size(n: int) -> str:
    return f"{n / 2 ** 20:g} MiB" if n >= 2 ** 20 else f"{n / 1024:g} KiB" if n >= 1024 else f"{n} B"
