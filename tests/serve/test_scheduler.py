"""The scheduler on its own: a row whose grammar fails errors alone; rows of other requests finish."""

from __future__ import annotations

import asyncio

import pytest

from llmrun.backends.local.engine import LocalEngine
from llmrun.generation import GenerationConfig
from llmrun.runner import CompletionRequest, OutputSpec
from llmrun.serve.errors import ServeError
from llmrun.serve.metrics import Metrics
from llmrun.serve.scheduler import Scheduler, completion_of

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_a_failing_row_fails_alone(serve_engine: LocalEngine) -> None:
    scheduler = Scheduler(serve_engine, max_batch_size=8, max_queue=8, metrics=Metrics())
    config = GenerationConfig(max_new_tokens=6)
    expected = serve_engine.generate(CompletionRequest(("Hello",), config))[0]

    async def scenario() -> tuple[object, object]:
        typed = scheduler.prepare(
            "Give JSON:", GenerationConfig(max_new_tokens=40), OutputSpec.for_schema(SCHEMA)
        )

        def broken(tokens: object) -> None:
            raise RuntimeError("grammar engine fault (injected)")

        typed.constraint.advance = broken  # fault injection: the row's grammar fails mid-decode
        plain = scheduler.prepare("Hello", config, None)
        [bad] = scheduler.submit([typed], stream=False, timeout_s=30)
        [good] = scheduler.submit([plain], stream=False, timeout_s=30)
        return await bad.events.get(), await good.events.get()

    scheduler.start()
    try:
        bad_event, good_event = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        scheduler.stop(1.0)
    with pytest.raises(ServeError, match="grammar engine fault") as caught:
        completion_of(bad_event)  # type: ignore[arg-type]
    assert caught.value.status == 500
    assert completion_of(good_event).text == expected.text  # type: ignore[arg-type]
    assert scheduler.depth == (0, 0)
