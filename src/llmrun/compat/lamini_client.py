"""The two Lamini endpoints the 2023 surface needs beyond completions: batch jobs and embeddings.

Both go through the real ``lamini`` client (``BatchCompletions``, ``Embedding``)
with the key and URL resolved as every Lamini runner resolves them, and its
errors mapped into llmrun's, the key never shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from llmrun.backends.lamini.credentials import Credentials, resolve_credentials
from llmrun.errors import (
    AuthenticationError,
    BackendError,
    BadRequestError,
    ModelNotFoundError,
    RateLimitError,
    ServiceUnavailableError,
)

_MAPPED: Mapping[str, type[BackendError]] = {
    "AuthenticationError": AuthenticationError,
    "RateLimitError": RateLimitError,
    "UserError": BadRequestError,
    "APIUnprocessableContentError": BadRequestError,
    "ModelNotFoundError": ModelNotFoundError,  # type: ignore[dict-item]
    "UnavailableResourceError": ServiceUnavailableError,
    "ServerTimeoutError": ServiceUnavailableError,
    "APIError": ServiceUnavailableError,
}


def credentials_from(options: Mapping[str, Any]) -> Credentials:
    """Key and URL from load options (``api_key``, ``api_url``, ``config``), then the usual places."""
    return resolve_credentials(options.get("api_key"), options.get("api_url"), options.get("config"))


@contextlib.contextmanager
def lamini_errors(credentials: Credentials, what: str) -> Iterator[None]:
    """Map the ``lamini`` client's and ``requests``' errors into llmrun's, key redacted."""
    import requests
    from lamini.error.error import LaminiError

    try:
        yield
    except LaminiError as exc:
        kind = _MAPPED.get(type(exc).__name__, BackendError)
        detail = credentials.key.redact(str(exc))[:300]
        raise kind(f"Lamini failed on {what}: {type(exc).__name__}: {detail}") from None
    except requests.RequestException as exc:
        detail = credentials.key.redact(f"{type(exc).__name__}: {exc}")[:300]
        raise ServiceUnavailableError(f"the connection to Lamini failed on {what} ({detail})") from None


def submit_batch(
    credentials: Credentials,
    model_name: str,
    prompts: list[str],
    output_type: dict[str, str] | None,
    max_new_tokens: int,
) -> str:
    """``POST /v1/batch_completions``; returns the batch id."""
    from lamini.api.utils.batch_completions import BatchCompletions

    client = BatchCompletions(api_key=credentials.key.reveal(), api_url=credentials.url)
    with lamini_errors(credentials, "POST /v1/batch_completions"):
        reply = client.submit(prompts, model_name, output_type=output_type, max_new_tokens=max_new_tokens)
    if not isinstance(reply, dict) or not isinstance(reply.get("id"), str | int):
        raise BackendError(f"Lamini answered a batch submission without an id: {str(reply)[:120]}")
    return str(reply["id"])


def batch_result(credentials: Credentials, batch_id: str) -> dict[str, Any]:
    """``GET /v1/batch_completions/{id}/result``: ``{"outputs": [...], "finish_reason": [...]}`` or ``{}``."""
    from lamini.api.utils.batch_completions import BatchCompletions

    client = BatchCompletions(api_key=credentials.key.reveal(), api_url=credentials.url)
    with lamini_errors(credentials, f"GET /v1/batch_completions/{batch_id}/result"):
        reply = client.check_result(batch_id)
    if not isinstance(reply, dict):
        raise BackendError(f"Lamini answered a batch result with {type(reply).__name__}, not an object")
    return reply


def embed(credentials: Credentials, model_name: str | None, texts: list[str]) -> list[list[float]]:
    """``POST /v1/embedding`` through ``lamini.api.embedding.Embedding``: one vector per text."""
    from lamini.api.embedding import Embedding

    client = Embedding(model_name=model_name, api_key=credentials.key.reveal(), api_url=credentials.url)
    with lamini_errors(credentials, "POST /v1/embedding"):
        arrays = client.generate(texts)
    return [[float(x) for x in a.reshape(-1)] for a in arrays]
