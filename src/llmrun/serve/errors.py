"""Errors the server answers with, and their bodies on each wire.

One exception, :class:`ServeError`, carries the HTTP status and a message; :func:`from_llmrun` maps
llmrun's own errors onto it once. The Lamini wire answers ``{"detail": message}`` (what the
``lamini`` client reads); the OpenAI wire answers ``{"error": {"message", "type", "param",
"code"}}``; a request whose wire is not known yet (auth, malformed JSON) gets both keys.
"""

from __future__ import annotations

from typing import Any, Literal

from llmrun.errors import (
    IncompleteOutputError,
    InvalidInputError,
    LLMRunError,
    OutputValidationError,
    PromptTooLongError,
    SchemaError,
    UnsupportedFeatureError,
)

Wire = Literal["lamini", "openai", "any"]

#: Lamini's status for an unknown model (the client raises ``ModelNotFoundError``).
LAMINI_MODEL_NOT_FOUND = 594
#: Lamini's status for a request that ran out of time (the client raises ``RequestTimeoutError``).
LAMINI_TIMEOUT = 524

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    501: "not_implemented_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class ServeError(Exception):
    """A request the server answers with ``status`` and ``message`` (and ``headers``, e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def for_wire(self, wire: Wire) -> tuple[int, dict[str, Any]]:
        """The status and JSON body of this error on ``wire``."""
        status = self.status
        if wire == "lamini" and self.code == "model_not_found":
            status = LAMINI_MODEL_NOT_FOUND
        elif wire == "lamini" and self.code == "timeout":
            status = LAMINI_TIMEOUT
        openai = {
            "error": {
                "message": self.message,
                "type": _OPENAI_TYPES.get(self.status, "server_error"),
                "param": self.param,
                "code": self.code,
            }
        }
        if wire == "openai":
            return status, openai
        if wire == "lamini":
            return status, {"detail": self.message}
        return status, {"detail": self.message, **openai}


class QueueFullError(ServeError):
    """The server's queue is full: 429 with Retry-After."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(
            429,
            f"the server's queue is full ({limit} requests waiting or running); retry after {retry_after_s}s",
            code="queue_full",
            headers={"Retry-After": str(retry_after_s)},
        )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ServeError:
    """A 400 naming what is wrong (``param``: the field at fault)."""
    return ServeError(400, message, param=param, code=code)


def from_llmrun(exc: LLMRunError) -> ServeError:
    """The answer to a llmrun error raised while checking or running a request."""
    if isinstance(exc, PromptTooLongError):
        return ServeError(400, _without_local_hint(str(exc)), code="context_length_exceeded")
    if isinstance(exc, SchemaError):
        return ServeError(400, str(exc), param="response_format", code="invalid_schema")
    if isinstance(exc, UnsupportedFeatureError):
        return ServeError(400, str(exc), code="unsupported")
    if isinstance(exc, InvalidInputError):
        return ServeError(400, str(exc))
    if isinstance(exc, IncompleteOutputError | OutputValidationError):
        return ServeError(
            422, f"{exc} (raise max_new_tokens to give the JSON room to close)", code="incomplete_output"
        )
    return ServeError(500, f"generation failed: {exc}", code="server_error")


#: The engine's advice to a local caller, which a client of the server cannot follow (no such option).
_LOCAL_ONLY_HINT = ", or pass truncate_prompt=True"


def _without_local_hint(message: str) -> str:
    """``message`` without the engine's ``truncate_prompt=True`` advice (and what follows it)."""
    head, found, _ = message.partition(_LOCAL_ONLY_HINT)
    return head if found else message
