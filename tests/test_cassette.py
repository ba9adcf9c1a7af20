"""Cassettes: record completions through the runner contract, replay them with no network and no model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import llmrun
from llmrun import BasicModelRunner, Context, GenerationConfig, LLMEngine, Type
from llmrun.errors import (
    BatchError,
    CassetteError,
    CassetteMissError,
    ConfigurationError,
    InvalidInputError,
    ServiceUnavailableError,
)
from llmrun.runner import Completion, CompletionRequest
from llmrun.testing import CassetteRunner, FakeRunner, FunctionRunner, cassette, override


class Question(Type):
    question: str = Context("a question about the world")


class Answer(Type):
    answer: str = Context("a short factual answer")
    confidence: float = Context("how sure the answer is, 0 to 1", ge=0, le=1)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_record_then_replay_without_building_the_runner(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    with cassette(path, mode="record"):
        runner = llmrun.load("fake-model", backend="fake", seed=1)
        assert isinstance(runner, CassetteRunner)
        assert runner.backend_name == "fake"
        text = runner("Q: hello? A:")
        typed = runner(Question(question="2+2?"), output_type=Answer)
        batch = runner(["a", "b"], max_new_tokens=5)
    built: list[object] = []
    with override(lambda spec: built.append(spec) or FakeRunner(seed=99)), cassette(path, mode="replay"):
        again = llmrun.load("fake-model", backend="fake", seed=1)
        assert again("Q: hello? A:") == text
        assert again(Question(question="2+2?"), output_type=Answer) == typed
        assert again("b", max_new_tokens=5) == batch[1]  # a batch recorded once replays one prompt at a time
        assert again(["b", "a"], max_new_tokens=5) == batch[::-1]
    assert built == []  # replay never built the real runner (nor asked the outer override)


def test_file_is_sorted_json_lines_and_rerecording_is_byte_stable(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"

    def record() -> bytes:
        with cassette(path, mode="record"):
            runner = llmrun.load("m", backend="fake")
            runner(["zeta", "alpha"])
            runner(Question(question="q"), output_type=Answer, max_new_tokens=40)
        return path.read_bytes()

    first = record()
    assert record() == first
    raw = first.decode().splitlines()
    assert len(raw) == 3  # one completion per line
    assert raw == sorted(raw)
    for line in raw:
        assert line == json.dumps(json.loads(line), sort_keys=True, ensure_ascii=False)
    typed = next(row for row in lines(path) if row["output_schema"] is not None)
    assert typed["backend"] == "fake"
    assert typed["model"] == "m"
    assert typed["settings"]["max_new_tokens"] == 40  # type: ignore[index]
    assert typed["output_schema"]["properties"]["answer"]  # type: ignore[index]
    assert set(typed) == {
        "backend",
        "model",
        "prompt",
        "output_schema",
        "settings",
        "text",
        "finish_reason",
        "usage",
    }


def test_replay_miss_names_the_request_the_file_and_how_to_rerecord(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    with cassette(path, mode="record"):
        llmrun.load("m", backend="fake")("Q: recorded", max_new_tokens=8)
    with cassette(path, mode="replay"):
        runner = llmrun.load("m", backend="fake")
        with pytest.raises(CassetteMissError) as caught:
            runner("Q: recorded", max_new_tokens=9)
    message = str(caught.value)
    assert str(path) in message
    assert "'Q: recorded'" in message
    assert "backend 'fake'" in message
    assert "settings.max_new_tokens" in message  # what differs from the nearest recording
    assert "mode='record'" in message
    assert "--llmrun-cassette-mode=record" in message
    assert caught.value.key["prompt"] == "Q: recorded"
    with (
        cassette(tmp_path / "none.jsonl", mode="replay"),
        pytest.raises(CassetteMissError, match="does not exist"),
    ):
        llmrun.load("m", backend="fake")("x")


def test_auto_replays_hits_and_records_only_misses(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    with cassette(path, mode="record"):
        llmrun.load("m", backend="fake")("known")
    calls: list[tuple[str, ...]] = []

    def answer(prompt: str, request: object) -> str:
        calls.append((prompt,))
        return f"fresh {prompt}"

    with override(lambda spec: FunctionRunner(answer, model_name=spec.model)), cassette(path, mode="auto"):
        runner = llmrun.load("m", backend="fake")
        out = runner(["known", "new"])
    assert calls == [("new",)]
    assert out[1] == "fresh new"
    assert out[0] != "fresh known"
    assert {row["prompt"] for row in lines(path)} == {"known", "new"}


def test_auto_batch_partly_failing_keeps_the_callers_item_numbers_and_records_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tape.jsonl"
    with cassette(path, mode="record"):
        recorded = llmrun.load("m", backend="fake")("a")

    class HalfDown(FunctionRunner):
        def complete(self, request: CompletionRequest) -> list[Completion]:
            assert request.prompts == ("b", "c")  # only the prompts not in the cassette
            down = ServiceUnavailableError("503")
            raise BatchError.of({1: down}, [Completion(" B"), None])

    with (
        override(lambda spec: HalfDown(lambda p, r: ""), backend="fake"),
        cassette(path, mode="auto"),
        pytest.raises(BatchError) as caught,
    ):
        llmrun.load("m", backend="fake")(["a", "b", "c"])
    assert caught.value.failed == [2]
    assert str(caught.value.failures[2]) == "item 2: 503"
    assert caught.value.results[:2] == [recorded, " B"]
    assert {row["prompt"] for row in lines(path)} == {"a", "b"}  # the answer it got is recorded


def test_auto_says_why_it_built_the_real_runner_when_that_fails(tmp_path: Path) -> None:
    def no_key(spec: object) -> FakeRunner:
        raise ConfigurationError("no Lamini key found")

    with override(no_key), cassette(tmp_path / "tape.jsonl", mode="auto"):
        runner = llmrun.load("m", backend="lamini")  # not built yet
        with pytest.raises(ConfigurationError) as caught:
            runner("not recorded")
    assert any("had no recording of a request" in note for note in caught.value.__notes__)


def test_auto_builds_nothing_when_everything_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    with cassette(path, mode="record"):
        llmrun.load("m", backend="fake")("known")
    before = path.read_bytes()
    built: list[object] = []
    with override(lambda spec: built.append(spec) or FakeRunner()), cassette(path, mode="auto"):
        llmrun.load("m", backend="fake")("known")
    assert built == []
    assert path.read_bytes() == before


def test_repeated_calls_replay_in_order_and_the_last_repeats(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    fake = FakeRunner(responses=["one", "two", "two"])
    with cassette(path, mode="record") as tape:
        runner = tape.wrap(fake)
        assert [runner("same") for _ in range(3)] == ["one", "two", "two"]
    assert [row.get("n", 0) for row in lines(path)] == [0, 1]  # trailing repeats collapse
    with cassette(path, mode="replay") as tape:
        runner = tape.wrap(FakeRunner())
        assert [runner("same") for _ in range(4)] == ["one", "two", "two", "two"]


def test_streams_keep_their_chunks(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    with cassette(path, mode="record") as tape:
        chunks = list(tape.wrap(FakeRunner()).stream("tell me"))
    assert len(chunks) > 1
    assert lines(path)[0]["chunks"] == chunks
    with cassette(path, mode="replay") as tape:
        replayed = tape.wrap(FakeRunner(seed=5))
        assert list(replayed.stream("tell me")) == chunks
        assert replayed("tell me") == "".join(chunks)


def test_keys_in_settings_and_env_are_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret, env_secret = "sk-live-abcdef123456", "tok-from-env-987654"
    monkeypatch.setenv("MYCLOUD_API_TOKEN", env_secret)
    path = tmp_path / "tape.jsonl"

    def leaky(prompt: str, request: object) -> str:
        return f"my key is {secret} and {env_secret}"

    with override(lambda spec: FunctionRunner(leaky, model_name=spec.model)), cassette(path, mode="record"):
        runner = llmrun.load("m", backend="lamini", api_key=secret, config={"production.key": secret})
        assert secret in runner("hello")  # the caller still gets the real answer
    written = path.read_text()
    assert secret not in written
    assert env_secret not in written
    assert "<redacted>" in written
    assert "Authorization" not in written
    assert "Bearer" not in written
    assert "api_key" not in written


def test_facades_and_async_go_through_the_cassette(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    with cassette(path, mode="record"):
        first = BasicModelRunner("m", backend="fake")("hi")
        second = LLMEngine(id="e", model_name="m", backend="fake")(Question(question="q"), output_type=Answer)
    with cassette(path, mode="replay"):
        assert BasicModelRunner("m", backend="fake")("hi") == first
        assert (
            LLMEngine(id="e", model_name="m", backend="fake")(Question(question="q"), output_type=Answer)
            == second
        )


async def test_async_record_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    with cassette(path, mode="record"):
        text = await llmrun.load("m", backend="fake").agenerate("async hi")
    with cassette(path, mode="replay"):
        assert await llmrun.load("m", backend="fake").agenerate("async hi") == text


def test_generation_settings_from_the_runner_are_part_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    with cassette(path, mode="record"):
        llmrun.load("m", backend="fake", generation=GenerationConfig(max_new_tokens=4))("p")
    with cassette(path, mode="replay"):
        llmrun.load("m", backend="fake", generation=GenerationConfig(max_new_tokens=4))("p")
        with pytest.raises(CassetteMissError):
            llmrun.load("m", backend="fake")("p")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json\n", "tape.jsonl:1: not valid JSON"),
        (
            '{"backend": "fake", "model": "m", "prompt": "p", "output_schema": null, "settings": {}, '
            '"text": "t", "finish_reason": "stop", "n": 1}\n',
            "lack n=0",
        ),
        ('{"backend": "fake"}\n', "lacks model, prompt"),
        (
            '{"backend": "fake", "model": "m", "prompt": "p", "output_schema": null, "settings": {}, '
            '"text": "t", "finish_reason": "maybe"}\n',
            "invalid finish_reason",
        ),
    ],
)
def test_a_broken_file_is_a_clear_error(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "tape.jsonl"
    path.write_text(content)
    with pytest.raises(CassetteError, match=match):
        cassette(path, mode="replay")


def test_bad_mode_and_path() -> None:
    with pytest.raises(InvalidInputError, match="mode='play' is invalid"):
        cassette("x.jsonl", mode="play")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="file path"):
        cassette("")


# ------------------------------------------------------------ a user's suite, through the pytest plugin
USER_TEST = """
    from __future__ import annotations

    import os

    import pytest

    import llmrun
    from llmrun import Context, Type
    from llmrun.testing.lamini_server import FakeLaminiServer

    KEY = "sk-user-secret-0123456789"


    class Answer(Type):
        answer: str = Context("a short factual answer")
        confidence: float = Context("how sure, 0 to 1", ge=0, le=1)


    @pytest.fixture
    def lamini_url():
        if os.environ.get("RECORDING") == "1":
            with FakeLaminiServer(api_key=KEY) as server:
                server.script("Q: capital of France? A:", " Paris")
                yield server.url
        else:
            yield "http://127.0.0.1:9"  # nothing listens here: a replay must not need the server


    @pytest.mark.llmrun_cassette
    def test_app(lamini_url):
        runner = llmrun.load("my-model", backend="lamini", api_key=KEY, api_url=lamini_url, max_retries=0)
        assert runner("Q: capital of France? A:") == " Paris"
        answer = runner("Q: capital of Italy?", output_type=Answer)
        assert isinstance(answer, Answer) and 0 <= answer.confidence <= 1
        assert runner(["a", "b"]) == [runner("a"), runner("b")]


    @pytest.mark.llmrun_cassette("tapes/named.jsonl")
    def test_named(llmrun_cassette):
        assert llmrun_cassette.path.name == "named.jsonl"
        seed = 1 if os.environ.get("RECORDING") == "1" else 2  # a replay answers what seed 1 said
        assert llmrun.load("m", backend="fake", seed=seed)("hello") == SEED_1_SAYS


    SEED_1_SAYS = llmrun.load("m", backend="fake", seed=1)("hello")
    assert llmrun.load("m", backend="fake", seed=2)("hello") != SEED_1_SAYS
