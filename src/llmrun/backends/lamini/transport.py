"""One Lamini API call: the ``lamini`` client's request function, plus what it lacks.

The client's ``make_async_web_request`` builds the headers (``Authorization:
Bearer``, ``Lamini-Version``), posts the JSON and raises its own errors by
status. Around it this module adds a per-request timeout, retries with
exponential backoff and jitter (429, 5xx and connection errors; ``Retry-After``
honoured; never 400/401/403/404/422) and one mapping of every failure into
llmrun's errors, carrying the server's ``detail``. The client is handed an
``aiohttp`` session wrapper that keeps the status, headers and body of the
response, because its own errors drop ``Retry-After`` (and, for 422, the detail).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from lamini.api.rest_requests import make_async_web_request
from lamini.error.error import LaminiError

from llmrun.backends.lamini.credentials import Credentials
from llmrun.errors import (
    AuthenticationError,
    BackendError,
    BadRequestError,
    LLMRunError,
    ModelNotFoundError,
    RateLimitError,
    RequestTimeoutError,
    ServiceUnavailableError,
)

logger = logging.getLogger("llmrun.backends.lamini")

#: Lamini's status for "no such model" (its client raises ModelNotFoundError for it).
MODEL_NOT_FOUND_STATUS = 594


@dataclass(frozen=True)
class RetryPolicy:
    """How failed calls are retried. ``max_retries=0`` turns retrying off.

    The n-th retry waits a random time between half and all of
    ``min(backoff_max, backoff_base * 2**n)`` seconds, or ``Retry-After`` if the
    server asks for longer; a ``Retry-After`` above ``max_retry_wait`` ends the
    retries at once.
    """

    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_retry_wait: float = 60.0

    def wait(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        cap = min(self.backoff_max, self.backoff_base * 2**retry)
        jittered = cap / 2 + rng.uniform(0, cap / 2)
        return float(max(jittered, retry_after or 0.0))


class _AttemptFailedError(Exception):
    """An attempt's outcome when it did not succeed: the llmrun error, and whether to retry."""

    def __init__(self, error: LLMRunError, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


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
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"Transport(url={self.credentials.url!r}, timeout={self.timeout})"

    async def call(self, session: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
        """Send one request (retrying as the policy says) and return the decoded JSON reply."""
        attempts = self.retry.max_retries + 1
        for attempt in range(attempts):
            try:
                return await self._once(session, method, path, body)
            except _AttemptFailedError as failure:
                error = failure.error
                last = attempt == attempts - 1
                ra = failure.retry_after
                if not failure.retryable or last or (ra is not None and ra > self.retry.max_retry_wait):
                    if failure.retryable and ra is not None and ra > self.retry.max_retry_wait:
                        _append(error, f" (the server asked to wait {ra:g}s, over max_retry_wait)")
                    elif failure.retryable and attempt:
                        _append(error, f" (gave up after {attempt + 1} attempts)")
                    raise error from None
                delay = self.retry.wait(attempt, ra, self._rng)
                logger.info(
                    "Lamini %s %s failed (%s); retry %d of %d in %.3fs",
                    method, path, type(error).__name__, attempt + 1, self.retry.max_retries, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

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
            raise _AttemptFailedError(
                RequestTimeoutError(
                    f"Lamini did not answer {what} within {self.timeout:g}s; "
                    "raise the timeout option or try again later"
                ),
                retryable=False,
            ) from None
        except LaminiError:
            if seen.status is None or seen.status == 200:
                raise _AttemptFailedError(
                    BackendError(f"the lamini client failed on {what}"), retryable=False
                ) from None
            raise self._status_failure(seen, what) from None
        except (json.JSONDecodeError, aiohttp.ContentTypeError, UnicodeDecodeError):
            snippet = self.credentials.key.redact(seen.body[:120].decode("utf-8", "replace"))
            raise _AttemptFailedError(
                BackendError(
                    f"Lamini answered {what} with a body that is not valid JSON: {snippet!r}",
                    status_code=seen.status,
                ),
                retryable=False,
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            message = self.credentials.key.redact(f"{type(exc).__name__}: {exc}")
            raise _AttemptFailedError(
                ServiceUnavailableError(f"the connection to Lamini at {url} failed on {what} ({message})"),
                retryable=True,
            ) from None

    def _status_failure(self, seen: _SeenResponse, what: str) -> _AttemptFailedError:
        status = seen.status or 0
        detail = self.credentials.key.redact(_detail(seen.body))
        retry_after = _retry_after(seen.headers.get("Retry-After"))
        error: LLMRunError
        if status in (401, 403):
            error = AuthenticationError(
                f"Lamini rejected the API key (HTTP {status}): {detail}. "
                "Check api_key / LAMINI_API_KEY / ~/.lamini/configure.yaml",
                status,
                detail,
            )
        elif status in (400, 422):
            error = BadRequestError(f"Lamini rejected {what} (HTTP {status}): {detail}", status, detail)
        elif status == 404:
            error = BackendError(
                f"Lamini has no {what} (HTTP 404): {detail}; check api_url ({self.credentials.url})",
                status,
                detail,
            )
        elif status == MODEL_NOT_FOUND_STATUS:
            error = ModelNotFoundError(f"Lamini cannot find the model: {detail}")
        elif status == 429:
            error = RateLimitError(f"Lamini is rate limiting this key (HTTP 429): {detail}", status, detail)
        elif status == 524:
            error = RequestTimeoutError(f"Lamini timed out on {what} (HTTP 524): {detail}", status, detail)
        elif 500 <= status < 600:
            error = ServiceUnavailableError(
                f"Lamini failed on {what} (HTTP {status}): {detail}", status, detail
            )
        else:
            error = BackendError(f"Lamini answered {what} with HTTP {status}: {detail}", status, detail)
        retryable = status == 429 or (500 <= status < 600 and status != MODEL_NOT_FOUND_STATUS)
        return _AttemptFailedError(error, retryable, retry_after)


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


def _detail(body: bytes) -> str:
    """The server's ``detail`` message (FastAPI-style), or the start of the body."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300].strip() or "(empty response body)"
    if isinstance(data, dict) and "detail" in data:
        d = data["detail"]
        return d if isinstance(d, str) else json.dumps(d)[:500]
    return json.dumps(data)[:300]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _append(error: BaseException, note: str) -> None:
    error.args = ((str(error.args[0]) if error.args else "") + note, *error.args[1:])
