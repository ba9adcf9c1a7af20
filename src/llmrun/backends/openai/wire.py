"""The OpenAI wire through the official ``openai`` client: one attempt, its failures mapped once.

:func:`attempt` awaits one client call and turns every way it can fail into an
:class:`~llmrun.backends.http.AttemptFailedError` for the shared retrier: HTTP statuses
through :func:`~llmrun.backends.http.status_failure` (with ``Retry-After``), a model
the server does not have into :class:`~llmrun.errors.ModelNotFoundError`, a schema the
server refuses into a :class:`~llmrun.errors.BadRequestError` naming the profile, a
timeout into :class:`~llmrun.errors.RequestTimeoutError` (not retried) and a refused
connection into :class:`~llmrun.errors.ServiceUnavailableError` naming the URL. The
client's own retries are off (``max_retries=0``): one retry policy, llmrun's.
"""

from __future__ import annotations

import functools
import importlib
import re
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import openai

from llmrun.backends.http import AttemptFailedError, response_detail, retry_after_seconds, status_failure
from llmrun.errors import (
    BackendError,
    BadRequestError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from llmrun.redaction import redact

T = TypeVar("T")

KEY_HINT = "Check api_key= / LLMRUN_API_KEY (or the profile's own key variable, e.g. OPENAI_API_KEY)"


@dataclass(frozen=True)
class CallContext:
    """What an error message needs to say what to change."""

    base_url: str
    model: str
    profile: str
    what: str
    with_schema: bool = False


def async_client(base_url: str, key: str, timeout: float) -> openai.AsyncOpenAI:
    """A client with its own retries off, sharing one TLS context (see :func:`tls_context`)."""
    http = openai.DefaultAsyncHttpxClient(verify=tls_context())
    return openai.AsyncOpenAI(
        api_key=key, base_url=base_url, max_retries=0, timeout=timeout, http_client=http
    )


def sync_client(base_url: str, key: str, timeout: float) -> openai.OpenAI:
    """The blocking :func:`async_client` (for streams)."""
    http = openai.DefaultHttpxClient(verify=tls_context())
    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout, http_client=http)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context the client's HTTP library builds by default, built once per process.

    Building it loads the CA store, about 0.1 s: done per client, it was most of the cost
    of a call to a server on this machine.
    """
    library = importlib.import_module(openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0])
    make = getattr(library, "create_ssl_context", None)
    context: ssl.SSLContext = make() if callable(make) else ssl.create_default_context()
    return context


@dataclass(frozen=True)
class Reply:
    """One completion as the server gave it."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


