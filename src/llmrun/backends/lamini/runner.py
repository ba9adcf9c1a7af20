"""``LaminiRunner``: llmrun's interface over the Lamini cloud, through the ``lamini`` client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import aiohttp

from llmrun.backends.http import check_count, check_seconds, collect_batch
from llmrun.backends.lamini.api import LaminiApi
from llmrun.backends.lamini.credentials import resolve_credentials
from llmrun.backends.lamini.evaluation import evaluate_job, find_job
from llmrun.backends.lamini.transport import RetryPolicy, Transport
from llmrun.backends.lamini.tuning import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    TuningJob,
    await_job,
    train_on_lamini,
)
from llmrun.backends.lamini.wire_types import lamini_output_type, lamini_schema_output_type, unflatten
from llmrun.backends.sync import run_sync
from llmrun.errors import (
    AuthenticationError,
    BackendError,
    ConfigurationError,
    ModelNotFoundError,
    TrainingError,
)
from llmrun.generation import GenerationConfig, cut_at_stop
from llmrun.runner import Capabilities, Completion, CompletionRequest, ModelRunner
from llmrun.training import EvalResult, TrainingExample, TrainOptions, TrainResult

#: Errors that are the same for every item of a batch: raised as they are, not as a BatchError.
_WHOLE_CALL_ERRORS = (AuthenticationError, ModelNotFoundError)


class LaminiRunner(ModelRunner):
    """Run ``model_name`` on Lamini (``/v1/completions``), typed or not.

    Key and URL: ``api_key``/``api_url`` (an argument, or llmrun's own settings:
    ``LLMRUN_API_KEY``/``LLMRUN_API_URL``, ``[lamini]`` in ``llmrun.toml``) > ``config``
    (the 2023 ``{"production.key": ..., "production.url": ...}``) > ``LAMINI_API_KEY``/
    ``LAMINI_API_URL`` > 2023's ``POWERML__PRODUCTION__KEY``/``_URL`` > ``lamini.api_key``/
    ``lamini.api_url`` > ``~/.lamini/configure.yaml`` > 2023's
    ``~/.powerml/configure_llama.yaml`` (see :mod:`llmrun.backends.lamini.credentials`); a
    missing key raises :class:`~llmrun.errors.ConfigurationError` here, before any request.

    ``timeout``: seconds each HTTP request may take (timeouts are not retried).
    ``max_retries``, ``backoff_base``, ``backoff_max``, ``max_retry_wait``: see
    :class:`~llmrun.backends.lamini.transport.RetryPolicy`. A list of prompts is
    sent in chunks of ``batch_size``, at most ``max_concurrency`` at a time.

    ``train()`` polls the tuning job every ``poll_interval`` seconds, for at most
    ``wait_timeout`` seconds (then :class:`~llmrun.backends.lamini.tuning.TuningTimeoutError`
    names the job; :meth:`wait_for_job` waits again), and shows a
    tqdm status line when ``progress`` is true (see
    :mod:`llmrun.backends.lamini.tuning` for what it sends and which training
    options Lamini honours); afterwards ``model_name`` is the tuned model.

    Lamini's completions API takes no sampling settings: ``temperature``,
    ``top_p``, ``top_k``, ``repetition_penalty`` and ``seed`` must keep their
    defaults (else :class:`~llmrun.errors.UnsupportedFeatureError`, from the
    runner's ``capabilities``); ``stop`` is applied to the returned text.
    """

    backend_name: ClassVar[str] = "lamini"
    capabilities: ClassVar[Capabilities] = Capabilities(
        streams=True,
        trains=True,
        sampling=frozenset({"stop"}),
        field_kinds=frozenset({"str", "int", "float", "bool", "optional", "nested"}),
    )

    def __init__(
        self,
        model_name: str,
        *,
        generation: GenerationConfig | None = None,
        template: str | None = None,
        api_key: str | None = None,
        api_url: str | None = None,
        config: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_wait: float = 60.0,
        batch_size: int = 10,
        max_concurrency: int = 4,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        progress: bool = False,
    ) -> None:
        super().__init__(model_name, generation=generation, template=template)
        _positive("timeout", timeout)
        _positive("backoff_base", backoff_base, allow_zero=True)
        _positive("backoff_max", backoff_max, allow_zero=True)
        _positive("max_retry_wait", max_retry_wait, allow_zero=True)
        _count("max_retries", max_retries, minimum=0)
        _count("batch_size", batch_size)
        _count("max_concurrency", max_concurrency)
        _positive("poll_interval", poll_interval)
        _positive("wait_timeout", wait_timeout)
        if not isinstance(progress, bool):
            raise ConfigurationError(
                f"lamini option progress={progress!r} is invalid: it must be True or False"
            )
        credentials = resolve_credentials(api_key, api_url, config)
        self.api_url = credentials.url
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        retry = RetryPolicy(max_retries, float(backoff_base), float(backoff_max), float(max_retry_wait))
        self._transport = Transport(credentials, float(timeout), retry)
        self.poll_interval = float(poll_interval)
        self.wait_timeout = float(wait_timeout)
        self.progress = progress
        #: The tuning job behind the current model, once train() (or evaluate()) has found one.
        self.tuning_job: TuningJob | None = None

    def __repr__(self) -> str:
        return f"LaminiRunner(model_name={self.model_name!r}, api_url={self.api_url!r})"

    @property
    def timeout(self) -> float:
        return self._transport.timeout

    @property
    def retry(self) -> RetryPolicy:
        return self._transport.retry

    # ----------------------------------------------------------------- the contract
    def complete(self, request: CompletionRequest) -> list[Completion]:
        return run_sync(lambda: self.acomplete(request))

    async def acomplete(self, request: CompletionRequest) -> list[Completion]:
        wire_type = None
        if request.output is not None:
            output = request.output
            wire_type = (
                lamini_output_type(output.output_type)
                if output.output_type is not None
                else lamini_schema_output_type(output)
            )
        prompts = request.prompts
        chunks = [
            range(i, min(i + self.batch_size, len(prompts))) for i in range(0, len(prompts), self.batch_size)
        ]
        gate = asyncio.Semaphore(self.max_concurrency)
        timeout = aiohttp.ClientTimeout(total=None)  # the transport times each request itself
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def run(chunk: range) -> list[Completion]:
                async with gate:
                    return await self._complete_chunk(
                        session, [prompts[i] for i in chunk], request, wire_type
                    )

            outcomes = await asyncio.gather(*(run(c) for c in chunks), return_exceptions=True)
        return collect_batch(chunks, outcomes, whole_call_errors=_WHOLE_CALL_ERRORS)

    def stream_completion(self, request: CompletionRequest) -> Iterator[str]:
        """Lamini's completions endpoint is not incremental: the whole text comes as one piece."""
        for completion in self.complete(request):
            yield completion.text

    def train_examples(self, examples: list[TrainingExample], options: TrainOptions) -> TrainResult:
        """Tune ``model_name`` on Lamini and wait; afterwards ``model_name`` is the tuned model."""
        api = LaminiApi(self._transport)
        result, job = train_on_lamini(
            api,
            self.model_name,
            examples,
            options,
            poll_interval=self.poll_interval,
            progress=self.progress,
            wait_timeout=self.wait_timeout,
        )
        self.tuning_job = job
        self.model_name = result.model_name
        return result

    def wait_for_job(self, job_id: str | int, *, wait_timeout: float | None = None) -> TrainResult:
        """Wait again for tuning job ``job_id`` (after a TuningTimeoutError, or from another session).

        Polls as ``train()`` does, for at most ``wait_timeout`` seconds (default: the
        runner's); afterwards ``model_name`` is the tuned model. Ctrl-C stops waiting and
        leaves the job running.
        """
        if isinstance(job_id, bool) or not isinstance(job_id, str | int) or not str(job_id).strip():
            raise ConfigurationError(f"job_id={job_id!r} is invalid: give the id a tuning job was given")
        timeout = self.wait_timeout if wait_timeout is None else wait_timeout
        _positive("wait_timeout", timeout)
        job = TuningJob(str(job_id).strip(), self.model_name, "UNKNOWN")
        result, job = await_job(
            LaminiApi(self._transport),
            job,
            poll_interval=self.poll_interval,
            progress=self.progress,
            wait_timeout=float(timeout),
            cancel_on_interrupt=False,
        )
        self.tuning_job = job
        self.model_name = result.model_name
        return result

    def evaluate_examples(self, examples: list[TrainingExample]) -> EvalResult:
        """Score the tuning job's eval results (``/v1/train/jobs/{id}/eval``) against ``examples``."""
        api = LaminiApi(self._transport)
        if self.tuning_job is None or self.tuning_job.model_name != self.model_name:
            found = find_job(api, self.model_name)
            if found is None:
                raise TrainingError(
                    f"nothing to evaluate: no Lamini tuning job produced model {self.model_name!r}. "
                    "Call train() first, or load the tuned model's name that a completed job gave"
                )
            self.tuning_job = found
        return evaluate_job(api, self.tuning_job, examples)

    # ----------------------------------------------------------------- helpers
    async def _complete_chunk(
        self,
        session: aiohttp.ClientSession,
        prompts: list[str],
        request: CompletionRequest,
        wire_type: dict[str, str] | None,
    ) -> list[Completion]:
        """One ``/v1/completions`` call. Lamini reports neither token counts nor why a text ended."""
        batched = len(prompts) > 1
        body = completion_body(
            self.model_name, prompts if batched else prompts[0], wire_type, request.max_new_tokens
        )
        reply = await self._transport.call(session, "POST", "/v1/completions", body)
        items = reply if batched else [reply]
        if not isinstance(items, list) or len(items) != len(prompts):
            raise BackendError(
                f"Lamini answered {len(prompts)} prompts with {_shape(reply)}; expected "
                f"{'a list of ' + str(len(prompts)) + ' results' if batched else 'one object'}",
                status_code=200,
            )
        if wire_type is not None:
            return [
                Completion(json.dumps(unflatten(item) if isinstance(item, dict) else item)) for item in items
            ]
        return [Completion(_text(item, request.config.stop)) for item in items]


def completion_body(
    model_name: str, prompt: str | list[str], output_type: dict[str, str] | None, max_new_tokens: int
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/completions``, as ``lamini``'s ``Completion.make_llm_req_map`` builds it.

    (Built here rather than through that method, whose object would hold the key
    and the parsed ``~/.lamini`` config, and which prints advice for batches over 20.)
    """
    return {
        "model_name": model_name,
        "prompt": prompt,
        "output_type": dict(output_type) if output_type is not None else None,
        "max_tokens": None,
        "max_new_tokens": max_new_tokens,
    }


def _text(item: Any, stop: tuple[str, ...]) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("output"), str):
        raise BackendError(
            f'Lamini answered a text completion with {_shape(item)}; expected {{"output": "<text>"}}',
            status_code=200,
        )
    return cut_at_stop(item["output"], stop)


def _shape(value: Any) -> str:
    text = json.dumps(value)[:80] if not isinstance(value, bytes) else repr(value[:80])
    return f"{type(value).__name__} {text}"


def _positive(name: str, value: object, allow_zero: bool = False) -> None:
    check_seconds("lamini", name, value, allow_zero)


def _count(name: str, value: object, minimum: int = 1) -> None:
    check_count("lamini", name, value, minimum)
