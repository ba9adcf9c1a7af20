"""One exception hierarchy for everything llmrun raises.

Every error derives from :class:`LLMRunError`. Backends map their own failures
into the most specific class here, so user code catches llmrun errors only.
Messages name what is wrong and how to fix it; they never contain API keys.
"""

from __future__ import annotations

from typing import Any


class LLMRunError(Exception):
    """Base class of every error llmrun raises."""


class ConfigurationError(LLMRunError, ValueError):
    """A setting, option or config file is invalid."""


class BackendNotFoundError(ConfigurationError):
    """No backend is registered under the requested name."""


class DeviceError(ConfigurationError):
    """The requested device (e.g. CUDA) is not available on this machine."""


class DependencyError(LLMRunError, ImportError):
    """An optional dependency of a backend is not installed."""


class InvalidInputError(LLMRunError, ValueError):
    """A prompt, a batch or a generation parameter is invalid."""


class PromptTooLongError(InvalidInputError):
    """A prompt does not fit in the model's context window."""


class SchemaError(LLMRunError, TypeError):
    """A ``Type`` definition or an ``output_type`` cannot be used."""


class UnsupportedFeatureError(LLMRunError, NotImplementedError):
    """The backend cannot do what was asked (streaming, training, a field type...)."""


class ModelLoadError(LLMRunError):
    """A model or tokenizer could not be loaded."""


class ModelNotFoundError(ModelLoadError):
    """The model is neither a local folder nor available in the model cache/hub."""


class GenerationError(LLMRunError):
    """Generation ran but did not produce a usable result."""


class IncompleteOutputError(GenerationError):
    """The token budget ran out before the structured output was complete.

    ``partial_text`` holds what was generated so far.
    """

    def __init__(self, message: str, partial_text: str) -> None:
        super().__init__(message)
        self.partial_text = partial_text


class OutputValidationError(GenerationError):
    """The model's output does not validate against the requested ``output_type``.

    ``raw_text`` holds the output that failed validation.
    """

    def __init__(self, message: str, raw_text: str) -> None:
        super().__init__(message)
        self.raw_text = raw_text


class BackendError(LLMRunError):
    """A remote backend answered with an error.

    ``status_code`` is the HTTP status when there was one; ``detail`` the
    server's own message.
    """

    def __init__(self, message: str, status_code: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class AuthenticationError(BackendError):
    """The API key is missing, invalid or not allowed to do this (HTTP 401/403)."""


class RateLimitError(BackendError):
    """The service is rate limiting this key (HTTP 429) and retries ran out."""


class BadRequestError(BackendError, InvalidInputError):
    """The service rejected the request as invalid (HTTP 400/422)."""


class ServiceUnavailableError(BackendError):
    """The service is down or overloaded (HTTP 5xx, connection errors) and retries ran out."""


class RequestTimeoutError(BackendError, TimeoutError):
    """A request to the backend did not finish within its timeout."""


class BatchError(LLMRunError):
    """Some items of a batch failed; the others did not.

    ``failures`` maps each failed item's index to its error (whose message starts with
    ``item N:``); ``failed`` lists those indices in order; ``results`` holds one entry per item
    of the batch: what that item returned (a ``str``, a ``Type`` instance, a ``RunResult``...,
    as the call would have), or ``None`` where it failed.
    """

    def __init__(
        self, message: str, failures: dict[int, BaseException], results: list[Any] | None = None
    ) -> None:
        super().__init__(message)
        self.failures = failures
        self.results: list[Any] = list(results) if results is not None else []

    @property
    def failed(self) -> list[int]:
        """The indices of the failed items, in order."""
        return sorted(self.failures)

    @classmethod
    def of(cls, failures: dict[int, BaseException], results: list[Any]) -> BatchError:
        """A BatchError for ``failures`` among ``len(results)`` items; each error is named by its items."""
        kinds = "; ".join(sorted({f"{type(e).__name__}: {e}" for e in failures.values()})[:3])
        shared: dict[int, list[int]] = {}
        for index, error in failures.items():
            shared.setdefault(id(error), []).append(index)
        for indices in shared.values():
            name_item(failures[indices[0]], sorted(indices))
        where = index_ranges(sorted(failures))
        return cls(
            f"{len(failures)} of {len(results)} prompts failed (items {where}): {kinds}", failures, results
        )


def name_item(error: BaseException, indices: list[int]) -> BaseException:
    """Prefix ``error``'s message with the batch item(s) it belongs to, once; sets ``error.items``."""
    if getattr(error, "items", None) is None:
        error.items = list(indices)  # type: ignore[attr-defined]
        label = f"item {indices[0]}" if len(indices) == 1 else f"items {index_ranges(indices)}"
        first = str(error.args[0]) if error.args else ""
        error.args = (f"{label}: {first}", *error.args[1:])
    return error


def index_ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2, 5"``."""
    if not indices:
        return ""
    parts: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


class DataError(LLMRunError, ValueError):
    """Fine-tuning data is invalid. ``source`` and ``line`` say where, when known."""

    def __init__(self, message: str, source: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.line = line


class TrainingError(LLMRunError):
    """Fine-tuning failed or the tuning job ended without a model."""
