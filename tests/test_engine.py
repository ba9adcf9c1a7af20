"""The local engine: one prepared decoder for every caller, a cancellable stream, and a step-level batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import llmrun
from llmrun import Context, GenerationConfig, Type
from llmrun.backends.local import LocalRunner, decode
from llmrun.backends.local.engine import LocalEngine
from llmrun.backends.local.evaluation import greedy_generate
from llmrun.data import load_examples
from llmrun.errors import GenerationError, InvalidInputError, PromptTooLongError
from llmrun.runner import CompletionRequest, OutputSpec

PROMPTS = [
    "The highest mountain in the world is",
    "Hello",
    "1, 2, 3, 4,",
    "Question: Why is the sky blue? Answer:",
    "Once upon a time there was a",
]


class Answer(Type):
    answer: str = Context("a short answer")
    score: int = Context("a score", ge=1, le=5)


@pytest.fixture(scope="module", params=["gpt_neox", "llama"])
def runner(request: pytest.FixtureRequest, tiny_checkpoint_dirs: dict[str, Path]) -> LocalRunner:
    loaded = llmrun.load(str(tiny_checkpoint_dirs[request.param]), backend="local", device="cpu")
    assert isinstance(loaded, LocalRunner)
    return loaded


def alone(
    engine: LocalEngine, prompt: str, config: GenerationConfig, output: OutputSpec | None = None
) -> Any:
    return engine.generate(CompletionRequest((prompt,), config, output))[0]


# ----------------------------------------------------------------------------- stream


def test_an_abandoned_stream_holds_no_lock_and_computes_nothing(runner: LocalRunner) -> None:
    engine = runner.engine
    stream = runner.stream(PROMPTS[0], max_new_tokens=400)
    first = next(stream)
    assert isinstance(first, str)
    # between reads nothing runs and the model is free (seen from another thread: the lock is reentrant)
    free: list[bool] = []

    def probe() -> None:
        free.append(engine.lock.acquire(blocking=False))
        if free[-1]:
            engine.lock.release()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert free == [True]
    start = time.perf_counter()
    assert runner.run(PROMPTS[1], max_new_tokens=1).usage.completion_tokens == 1
    assert time.perf_counter() - start < 0.5
    del stream  # dropping it frees its batch


def test_closing_a_stream_stops_it(runner: LocalRunner) -> None:
    engine = runner.engine
    request = CompletionRequest((PROMPTS[0],), GenerationConfig(max_new_tokens=50))
    stream = engine.stream(request)
    pieces = [next(stream)]
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)
    full = alone(engine, PROMPTS[0], request.config).text
    assert full.startswith("".join(pieces))


def test_stream_joins_to_the_completion_with_stop_and_typed(runner: LocalRunner) -> None:
    engine = runner.engine
    config = GenerationConfig(max_new_tokens=16)
    full = alone(engine, PROMPTS[3], config).text
    stop = full[len(full) // 2 :][:2] or "x"
    stopped = GenerationConfig(max_new_tokens=16, stop=(stop,))
    expected = alone(engine, PROMPTS[3], stopped).text
    assert "".join(engine.stream(CompletionRequest((PROMPTS[3],), stopped))) == expected
    typed = GenerationConfig(max_new_tokens=64)
    spec = OutputSpec.for_type(Answer)
    streamed = "".join(engine.stream(CompletionRequest((PROMPTS[0],), typed, spec)))
    assert streamed == alone(engine, PROMPTS[0], typed, spec).text


def test_stream_checks_the_prompt_before_the_first_read(runner: LocalRunner) -> None:
    with pytest.raises(PromptTooLongError):
        runner.stream("word " * 2000, max_new_tokens=4)


# ----------------------------------------------------------------------------- batch


def test_rows_joining_and_leaving_between_steps_get_the_tokens_they_get_alone(runner: LocalRunner) -> None:
    engine = runner.engine
    short = GenerationConfig(max_new_tokens=3)
    long = GenerationConfig(max_new_tokens=12)
    typed = GenerationConfig(max_new_tokens=48)
    spec = OutputSpec.for_type(Answer)
    batch = engine.batch()
    first = batch.add(PROMPTS[0], long)
    second = batch.add(PROMPTS[1], short)
    batch.step()
    batch.step()
    third = batch.add(PROMPTS[2], long)  # joins two steps late
    fourth = batch.add(PROMPTS[3], typed, spec)  # a typed row in the same batch
    batch.step()
    if engine.prepared.path != "generic":
        assert batch.groups == 1  # the late rows share the running rows' forward
    fifth = batch.add(PROMPTS[4], long)
    doomed = batch.add(PROMPTS[4], long)
    batch.step()
    doomed.cancel()
    finished = []
    while batch.busy:
        finished += batch.step()
    assert doomed.completion is None
    assert doomed not in finished
    assert second.completion is not None
    assert second.completion.finish_reason == "length"
    for row, prompt, config, output in [
        (first, PROMPTS[0], long, None),
        (second, PROMPTS[1], short, None),
        (third, PROMPTS[2], long, None),
        (fourth, PROMPTS[3], typed, spec),
        (fifth, PROMPTS[4], long, None),
    ]:
        assert row.completion == alone(engine, prompt, config, output), prompt
    assert isinstance(spec.parse(fourth.completion.text), Answer)  # type: ignore[union-attr]


def test_rows_with_their_own_sampling_state_keep_their_own_group(runner: LocalRunner) -> None:
    engine = runner.engine
    seeded = GenerationConfig(max_new_tokens=6, temperature=0.8, seed=3)
    penalised = GenerationConfig(max_new_tokens=6, repetition_penalty=1.3)
    batch = engine.batch()
    a = batch.add(PROMPTS[0], seeded)
    b = batch.add(PROMPTS[1], penalised)
    batch.run()
    assert a.completion == alone(engine, PROMPTS[0], seeded)
    assert b.completion == alone(engine, PROMPTS[1], penalised)


def test_batch_add_checks_rows_early(runner: LocalRunner) -> None:
    batch = runner.engine.batch()
    with pytest.raises(PromptTooLongError):
        batch.add("word " * 2000, GenerationConfig(max_new_tokens=4))
    with pytest.raises(InvalidInputError, match="GenerationConfig"):
        batch.add("hi", {"max_new_tokens": 4})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="outside the vocabulary"):
        batch.add([10**9], GenerationConfig(max_new_tokens=4))
    assert not batch.busy


def test_batch_close_cancels_every_row(runner: LocalRunner) -> None:
    batch = runner.engine.batch()
    rows = [batch.add(p, GenerationConfig(max_new_tokens=20)) for p in PROMPTS[:2]]
    batch.step()
    batch.close()
    assert all(r.cancelled and r.completion is None for r in rows)
    assert not batch.busy
    assert batch.step() == []


# ----------------------------------------------------------------------------- one engine for every caller


def test_evaluation_uses_the_runners_decoder_not_a_second_one(runner: LocalRunner) -> None:
    examples = load_examples([{"input": f"q{i}", "output": f"a{i}"} for i in range(6)])
    runner.evaluate_examples(examples)
    assert runner.model not in decode._PREPARED  # no weights prepared a second time


def test_evaluation_stops_on_the_engines_eos_set(tiny_gpt_neox_dir: Path) -> None:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt_neox_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_gpt_neox_dir)
    prompt = PROMPTS[0]
    batch = LocalEngine(model, tokenizer).batch()
    row = batch.add(prompt, GenerationConfig(max_new_tokens=4))
    batch.run()
    first_token = row.tokens[0]
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, first_token]
    engine = LocalEngine(model, tokenizer)
    assert first_token in engine.eos_token_ids
    assert alone(engine, prompt, GenerationConfig(max_new_tokens=4)).text == ""
    assert greedy_generate(engine, [prompt], 4) == [""]  # the same answer as the runner gives


def test_a_row_whose_grammar_fails_fails_alone(runner: LocalRunner) -> None:
    engine = runner.engine
    config = GenerationConfig(max_new_tokens=8)
    typed = GenerationConfig(max_new_tokens=48)
    batch = engine.batch()
    before = batch.add(PROMPTS[0], config)
    broken = batch.add(PROMPTS[1], typed, OutputSpec.for_type(Answer))
    after = batch.add(PROMPTS[2], config)
    assert broken.constraint is not None
    real_advance = broken.constraint.advance
    calls = {"n": 0}

    def advance_then_fail(tokens: Any) -> None:  # a forced grammar failure at its third token
        calls["n"] += 1
        if calls["n"] == 3:
            raise GenerationError("the grammar broke")
        real_advance(tokens)

    broken.constraint.advance = advance_then_fail
    finished = []
    while batch.busy:
        finished += batch.step()
    assert broken in finished
    assert isinstance(broken.error, GenerationError)
    with pytest.raises(GenerationError, match="the grammar broke"):
        broken.result()
    assert before.result() == alone(engine, PROMPTS[0], config)
    assert after.result() == alone(engine, PROMPTS[2], config)


def test_rows_can_be_awaited_from_another_thread(runner: LocalRunner) -> None:
    engine = runner.engine
    config = GenerationConfig(max_new_tokens=6)
    batch = engine.batch()
    row = batch.add(PROMPTS[3], config)
    stepper = threading.Thread(target=batch.run)
    stepper.start()
    assert row.wait(timeout=30)
    stepper.join()
    assert row.result() == alone(engine, PROMPTS[3], config)
    cancelled = batch.add(PROMPTS[0], config)
    cancelled.cancel()
    assert cancelled.wait(timeout=0)
    with pytest.raises(GenerationError, match="cancelled"):
        cancelled.result()


def test_evaluation_honours_quantize(tiny_gpt_neox_dir: Path) -> None:
    int8 = llmrun.load(str(tiny_gpt_neox_dir), backend="local", device="cpu", quantize="int8")
    assert isinstance(int8, LocalRunner)
    prompts = PROMPTS[:3]
    # evaluation's answers are the int8 runner's own, through its one prepared (int8) decoder
    assert greedy_generate(int8.engine, prompts, 6) == int8(prompts, max_new_tokens=6)
    int8.evaluate_examples(load_examples([{"input": f"q{i}", "output": f"a{i}"} for i in range(6)]))
    assert int8.model not in decode._PREPARED
    assert int8.engine.prepared.quantize == "int8"
