"""``OpenAIRunner``: llmrun's interface over any OpenAI-wire server, through the ``openai`` client."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import openai

from llmrun.backends.http import Retrier, RetryPolicy, check_count, check_seconds, collect_batch
from llmrun.backends.openai import wire
from llmrun.backends.openai.profiles import (
    PROFILES,
    ServerProfile,
    get_profile,
    profile_for_host,
    profile_for_owner,
)
from llmrun.backends.openai.typed import TypedAsk, bounded_schema, sampling_fields
from llmrun.backends.sync import run_sync
from llmrun.errors import AuthenticationError, BackendError, ConfigurationError, ModelNotFoundError
from llmrun.generation import GenerationConfig, cut_at_stop
from llmrun.redaction import Secret
from llmrun.runner import (
    SAMPLING_OPTIONS,
    Capabilities,
    Completion,
    CompletionRequest,
    FinishReason,
    ModelRunner,
    Usage,
)

__all__ = ["NO_KEY", "OpenAIRunner"]

logger = logging.getLogger("llmrun.backends.openai")

#: The key sent to servers that want none (vLLM's and Ollama's own docs use such placeholders).
NO_KEY = "EMPTY"
#: vLLM versions below this one take ``guided_json`` (profile ``vllm_legacy``), not ``structured_outputs``.
LEGACY_VLLM_BELOW = (0, 10, 2)
#: Errors that are the same for every prompt of a batch: raised as they are, not as a BatchError.
_WHOLE_CALL_ERRORS = (AuthenticationError, ModelNotFoundError)


class OpenAIRunner(ModelRunner):
    """Run ``model_name`` on an OpenAI-wire server at ``base_url``, typed or not.

    ``profile`` says which server it is (see :mod:`llmrun.backends.openai.profiles`):
    ``"auto"`` (the default) reads ``GET /models`` once (its ``owned_by``) and also
    checks that the server has ``model_name``; an unrecognised server gets ``generic``.
    ``base_url`` defaults to the profile's usual address. ``api_key``: the argument,
    else the profile's own variable (``OPENAI_API_KEY`` for ``openai``,
    ``LAMINI_API_KEY`` for ``lamini_inf``), else none (servers on your own machine).

    ``chat``: use ``/chat/completions`` (the prompt as one user message) instead of
    ``/completions``; typed calls use chat anyway where the profile can ask for a schema
    only there. Typed calls send the schema sized to the token budget (as the local
    backend's grammar does); every reply is validated, and where the server does not
    enforce the schema a reply that fails is asked again with the error, up to
    ``validation_retries`` times, before :class:`~llmrun.errors.OutputValidationError`.

    ``timeout`` (seconds per request; not retried), ``max_retries``, ``backoff_base``,
    ``backoff_max``, ``max_retry_wait``: see :class:`~llmrun.backends.http.RetryPolicy`
    (the client's own retries are off). A list of prompts is sent as concurrent
    requests, at most ``max_concurrency`` at a time.
    """

    backend_name: ClassVar[str] = "openai"
    #: Which sampling settings a server takes depends on its profile: narrowed to the
    #: profile's once it is known (named, or detected on the first call).
    capabilities: ClassVar[Capabilities] = Capabilities(streams=True, sampling=SAMPLING_OPTIONS)

    def __init__(
        self,
        model_name: str,
        *,
        generation: GenerationConfig | None = None,
        template: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        profile: str = "auto",
        chat: bool = False,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_wait: float = 60.0,
        max_concurrency: int = 8,
        validation_retries: int = 2,
    ) -> None:
        super().__init__(model_name, generation=generation, template=template)
        chosen = None if profile == "auto" else get_profile(profile)
        if not isinstance(chat, bool):
            raise ConfigurationError(f"openai option chat={chat!r} is invalid: it must be True or False")
        check_seconds("openai", "timeout", timeout)
        check_count("openai", "max_concurrency", max_concurrency)
        check_count("openai", "validation_retries", validation_retries, minimum=0)
        retry = RetryPolicy.checked("openai", max_retries, backoff_base, backoff_max, max_retry_wait)
        self.base_url = _check_base_url(base_url, chosen)
        chosen = chosen or profile_for_host(urlsplit(self.base_url).hostname)
        self._key = _resolve_key(api_key, chosen, self.base_url)
        self._profile: ServerProfile | None = None
        if chosen is not None:
            self._use(chosen)
        self.chat = chat
        self.timeout = float(timeout)
        self.retry = retry
        self.max_concurrency = max_concurrency
        self.validation_retries = validation_retries
        self._retrier = Retrier(retry, "OpenAI-wire server")

    def __repr__(self) -> str:
        profile = self._profile.name if self._profile else "auto"
        return (
            f"OpenAIRunner(model_name={self.model_name!r}, base_url={self.base_url!r}, profile={profile!r})"
        )

    @property
    def profile(self) -> ServerProfile | None:
        """The server's profile: the one asked for, or once detected; None before detection."""
        return self._profile

    # ----------------------------------------------------------------- the contract
    def complete(self, request: CompletionRequest) -> list[Completion]:
        return run_sync(lambda: self.acomplete(request))

    async def acomplete(self, request: CompletionRequest) -> list[Completion]:
        async with self._async_client() as client:
            profile = await self._detect(client)
            sampling = sampling_fields(profile, request.config)
            ask = self._typed_ask(profile, request)
            gate = asyncio.Semaphore(self.max_concurrency)

            async def one(prompt: str) -> list[Completion]:
                async with gate:
                    return [await self._complete_one(client, profile, prompt, request, sampling, ask)]

            outcomes = await asyncio.gather(*(one(p) for p in request.prompts), return_exceptions=True)
        chunks = [range(i, i + 1) for i in range(len(request.prompts))]
        return collect_batch(chunks, outcomes, whole_call_errors=_WHOLE_CALL_ERRORS)

    def stream_completion(self, request: CompletionRequest) -> Iterator[str]:
        """Text deltas over server-sent events; closing the iterator closes the stream.

        Settings are checked (and the profile detected) here, before the first delta is
        asked for. Typed streams send the schema like typed calls; the joined text is
        validated by the caller, not re-asked (the text has already been shown).
        """
        (prompt,) = request.prompts
        profile = self._profile or run_sync(self._detect_once)
        sampling = sampling_fields(profile, request.config)
        ask = self._typed_ask(profile, request)
        chat = self.chat or (ask is not None and ask.chat)
        body = {**sampling, **(ask.fields if ask else {})}
        return self._stream(prompt, request, chat, body, self._context(profile, chat, ask is not None))

    def _stream(
        self, prompt: str, request: CompletionRequest, chat: bool, body: dict[str, Any], ctx: wire.CallContext
    ) -> Iterator[str]:
        client = wire.sync_client(self.base_url, self._key.reveal(), self.timeout)
        try:
            stream = self._retrier.call(
                lambda: wire.attempt_sync(
                    lambda: self._create_stream(client, chat, prompt, request, body), ctx
                ),
                ctx.what,
            )
            try:
                yield from wire.deltas(stream, chat, ctx)
            finally:
                stream.close()
        finally:
            client.close()

    # ----------------------------------------------------------------- one prompt
    async def _complete_one(
        self,
        client: openai.AsyncOpenAI,
        profile: ServerProfile,
        prompt: str,
        request: CompletionRequest,
        sampling: dict[str, Any],
        ask: TypedAsk | None,
    ) -> Completion:
        chat = self.chat or (ask is not None and ask.chat)
        ctx = self._context(profile, chat, ask is not None)
        conversation = ask.conversation(prompt) if ask else None
        body = {**sampling, **(ask.fields if ask else {})}
        for round_ in range(self.validation_retries + 1):
            target = conversation.current if conversation else prompt
            reply = await self._send(client, chat, target, request, body, ctx)
            if ask is None or conversation is None:
                return _completion(reply, cut_at_stop(reply.text, request.config.stop))
            last = round_ == self.validation_retries
            outcome = conversation.check(reply.text, reply.finish_reason, last=last)
            if outcome is not None:
                return _completion(reply, outcome)
            logger.info(
                "%s reply failed validation; asking again with the error (%d of %d)",
                profile.name, round_ + 1, self.validation_retries,
            )  # fmt: skip
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        client: openai.AsyncOpenAI,
        chat: bool,
        target: str | list[dict[str, str]],
        request: CompletionRequest,
        body: dict[str, Any],
        ctx: wire.CallContext,
    ) -> wire.Reply:
        """One request, retried under the policy."""
        return await self._retrier.acall(
            lambda: wire.attempt(lambda: self._create(client, chat, target, request, body), ctx), ctx.what
        )

    async def _create(
        self,
        client: openai.AsyncOpenAI,
        chat: bool,
        target: str | list[dict[str, str]],
        request: CompletionRequest,
        body: dict[str, Any],
    ) -> wire.Reply:
        if chat:
            messages = target if isinstance(target, list) else [{"role": "user", "content": target}]
            result = await client.chat.completions.create(
                model=self.model_name,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=request.max_new_tokens,
                extra_body=body,
            )
            return wire.chat_reply(result)
        prompt = target if isinstance(target, str) else target[-1]["content"]
        done = await client.completions.create(
            model=self.model_name, prompt=prompt, max_tokens=request.max_new_tokens, extra_body=body
        )
        return wire.completion_reply(done)

    def _create_stream(
        self, client: openai.OpenAI, chat: bool, prompt: str, request: CompletionRequest, body: dict[str, Any]
    ) -> Any:
        if chat:
            return client.chat.completions.create(
                model=self.model_name,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=request.max_new_tokens,
                stream=True,
                extra_body=body,
            )
        return client.completions.create(
            model=self.model_name,
            prompt=prompt,
            max_tokens=request.max_new_tokens,
            stream=True,
            extra_body=body,
        )

    # ----------------------------------------------------------------- helpers
    def _typed_ask(self, profile: ServerProfile, request: CompletionRequest) -> TypedAsk | None:
        if request.output is None:
            return None
        schema = bounded_schema(request.output.json_schema, request.max_new_tokens)
        return TypedAsk.build(profile, self.chat, schema, request.output)

    def _context(self, profile: ServerProfile, chat: bool, typed: bool) -> wire.CallContext:
        what = "POST /chat/completions" if chat else "POST /completions"
        return wire.CallContext(self.base_url, self.model_name, profile.name, what, typed)

    def _async_client(self) -> openai.AsyncOpenAI:
        return wire.async_client(self.base_url, self._key.reveal(), self.timeout)

    async def _vllm_version(self, client: openai.AsyncOpenAI) -> tuple[int, ...]:
        """vLLM's version from its ``GET /version`` (at the server root); ``(999,)`` when unreadable."""
        root = self.base_url.removesuffix("/v1")
        try:
            reply = await client.get(root + "/version", cast_to=object)
        except openai.OpenAIError:
            return (999,)
        found = _version(reply.get("version") if isinstance(reply, dict) else None)
        return found or (999,)

    async def _detect_once(self) -> ServerProfile:
        async with self._async_client() as client:
            return await self._detect(client)

    async def _detect(self, client: openai.AsyncOpenAI) -> ServerProfile:
        """The profile; with ``profile="auto"``, read ``GET /models`` once (and check the model is there)."""
        if self._profile is not None:
            return self._profile
        ctx = wire.CallContext(self.base_url, self.model_name, "auto", "GET /models")
        try:
            page = await self._retrier.acall(
                lambda: wire.attempt(lambda: client.models.list(), ctx), ctx.what
            )
        except BackendError as error:
            if error.status_code not in (404, 405) or isinstance(error, ModelNotFoundError):
                raise
            logger.info("%s has no GET /models: profile 'generic' (name one with profile=...)", self.base_url)
            return self._use(PROFILES["generic"])
        models = [(m.id, str(getattr(m, "owned_by", "") or "")) for m in page.data]
        ids = {i for i, _ in models}
        if ids and self.model_name not in ids and f"{self.model_name}:latest" not in ids:
            listed = ", ".join(sorted(ids)[:10]) + (" ..." if len(ids) > 10 else "")
            raise ModelNotFoundError(
                f"the server at {self.base_url} has no model {self.model_name!r}; it serves: {listed}"
            )
        found = profile_for_owner({o for _, o in models if o})
        if (
            found is not None
            and found.name == "vllm"
            and await self._vllm_version(client) < LEGACY_VLLM_BELOW
        ):
            found = PROFILES["vllm_legacy"]  # structured_outputs came in vLLM 0.10.2; guided_json before
        profile = self._use(found or PROFILES["generic"])
        logger.info(
            "%s: profile %r (from owned_by %s)",
            self.base_url, profile.name, sorted({o for _, o in models}) or "none",
        )  # fmt: skip
        return profile

    def _who(self) -> str:
        profile = f", profile {self._profile.name!r}" if self._profile else ""
        return f"{type(self).__name__} (backend {self.backend_name!r}{profile})"

    def _use(self, profile: ServerProfile) -> ServerProfile:
        """Take ``profile`` as the server's, and declare the sampling settings it takes."""
        self._profile = profile
        self.capabilities = Capabilities(  # type: ignore[misc]
            streams=True, sampling=frozenset(profile.sampling)
        )
        return profile


def _version(text: object) -> tuple[int, ...]:
    """``"0.9.2"`` as ``(0, 9, 2)``; anything unreadable as ``()``."""
    parts: list[int] = []
    for piece in str(text).split("+")[0].split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _completion(reply: wire.Reply, text: str) -> Completion:
    finish: FinishReason = "length" if reply.finish_reason == "length" else "stop"
    return Completion(text, finish, Usage(reply.prompt_tokens, reply.completion_tokens))


def _check_base_url(base_url: object, profile: ServerProfile | None) -> str:
    url = base_url if base_url not in (None, "") else (profile.default_base_url if profile else None)
    if url is None:
        raise ConfigurationError(
            "the openai backend needs base_url=... (or LLMRUN_BASE_URL), the server's OpenAI API root "
            "such as http://localhost:8000/v1; or name a profile with a usual address "
            "(profile='ollama', 'openai', ...)"
        )
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or not urlsplit(url).hostname:
        raise ConfigurationError(
            f"openai option base_url={url!r} is invalid: give the server's API root, such as "
            "http://localhost:8000/v1"
        )
    return url.rstrip("/")


def _resolve_key(api_key: object, profile: ServerProfile | None, base_url: str) -> Secret:
    if api_key not in (None, ""):
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigurationError("openai option api_key must be a non-empty string")
        return Secret(api_key.strip())
    names = profile.key_env if profile else ()
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return Secret(value)
    if names:
        raise ConfigurationError(
            f"no API key for profile {profile.name!r} at {base_url}: pass api_key=..., set LLMRUN_API_KEY, "  # type: ignore[union-attr]
            f"or set {' or '.join(names)}"
        )
    return Secret(NO_KEY, public=True)
