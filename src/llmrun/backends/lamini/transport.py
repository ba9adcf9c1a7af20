"""One Lamini API call: the ``lamini`` client's request function, plus what it lacks.

The client's ``make_async_web_request`` builds the headers (``Authorization:
Bearer``, ``Lamini-Version``), posts the JSON and raises its own errors by
status. Around it this module adds a per-request timeout and one mapping of every
failure into llmrun's errors, carrying the server's ``detail``; retries (backoff,
jitter, ``Retry-After``, no blind retry of calls that are not idempotent) are the
shared :class:`~llmrun.backends.http.Retrier`'s. The client is handed an
``aiohttp`` session wrapper that keeps the status, headers and body of the
response, because its own errors drop ``Retry-After`` (and, for 422, the detail).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp
from lamini.api.rest_requests import make_async_web_request
from lamini.error.error import LaminiError

from llmrun.backends.http import (
    AttemptFailedError,
    Retrier,
    RetryPolicy,
    response_detail,
    retry_after_seconds,
    status_failure,
)
from llmrun.backends.lamini.credentials import Credentials
from llmrun.errors import (
    BackendError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServiceUnavailableError,
)

__all__ = ["MODEL_NOT_FOUND_STATUS", "RetryPolicy", "Transport"]

logger = logging.getLogger("llmrun.backends.lamini")

#: Lamini's status for "no such model" (its client raises ModelNotFoundError for it).
MODEL_NOT_FOUND_STATUS = 594


class Transport:
    """Calls the Lamini API at ``credentials.url`` with timeout, retries and error mapping."""

    def __init__(
        self,
        credentials: Credentials,
        timeout: float,
        retry: RetryPolicy,
        rng: random.Random | None = None,
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.retry = retry
        self._retrier = Retrier(retry, "Lamini", rng)

    def __repr__(self) -> str:
        return f"Transport(url={self.credentials.url!r}, timeout={self.timeout})"

    async def call(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotent: bool = True,
        recover: Callable[[], Awaitable[Any]] | None = None,
    ) -> Any:
        """Send one request (retrying as the policy says) and return the decoded JSON reply.

        ``idempotent=False`` (starting a job, uploading data): after a failure the server
        may have acted on, ``recover()`` looks for the result (None: it did not act, so the
        call is retried); without ``recover`` such a failure is raised, not retried.
        """
        return await self._retrier.acall(
            lambda: self._once(session, method, path, body),
            f"{method} {path}",
            idempotent=idempotent,
            recover=recover,
        )

    async def _once(self, session: aiohttp.ClientSession, method: str, path: str, body: Any) -> Any:
        url = self.credentials.url + path
        seen = _SeenResponse(session)
        what = f"{method} {path}"
        try:
            async with asyncio.timeout(self.timeout):
                return await make_async_web_request(
                    seen, self.credentials.key.reveal(), url, method.lower(), body
                )
        except TimeoutError:
            raise AttemptFailedError(
                RequestTimeoutError(
                    f"Lamini did not answer {what} within {self.timeout:g}s; "
                    "raise the timeout option or try again later"
                ),
                retryable=False,
            ) from None
        except LaminiError:
            if seen.status is None or seen.status == 200:
                raise AttemptFailedError(
                    BackendError(f"the lamini client failed on {what}"), retryable=False
                ) from None
            raise self._status_failure(seen, what) from None
        except (json.JSONDecodeError, aiohttp.ContentTypeError, UnicodeDecodeError):
            snippet = self.credentials.key.redact(seen.body[:120].decode("utf-8", "replace"))
            raise AttemptFailedError(
                BackendError(
                    f"Lamini answered {what} with a body that is not valid JSON: {snippet!r}",
                    status_code=seen.status,
                ),
                retryable=False,
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            message = self.credentials.key.redact(f"{type(exc).__name__}: {exc}")
            raise AttemptFailedError(
                ServiceUnavailableError(f"the connection to Lamini at {url} failed on {what} ({message})"),
                retryable=True,
                applied=not isinstance(exc, aiohttp.ClientConnectorError),  # never connected: never sent
            ) from None

    def _status_failure(self, seen: _SeenResponse, what: str) -> AttemptFailedError:
        status = seen.status or 0
        detail = self.credentials.key.redact(response_detail(seen.body))
        retry_after = retry_after_seconds(seen.headers.get("Retry-After"))
        if status == 404:
            error = BackendError(
                f"Lamini has no {what} (HTTP 404): {detail}; check api_url ({self.credentials.url})",
                status,
                detail,
            )
            return AttemptFailedError(error, retryable=False)
        if status == MODEL_NOT_FOUND_STATUS:
            return AttemptFailedError(
                ModelNotFoundError(f"Lamini cannot find the model: {detail}"), retryable=False
            )
        return status_failure(
            "Lamini",
            status,
            detail,
            what,
            key_hint="Check api_key / LAMINI_API_KEY / ~/.lamini/configure.yaml",
            retry_after=retry_after,
        )


class _SeenResponse:
    """Stands in for the ``aiohttp`` session given to the lamini client and keeps what came back."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""

    def post(self, url: str, **kwargs: Any) -> _Keeping:
        return _Keeping(self, self._session.post(url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> _Keeping:
        return _Keeping(self, self._session.get(url, **kwargs))


class _Keeping:
    def __init__(self, seen: _SeenResponse, cm: Any) -> None:
        self._seen = seen
        self._cm = cm

    async def __aenter__(self) -> aiohttp.ClientResponse:
        resp: aiohttp.ClientResponse = await self._cm.__aenter__()
        try:
            self._seen.status = resp.status
            self._seen.headers = dict(resp.headers)
            self._seen.body = await resp.read()  # cached: the client's resp.json() reads it again
        except BaseException as exc:
            await self._cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return resp

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._cm.__aexit__(exc_type, exc, tb)