async def attempt(call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
    """Await ``call()`` once; raise :class:`AttemptFailedError` for any failure."""
    try:
        return await call()
    except openai.OpenAIError as exc:
        raise failure(exc, ctx) from None


def attempt_sync(call: Callable[[], T], ctx: CallContext) -> T:
    """:func:`attempt` for the blocking client (streams)."""
    try:
        return call()
    except openai.OpenAIError as exc:
        raise failure(exc, ctx) from None


def failure(exc: openai.OpenAIError, ctx: CallContext) -> AttemptFailedError:
    """The llmrun failure for anything the client raised."""
    if isinstance(exc, openai.APIStatusError):
        return status_error(exc, ctx)
    if isinstance(exc, openai.APITimeoutError):
        return AttemptFailedError(timeout_error(ctx), retryable=False)
    if isinstance(exc, openai.APIConnectionError):
        return connection_error(exc, ctx)
    message = redact(f"{type(exc).__name__}: {exc}")
    return AttemptFailedError(
        BackendError(f"the server at {ctx.base_url} gave an unusable answer to {ctx.what} ({message})"),
        retryable=False,
    )


def status_error(exc: openai.APIStatusError, ctx: CallContext) -> AttemptFailedError:
    status = exc.status_code
    detail = _detail(exc)
    retry_after = retry_after_seconds(exc.response.headers.get("retry-after"))
    if status == 404 and (ctx.model in detail or re.search(r"\bmodel\b", detail, re.IGNORECASE)):
        error = ModelNotFoundError(
            f"the server at {ctx.base_url} has no model {ctx.model!r} (HTTP 404: {detail}); "
            "load a model it serves (GET /v1/models lists them)"
        )
        return AttemptFailedError(error, retryable=False)
    if status == 404:
        error_404 = BackendError(
            f"{ctx.base_url} has no {ctx.what} endpoint (HTTP 404: {detail}); check base_url (it usually "
            "ends in /v1) and the chat option",
            status,
            detail,
        )
        return AttemptFailedError(error_404, retryable=False)
    failure = status_failure(
        "the server", status, detail, ctx.what, key_hint=KEY_HINT, retry_after=retry_after
    )
    if isinstance(failure.error, BadRequestError) and ctx.with_schema:
        failure.error.args = (
            f"{failure.error.args[0]}. The request asked for a JSON schema the way profile "
            f"{ctx.profile!r} does; if this server takes it another way, pick its profile "
            "(profile='vllm', 'sglang', 'llamacpp', 'ollama', 'generic', ...)",
            *failure.error.args[1:],
        )
    return failure


def timeout_error(ctx: CallContext) -> RequestTimeoutError:
    return RequestTimeoutError(
        f"the server at {ctx.base_url} did not answer {ctx.what} in time; raise the timeout option "
        "or try again later"
    )


def connection_error(exc: openai.APIConnectionError, ctx: CallContext) -> AttemptFailedError:
    cause = exc.__cause__ or exc.__context__
    reason = redact(f"{type(cause).__name__}: {cause}" if cause is not None else str(exc))
    never_sent = "connect" in type(cause).__name__.lower() if cause is not None else False
    error = ServiceUnavailableError(
        f"cannot reach the server at {ctx.base_url} ({reason}); check base_url / LLMRUN_BASE_URL "
        "and that the server is running"
    )
    return AttemptFailedError(error, retryable=True, applied=not never_sent)


def _detail(exc: openai.APIStatusError) -> str:
    try:
        text = exc.response.text
    except Exception:  # a streamed body that was never read
        text = ""
    return response_detail(text) if text else redact(str(exc.message))


def completion_reply(result: Any) -> Reply:
    """The text of a ``/completions`` reply."""
    choice = _first_choice(result, "POST /completions")
    text = getattr(choice, "text", None)
    if not isinstance(text, str):
        raise BackendError("the server answered POST /completions without a text in choices[0]", 200)
    return Reply(text, getattr(choice, "finish_reason", None), *_usage(result))


def chat_reply(result: Any) -> Reply:
    """The message content of a ``/chat/completions`` reply."""
    choice = _first_choice(result, "POST /chat/completions")
    message = getattr(choice, "message", None)
    text = getattr(message, "content", None)
    if not isinstance(text, str):
        refusal = getattr(message, "refusal", None)
        why = f" (it refused: {redact(str(refusal))})" if refusal else ""
        raise BackendError(f"the server answered POST /chat/completions without message content{why}", 200)
    return Reply(text, getattr(choice, "finish_reason", None), *_usage(result))


def deltas(stream: Any, chat: bool, ctx: CallContext) -> Iterator[str]:
    """The text pieces of a streamed reply; a failure mid-stream is raised as an llmrun error."""
    try:
        for chunk in stream:
            choices = getattr(chunk, "choices", None) or []
            if not choices:
                continue
            piece = getattr(choices[0].delta, "content", None) if chat else getattr(choices[0], "text", None)
            if piece:
                yield piece
    except openai.OpenAIError as exc:
        raise (stream_error(exc, ctx) or failure(exc, ctx).error) from None


#: OpenAI's error ``type`` names and the HTTP statuses they stand for.
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "server_error": 500,
    "service_unavailable_error": 503,
    "timeout_error": 504,
}


def stream_error(exc: openai.OpenAIError, ctx: CallContext) -> BackendError | None:
    """The llmrun error for an error event in a stream, which has a body but no HTTP status.

    The status comes from the body's ``code`` where it is one (vLLM's events) or from its
    ``type`` (OpenAI's names, as ``llmrun serve`` sends them); None when neither says.
    """
    if isinstance(exc, openai.APIStatusError) or not isinstance(exc, openai.APIError):
        return None
    body = exc.body if isinstance(exc.body, dict) else {}
    code, kind = body.get("code"), body.get("type")
    status = code if isinstance(code, int) and 400 <= code < 600 else _TYPE_STATUS.get(str(kind))
    if status is None:
        return None
    detail = redact(str(body.get("message") or exc.message))
    error = status_failure("the server", status, detail, f"{ctx.what} mid-stream", key_hint=KEY_HINT).error
    return error if isinstance(error, BackendError) else None


def _first_choice(result: Any, what: str) -> Any:
    choices = getattr(result, "choices", None)
    if not choices:
        raise BackendError(f"the server answered {what} with no choices", 200)
    return choices[0]


def _usage(result: Any) -> tuple[int | None, int | None]:
    usage = getattr(result, "usage", None)
    if usage is None:
        return None, None
    return getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
