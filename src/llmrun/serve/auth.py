"""Bearer-key auth as ASGI middleware: every path but ``/health`` needs ``Authorization: Bearer <key>``.

The key is compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from llmrun.serve.errors import ServeError

#: Paths answered without a key (load balancers probe them).
OPEN_PATHS = frozenset({"/health"})


class BearerAuth:
    """Refuse requests without the right key with 401 (a body both the Lamini and OpenAI clients read)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self._key = api_key.encode() if api_key else None

    def __repr__(self) -> str:
        return f"BearerAuth(enabled={self._key is not None})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key):
            await self.app(scope, receive, send)
            return
        why = "no API key was sent" if not header else "the API key is wrong"
        error = ServeError(
            401, f"{why}: send the server's key as 'Authorization: Bearer <key>'", code="invalid_api_key"
        )
        status, body = error.for_wire("any")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})
