"""What every HTTP backend shares: retries with backoff and jitter, ``Retry-After``, status mapping.

One :class:`Retrier` runs one :class:`RetryPolicy` for the Lamini and the OpenAI
backends alike: a backend turns each failed attempt into an :class:`AttemptFailedError`
(the llmrun error, whether it may be retried, the server's ``Retry-After``, and
whether the request may have been applied), and the retrier decides: wait and try
again, recover, or raise. Calls that are not idempotent (starting a tuning job,
uploading data) are retried only where the server surely did not act on them (429,
a connection that never opened); after any other failure the caller's ``recover``
looks for what the lost reply would have said (the job it started) before a retry,
or, without one, the error is raised saying the call was not repeated.

Keys: :class:`~llmrun.redaction.Secret` (re-exported here) keeps them out of reprs,
errors and logs. Standard library only, so the module loads without either client.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from llmrun.checks import is_int_at_least, is_number_at_least
from llmrun.errors import (
    AuthenticationError,
    BackendError,
    BadRequestError,
    BatchError,
    ConfigurationError,
    LLMRunError,
    RateLimitError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from llmrun.redaction import Secret, redact

__all__ = [
    "AttemptFailedError",
    "Retrier",
    "RetryPolicy",
    "Secret",
    "append_note",
    "check_count",
    "check_seconds",
    "collect_batch",
    "response_detail",
    "retry_after_seconds",
    "status_failure",
]

T = TypeVar("T")

logger = logging.getLogger("llmrun.backends.http")


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

    @classmethod
    def checked(
        cls,
        backend: str,
        max_retries: object,
        backoff_base: object,
        backoff_max: object,
        max_retry_wait: object,
    ) -> RetryPolicy:
        """A policy from user options, each checked (ConfigurationError naming ``backend`` and the option)."""
        check_count(backend, "max_retries", max_retries, minimum=0)
        for name, value in (
            ("backoff_base", backoff_base),
            ("backoff_max", backoff_max),
            ("max_retry_wait", max_retry_wait),
        ):
            check_seconds(backend, name, value, allow_zero=True)
        return cls(max_retries, float(backoff_base), float(backoff_max), float(max_retry_wait))  # type: ignore[arg-type]


class AttemptFailedError(Exception):
    """One attempt's failure: the llmrun error to raise, and what the retrier needs to decide.

    ``retryable``: trying again can help (429, 5xx, a dropped connection).
    ``applied``: the server may have acted on the request (False for 429 and for a
    connection that never opened), which matters for calls that are not idempotent.
    """

    def __init__(
        self,
        error: LLMRunError,
        retryable: bool,
        retry_after: float | None = None,
        *,
        applied: bool = True,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after
        self.applied = applied


class Retrier:
    """Runs attempts under a :class:`RetryPolicy`; ``service`` names the backend in log lines."""

    def __init__(self, policy: RetryPolicy, service: str, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.service = service
        self._rng = rng or random.Random()

    async def acall(
        self,
        attempt: Callable[[], Awaitable[T]],
        what: str,
        *,
        idempotent: bool = True,
        recover: Callable[[], Awaitable[T | None]] | None = None,
    ) -> T:
        """Await ``attempt()`` until it succeeds or the policy says stop (see the module docstring)."""
        for n in range(self.policy.max_retries + 1):
            try:
                return await attempt()
            except AttemptFailedError as failure:
                if failure.retryable and failure.applied and not idempotent and recover is not None:
                    found = await _recovering(recover, failure, what)
                    if found is not None:
                        return found  # it had worked: the reply was lost, not the call
                delay = self._decide(n, failure, what, idempotent, recover is not None)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def call(
        self,
        attempt: Callable[[], T],
        what: str,
        *,
        idempotent: bool = True,
    ) -> T:
        """The blocking :meth:`acall`, for calls made from synchronous code (no ``recover``)."""
        for n in range(self.policy.max_retries + 1):
            try:
                return attempt()
            except AttemptFailedError as failure:
                delay = self._decide(n, failure, what, idempotent, False)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _decide(
        self, n: int, failure: AttemptFailedError, what: str, idempotent: bool, can_recover: bool
    ) -> float:
        """Seconds to wait before the next attempt, or raise the attempt's error."""
        error = failure.error
        ra = failure.retry_after
        if not failure.retryable:
            raise error from None
        if not idempotent and failure.applied and not can_recover:
            append_note(
                error,
                f" (not retried: {what} is not idempotent and the server may have acted on it; "
                "check its state before calling again)",
            )
            raise error from None
        if ra is not None and ra > self.policy.max_retry_wait:
            append_note(error, f" (the server asked to wait {ra:g}s, over max_retry_wait)")
            raise error from None
        if n >= self.policy.max_retries:
            if n:
                append_note(error, f" (gave up after {n + 1} attempts)")
            raise error from None
        delay = self.policy.wait(n, ra, self._rng)
        logger.info(
            "%s %s failed (%s); retry %d of %d in %.3fs",
            self.service, what, type(error).__name__, n + 1, self.policy.max_retries, delay,
        )  # fmt: skip
        return delay