"""


def run_user_suite(folder: Path, *args: str, recording: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECORDING": "1" if recording else "0"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_users_suite_records_against_the_fake_lamini_server_and_replays_with_it_gone(
    tmp_path: Path,
) -> None:
    pytest.importorskip("lamini", reason="the lamini backend needs the optional lamini client")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["llmrun.testing.fixtures"]\n')
    (tmp_path / "test_app.py").write_text(textwrap.dedent(USER_TEST))
    recorded = run_user_suite(tmp_path, "--llmrun-cassette-mode=record", recording=True)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    tape = tmp_path / "cassettes" / "test_app" / "test_app.jsonl"
    written = tape.read_text()
    assert "sk-user-secret" not in written
    assert "Authorization" not in written
    assert {row["backend"] for row in lines(tape)} == {"lamini"}

    replayed = run_user_suite(tmp_path, recording=False)  # default mode: replay; the URL is dead
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "2 passed" in replayed.stdout
    assert (tmp_path / "tapes" / "named.jsonl").is_file()
    assert tape.read_text() == written

    changed = textwrap.dedent(USER_TEST).replace('capital of France? A:") ==', 'capital of Spain? A:") !=')
    (tmp_path / "test_app.py").write_text(changed)
    missed = run_user_suite(tmp_path, recording=False)
    assert missed.returncode == 1
    assert "CassetteMissError" in missed.stdout
    assert "capital of Spain" in missed.stdout
    assert "--llmrun-cassette-mode=record" in missed.stdout


def test_local_model_recorded_then_replayed_with_the_checkpoint_gone(
    tiny_checkpoint_dirs: dict[str, Path], tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint_dirs["gpt_neox"], model)
    path = tmp_path / "tape.jsonl"
    with cassette(path, mode="record"):
        runner = llmrun.load(str(model), backend="local", device="cpu")
        text = runner("Q: hi? A:", max_new_tokens=6)
        typed = runner(Question(question="q"), output_type=Answer, max_new_tokens=48)
        chunks = list(runner.stream("Q: stream", max_new_tokens=6))
    shutil.rmtree(model)
    with cassette(path, mode="replay"):
        replayed = llmrun.load(str(model), backend="local", device="cpu")
        assert replayed("Q: hi? A:", max_new_tokens=6) == text
        assert replayed(Question(question="q"), output_type=Answer, max_new_tokens=48) == typed
        assert list(replayed.stream("Q: stream", max_new_tokens=6)) == chunks
    usage = next(row["usage"] for row in lines(path) if row["prompt"] == "Q: hi? A:")
    assert usage["prompt_tokens"] > 0  # type: ignore[index]  # the local backend's real counts are kept
    assert 0 < usage["completion_tokens"] <= 6  # type: ignore[index]
