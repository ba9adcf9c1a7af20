"""FunctionRunner: answers from a function per prompt, streams from a per-chunk script."""

from __future__ import annotations

import pytest

from llmrun import Context, Type
from llmrun.errors import InvalidInputError, OutputValidationError, ServiceUnavailableError
from llmrun.runner import Completion, CompletionRequest, Usage
from llmrun.testing import FunctionRunner, stream_script


class Answer(Type):
    answer: str = Context("a short factual answer")
    confidence: float = Context("how sure the answer is, 0 to 1", ge=0, le=1)


def test_the_function_sees_each_prompt_and_the_request() -> None:
    seen: list[tuple[str, int, type[Type] | None]] = []

    def answer(prompt: str, request: CompletionRequest) -> str:
        seen.append((prompt, request.max_new_tokens, request.output_type))
        return prompt.upper()

    runner = FunctionRunner(answer)
    assert runner(["a", "b"], max_new_tokens=7) == ["A", "B"]
    assert seen == [("a", 7, None), ("b", 7, None)]
    assert runner.last_request is not None
    assert runner.last_request.prompts == ("a", "b")


@pytest.mark.parametrize(
    "value",
    [
        Answer(answer="Paris", confidence=0.9),
        {"answer": "Paris", "confidence": 0.9},
        '{"answer": "Paris", "confidence": 0.9}',
        Completion('{"answer": "Paris", "confidence": 0.9}'),
    ],
)
def test_typed_answers_as_a_type_a_json_value_text_or_a_completion(value: object) -> None:
    runner = FunctionRunner(lambda prompt, request: value)
    assert runner("Q?", output_type=Answer) == Answer(answer="Paris", confidence=0.9)


def test_a_completion_sets_finish_reason_and_usage() -> None:
    runner = FunctionRunner(lambda p, r: Completion("cut", "length", Usage(3, 1)))
    result = runner.run("p")
    assert (result.text, result.finish_reason, result.usage.total_tokens) == ("cut", "length", 4)


def test_errors_are_raised_and_bad_values_are_clear() -> None:
    def down(prompt: str, request: CompletionRequest) -> str:
        raise ServiceUnavailableError("503 from the function")

    with pytest.raises(ServiceUnavailableError, match="503"):
        FunctionRunner(down)("p")
    with pytest.raises(InvalidInputError, match="returned a dict for a text request"):
        FunctionRunner(lambda p, r: {"a": 1})("p")
    with pytest.raises(OutputValidationError):
        FunctionRunner(lambda p, r: {"answer": "x", "confidence": 7})("p", output_type=Answer)
    with pytest.raises(InvalidInputError, match="needs a function, a stream_function, or both"):
        FunctionRunner()
    with pytest.raises(InvalidInputError, match="must be callable"):
        FunctionRunner("text")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="chunk_size"):
        FunctionRunner(lambda p, r: "", chunk_size=0)


async def test_async_functions_work_from_sync_and_async_calls() -> None:
    async def answer(prompt: str, request: CompletionRequest) -> str:
        return f"async {prompt}"

    runner = FunctionRunner(answer)
    assert await runner.agenerate("p") == "async p"
    assert await runner.agenerate(["a", "b"]) == ["async a", "async b"]


def test_sync_call_of_an_async_function() -> None:
    async def answer(prompt: str, request: CompletionRequest) -> str:
        return f"async {prompt}"

    assert FunctionRunner(answer)("p") == "async p"


def test_stream_follows_the_script_and_fails_on_chunk_k() -> None:
    script = stream_script("hello world", size=3, fail_at=2)
    runner = FunctionRunner(stream_function=lambda p, r: script)
    pieces: list[str] = []
    with pytest.raises(ServiceUnavailableError, match="chunk 2"):
        pieces.extend(runner.stream("p"))
    assert pieces == ["hel", "lo "]


def test_stream_script_with_a_chosen_error_and_no_failure() -> None:
    assert stream_script("abcdef", size=4) == ["abcd", "ef"]
    boom = TimeoutError("stalled")
    assert stream_script("abcdef", size=2, fail_at=1, error=boom) == ["ab", boom]
    with pytest.raises(InvalidInputError, match="fail_at"):
        stream_script("x", fail_at=-1)


def test_without_a_stream_function_streams_chunk_the_answer_and_vice_versa() -> None:
    runner = FunctionRunner(lambda p, r: "abcdefghij", chunk_size=4)
    assert list(runner.stream("p")) == ["abcd", "efgh", "ij"]
    joined = FunctionRunner(stream_function=lambda p, r: ["ab", "cd"])
    assert joined("p") == "abcd"
    failing = FunctionRunner(stream_function=lambda p, r: stream_script("abcd", size=1, fail_at=1))
    with pytest.raises(ServiceUnavailableError):
        failing("p")


def test_a_bad_chunk_is_a_clear_error() -> None:
    runner = FunctionRunner(stream_function=lambda p, r: ["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="yielded a int as chunk 1"):
        list(runner.stream("p"))
