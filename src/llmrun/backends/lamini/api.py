"""Blocking calls to the Lamini API through a :class:`~llmrun.backends.lamini.transport.Transport`,
and the small readers of its replies that tuning, uploads and evaluation share."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from llmrun.backends.lamini.transport import Transport
from llmrun.backends.sync import run_sync
from llmrun.errors import BackendError

__all__ = ["LaminiApi", "field", "job_list", "reply_shape"]


class LaminiApi:
    """Blocking calls to the Lamini API through a :class:`Transport`, inside or outside an event loop."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @property
    def url(self) -> str:
        return self.transport.credentials.url

    def redact(self, text: str) -> str:
        """``text`` without the API key."""
        return self.transport.credentials.key.redact(text)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotent: bool = True,
        recover: tuple[str, Callable[[Any], Any]] | None = None,
    ) -> Any:
        """Send one request (with the transport's timeout and retries) and return the decoded reply.

        ``idempotent=False``: see :meth:`Transport.call`; ``recover = (path, find)`` looks for
        the lost result with ``find(GET path)`` (None: not there, so the call is retried).
        """
        return run_sync(lambda: self._call(method, path, body, idempotent, recover))

    async def _call(
        self,
        method: str,
        path: str,
        body: Any,
        idempotent: bool,
        recover: tuple[str, Callable[[Any], Any]] | None,
    ) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            find: Callable[[], Awaitable[Any]] | None = None
            if recover is not None:
                look_path, pick = recover

                async def find() -> Any:
                    return pick(await self.transport.call(session, "GET", look_path))

            return await self.transport.call(session, method, path, body, idempotent=idempotent, recover=find)


def job_list(reply: Any) -> list[dict[str, Any]]:
    """The job objects (those with a ``job_id``) of a ``GET /v1/train/jobs`` reply."""
    jobs = reply.get("jobs", reply.get("data")) if isinstance(reply, dict) else reply
    if not isinstance(jobs, list):
        return []
    return [j for j in jobs if isinstance(j, dict) and "job_id" in j]


def field(reply: Any, key: str, what: str, kinds: tuple[type, ...] = (str,)) -> str:
    """``reply[key]`` as text; a missing or odd value is a BackendError naming the request."""
    value = reply.get(key) if isinstance(reply, dict) else None
    if not isinstance(value, kinds) or isinstance(value, bool) or value == "":
        got = f"an object with keys {sorted(reply)[:8]}" if isinstance(reply, dict) else type(reply).__name__
        raise BackendError(f'Lamini answered {what} without a usable "{key}" (got {got})', status_code=200)
    return str(value)


def reply_shape(api: LaminiApi, value: Any) -> str:
    return f"{type(value).__name__} {api.redact(json.dumps(value, default=str)[:120])}"
