"""2023's ``llama.error.error`` names, as aliases of llmrun's exceptions.

``except APIError`` in a 2023 program catches the llmrun error that means the
same thing, whatever the backend.
"""

from __future__ import annotations

from llmrun.errors import (
    AuthenticationError,
    BackendError,
    InvalidInputError,
    LLMRunError,
    ModelNotFoundError,
    RateLimitError,
    RequestTimeoutError,
    ServiceUnavailableError,
)

__all__ = [
    "APIError",
    "AuthenticationError",
    "LlamaError",
    "ModelNameError",
    "RateLimitError",
    "ServerTimeoutError",
    "UnavailableResourceError",
    "UserError",
]

#: Base of every error (2023: ``LlamaError``).
LlamaError = LLMRunError
#: The model name is not a model the backend has.
ModelNameError = ModelNotFoundError
#: The service answered with an error.
APIError = BackendError
#: The request was invalid (bad input, or HTTP 400/422).
UserError = InvalidInputError
#: The service is unavailable or overloaded (HTTP 5xx), retries exhausted.
UnavailableResourceError = ServiceUnavailableError
#: A request did not finish in time.
ServerTimeoutError = RequestTimeoutError