async def _recovering(
    recover: Callable[[], Awaitable[T | None]], failure: AttemptFailedError, what: str
) -> T | None:
    """Ask ``recover`` whether the failed call took effect; a failing lookup ends the call, not retried."""
    try:
        return await recover()
    except LLMRunError as lookup:
        append_note(
            failure.error,
            f" (not retried: {what} may have taken effect, and looking for its result failed: {lookup})",
        )
        raise failure.error from None


def status_failure(
    service: str,
    status: int,
    detail: str,
    what: str,
    *,
    key_hint: str,
    retry_after: float | None = None,
) -> AttemptFailedError:
    """The llmrun error for an HTTP error status, and whether it may be retried.

    401/403: :class:`AuthenticationError` (``key_hint`` says where the key comes
    from); 400/422: :class:`BadRequestError`; 429: :class:`RateLimitError`
    (retried); 408/504/524: :class:`RequestTimeoutError` (retried); other 5xx:
    :class:`ServiceUnavailableError` (retried); anything else a
    :class:`BackendError`. ``detail`` is redacted here.
    """
    detail = redact(detail)
    error: LLMRunError
    if status in (401, 403):
        error = AuthenticationError(
            f"{service} rejected the API key (HTTP {status}): {detail}. {key_hint}", status, detail
        )
    elif status in (400, 422):
        error = BadRequestError(f"{service} rejected {what} (HTTP {status}): {detail}", status, detail)
    elif status == 429:
        error = RateLimitError(f"{service} is rate limiting this key (HTTP 429): {detail}", status, detail)
    elif status in (408, 504, 524):
        error = RequestTimeoutError(
            f"{service} timed out on {what} (HTTP {status}): {detail}", status, detail
        )
    elif 500 <= status < 600:
        error = ServiceUnavailableError(
            f"{service} failed on {what} (HTTP {status}): {detail}", status, detail
        )
    else:
        error = BackendError(f"{service} answered {what} with HTTP {status}: {detail}", status, detail)
    retryable = status in (408, 429) or 500 <= status < 600
    return AttemptFailedError(error, retryable, retry_after, applied=status != 429)


def response_detail(body: bytes | str) -> str:
    """The server's message: FastAPI's ``detail``, OpenAI's ``error.message``, or the start of the body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return redact(text[:300].strip()) or "(empty response body)"
    if isinstance(data, dict) and "detail" in data:
        d = data["detail"]
        return redact(d if isinstance(d, str) else json.dumps(d)[:500])
    if isinstance(data, dict) and isinstance(data.get("error"), dict | str):
        err = data["error"]
        message = err.get("message") if isinstance(err, dict) else err
        if isinstance(message, str) and message:
            return redact(message[:500])
    return redact(json.dumps(data)[:300])


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def append_note(error: BaseException, note: str) -> None:
    """Add ``note`` to the end of ``error``'s message."""
    error.args = ((str(error.args[0]) if error.args else "") + note, *error.args[1:])


def check_seconds(backend: str, name: str, value: object, allow_zero: bool = False) -> None:
    """A finite number of seconds (> 0, or >= 0 with ``allow_zero``), else ConfigurationError."""
    if not is_number_at_least(value, 0, strict=not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(
            f"{backend} option {name}={value!r} is invalid: it must be a number of seconds {rule}"
        )


def check_count(backend: str, name: str, value: object, minimum: int = 1) -> None:
    """An integer >= ``minimum`` (not a bool, not a string), else ConfigurationError."""
    if not is_int_at_least(value, minimum):
        raise ConfigurationError(
            f"{backend} option {name}={value!r} is invalid: it must be an integer >= {minimum}"
        )


def collect_batch(
    chunks: Sequence[range],
    outcomes: Sequence[list[T] | BaseException],
    *,
    whole_call_errors: tuple[type[BaseException], ...] = (),
) -> list[T]:
    """Join the results of a batch's chunks in order, or raise.

    ``outcomes[i]`` is chunk ``i``'s results or its error. A failure that is not an
    llmrun error (a bug, a cancellation) is raised as it is; so is the error of a
    one-chunk batch and one in ``whole_call_errors`` (the same for every item: a wrong
    key, an unknown model). Otherwise :meth:`BatchError.of <llmrun.errors.BatchError.of>`
    names each failed item and keeps the results of the chunks that succeeded.
    """
    errors = [(c, o) for c, o in zip(chunks, outcomes, strict=True) if isinstance(o, BaseException)]
    results: list[T | None] = []
    for chunk, outcome in zip(chunks, outcomes, strict=True):
        results += [None] * len(chunk) if isinstance(outcome, BaseException) else outcome
    if not errors:
        return [r for r in results if r is not None]
    for _, error in errors:
        if not isinstance(error, LLMRunError):
            raise error
    if len(chunks) == 1 or isinstance(errors[0][1], whole_call_errors):
        raise errors[0][1]
    raise BatchError.of({i: error for chunk, error in errors for i in chunk}, results)
