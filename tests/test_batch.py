"""``llmrun batch`` in one process: inputs, per-row errors, resume after a kill, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmrun.batch import run_batch
from llmrun.batch.parts import PartStore, read_output
from llmrun.cli import main
from llmrun.errors import ConfigurationError, InvalidInputError, SchemaError
from llmrun.testing.fake import FakeRunner

APP = """
from llmrun import Context, Type


class Answer(Type):
    answer: str = Context("a short answer")
    confidence: float = Context("how sure, 0 to 1", ge=0, le=1)


class Question(Type):
    question: str = Context("a question")


NotAType = dict
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A module ``batch_app`` (Answer, Question) importable here and in subprocesses, as a user's would be."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "batch_app.py").write_text(APP)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    import batch_app

    yield batch_app
    sys.modules.pop("batch_app", None)


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def questions(n: int) -> list[dict[str, str]]:
    return [{"question": f"What is {i} plus {i}?", "id": str(i)} for i in range(n)]


def test_typed_rows_in_order_with_malformed_rows_recorded(tmp_path: Path, app: object) -> None:
    rows: list[object] = [
        *questions(5),
        "not json {",
        [1, 2],
        {"other": "x"},
        {"question": 7},
        {"question": " "},
    ]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "out.jsonl"
    summary = run_batch(
        "m", source, out, backend="fake", output_type="batch_app:Answer", input_key="question", progress=False
    )
    records = read_output(out)
    assert [r["index"] for r in records] == list(range(10))
    assert (summary.rows, summary.errors, summary.skipped) == (10, 5, 0)
    fake = FakeRunner("m")
    expected = fake.run([q["question"] for q in questions(5)], app.Answer)  # type: ignore[attr-defined]
    for record, result in zip(records[:5], expected, strict=True):
        assert record["error"] is None
        assert app.Answer.model_validate(record["output"]) == result.output  # type: ignore[attr-defined]
        assert record["finish_reason"] == "stop"
        assert record["prompt_tokens"] == result.usage.prompt_tokens
    reasons = [r["error"] for r in records[5:]]
    assert "line 6 is not valid JSON" in reasons[0]
    assert "is a list, not a JSON object" in reasons[1]
    assert "no 'question' field" in reasons[2]
    assert "'question' is a int, not text" in reasons[3]
    assert "'question' is empty" in reasons[4]
    assert all(r["output"] is None for r in records[5:])
    assert not PartStore(out).folder.exists()


def test_csv_in_parquet_out_text_rows(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    source = tmp_path / "rows.csv"
    source.write_text('input,id\n"Once upon a time",1\nHello there,2\n\nonly-one-cell\n')
    out = tmp_path / "out.parquet"
    run_batch("m", source, out, backend="fake", progress=False, generation={"max_new_tokens": 5})
    table = pq.read_table(out)
    assert table.column_names == [
        "index",
        "output",
        "error",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
    ]
    records = table.to_pylist()
    expected = FakeRunner("m").run(["Once upon a time", "Hello there"], max_new_tokens=5)
    assert [r["output"] for r in records[:2]] == [e.output for e in expected]
    assert records[2]["error"] == "malformed row: line 5 has 1 cells, the header 2"


def test_parquet_in_with_input_type_gives_struct_output(tmp_path: Path, app: object) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    source = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "Why?"}, {"question": None}]), source)
    out = tmp_path / "out.parquet"
    run_batch(
        "m",
        source,
        out,
        backend="fake",
        input_type="batch_app:Question",
        output_type="batch_app:Answer",
        progress=False,
    )
    table = pq.read_table(out)
    assert pa.types.is_struct(table.schema.field("output").type)
    first, second = table.to_pylist()
    expected = FakeRunner("m").run(app.Question(question="Why?"), app.Answer)  # type: ignore[attr-defined]
    assert first["output"] == expected.output.model_dump()
    assert second["error"].startswith("malformed row: does not fit Question (question:")


def test_rows_the_model_cannot_answer_are_recorded_and_the_rest_answered(tmp_path: Path, app: object) -> None:
    def answer(prompt: str, request: object) -> str:
        if "3 plus" in prompt:
            return '{"answer": "x", "confidence": 7}'  # outside the schema (confidence <= 1)
        return '{"answer": "four", "confidence": 0.5}'

    runner = FakeRunner("m", responses=[answer] * 20)
    source = write_jsonl(tmp_path / "rows.jsonl", questions(6))
    out = tmp_path / "out.jsonl"
    summary = run_batch(
        runner,
        source,
        out,
        output_type=app.Answer,
        input_key="question",
        chunk_size=4,
        progress=False,  # type: ignore[attr-defined]
    )
    records = read_output(out)
    assert summary.errors == 1
    assert records[3]["error"].startswith("OutputValidationError: ")
    assert all(r["output"] == {"answer": "four", "confidence": 0.5} for i, r in enumerate(records) if i != 3)
    # the runner's BatchError kept the chunk's good rows: no row was asked twice
    assert [len(r.prompts) for r in runner.requests] == [4, 2]


def test_prompt_too_long_is_a_row_error_on_the_local_engine(tmp_path: Path, tiny_gpt_neox_dir: Path) -> None:
    source = write_jsonl(
        tmp_path / "rows.jsonl",
        [{"input": "Hello world"}, {"input": "word " * 2000}, {"input": "Once upon a time"}],
    )
    out = tmp_path / "out.jsonl"
    run_batch(
        str(tiny_gpt_neox_dir),
        source,
        out,
        device="cpu",
        progress=False,
        generation={"max_new_tokens": 4},
    )
    records = read_output(out)
    assert records[1]["error"].startswith("PromptTooLongError: the prompt has")
    assert records[0]["error"] is None
    assert records[2]["error"] is None
    assert 1 <= records[0]["completion_tokens"] <= 4
    assert records[0]["output"]


SLOW_JOB = """
import sys
from llmrun.batch import run_batch
from llmrun.testing.fake import FakeRunner
run_batch(FakeRunner("m", delay=0.4), sys.argv[1], sys.argv[2], output_type="batch_app:Answer",
          input_key="question", chunk_size=3, progress=False)
"""


def test_killed_job_resumes_with_every_row_exactly_once(tmp_path: Path, app: object) -> None:
    source = write_jsonl(tmp_path / "rows.jsonl", questions(30))
    out = tmp_path / "out.jsonl"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SLOW_JOB))
    job = subprocess.Popen([sys.executable, str(script), str(source), str(out)])
    store = PartStore(out)
    try:
        deadline = time.monotonic() + 120
        while (not store.exists() or len(store.done()) < 2) and time.monotonic() < deadline:
            assert job.poll() is None, "the job ended before it could be killed"
            time.sleep(0.05)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    done = store.done()
    assert 2 <= len(done) < 10
    assert not out.exists()

    with pytest.raises(ConfigurationError, match="unfinished job left its parts"):
        run_batch("m", source, out, backend="fake", output_type="batch_app:Answer", input_key="question")
    runner = FakeRunner("m")
    summary = run_batch(
        runner,
        source,
        out,
        output_type=app.Answer,  # type: ignore[attr-defined]
        input_key="question",
        chunk_size=3,
        resume=True,
        progress=False,
    )
    records = read_output(out)
    assert [r["index"] for r in records] == list(range(30))
    assert summary.skipped == 3 * len(done)
    assert sum(len(r.prompts) for r in runner.requests) == 30 - 3 * len(done)  # nothing redone
    fresh = tmp_path / "fresh.jsonl"
    run_batch("m", source, fresh, backend="fake", output_type="batch_app:Answer", input_key="question",
              chunk_size=3, progress=False)  # fmt: skip
    assert records == read_output(fresh)
    again = run_batch("m", source, out, backend="fake", resume=True, progress=False)  # already finished
    assert (again.rows, again.skipped) == (30, 30)


def test_resume_with_other_settings_is_refused(tmp_path: Path, app: object) -> None:
    source = write_jsonl(tmp_path / "rows.jsonl", questions(4))
    out = tmp_path / "out.jsonl"
    PartStore(out).start({"model": "m", "chunk_size": 2})
    with pytest.raises(ConfigurationError, match=r"other settings \(.*chunk_size.*\)"):
        run_batch("m", source, out, backend="fake", input_key="question", resume=True, progress=False)


def test_bad_input_fails_before_any_work(tmp_path: Path, app: object) -> None:
    source = write_jsonl(tmp_path / "rows.jsonl", questions(2))
    out = tmp_path / "out.jsonl"
    out.write_text("earlier results\n")
    with pytest.raises(ConfigurationError, match="exists; pass --overwrite"):
        run_batch("m", source, out, backend="fake")
    with pytest.raises(ConfigurationError, match="either --overwrite or --resume"):
        run_batch("m", source, out, backend="fake", overwrite=True, resume=True)
    fresh = tmp_path / "new.jsonl"
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"output_type": "no_such_module:Answer"}, ConfigurationError, "cannot import the output type"),
        ({"output_type": "batch_app:Missing"}, ConfigurationError, "batch_app has no Missing"),
        ({"output_type": "batch_app:NotAType"}, SchemaError, "cannot be used"),
        ({"output_type": "Answer"}, ConfigurationError, "module:Class"),
        ({"generation": {"max_new_tokens": 0}}, InvalidInputError, "max_new_tokens"),
        ({"generation": {"beams": 2}}, InvalidInputError, "unknown generation option"),
        ({"chunk_size": 0}, ConfigurationError, "chunk_size"),
        ({"ray": "127.0.0.1:1"}, ConfigurationError, "cannot reach the Ray cluster at 127.0.0.1:1"),
        ({"ray": "nonsense"}, ConfigurationError, "not host:port"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            run_batch("m", source, fresh, backend="fake", progress=False, **options)  # type: ignore[arg-type]
        assert not fresh.exists()
        assert not PartStore(fresh).folder.exists()
    with pytest.raises(InvalidInputError, match="unknown output format"):
        run_batch("m", source, tmp_path / "out.txt", backend="fake")
    with pytest.raises(InvalidInputError, match="unknown input format"):
        run_batch("m", tmp_path / "rows.txt", fresh, backend="fake")
    with pytest.raises(InvalidInputError, match="cannot read the batch input"):
        run_batch("m", tmp_path / "missing.jsonl", fresh, backend="fake")
    assert not PartStore(fresh).folder.exists()


def test_overwrite_replaces_the_output(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "rows.jsonl", [{"input": "a b c"}])
    out = tmp_path / "out.jsonl"
    out.write_text("earlier results\n")
    run_batch("m", source, out, backend="fake", overwrite=True, progress=False)
    assert [r["index"] for r in read_output(out)] == [0]


def test_cli_batch(tmp_path: Path, app: object, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_jsonl(tmp_path / "rows.jsonl", questions(3))
    out = tmp_path / "out.jsonl"
    argv = ["batch", "m", str(source), "--output", str(out), "--backend", "fake", "--input-key", "question"]
    assert main([*argv, "--output-type", "batch_app:Answer", "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows"], summary["errors"]) == (3, 0)
    assert main(argv) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--output-type", "batch_app:Nope"]) == 1
    assert "batch_app has no Nope" in capsys.readouterr().err


def interrupt_after(total: int) -> Callable[[int], None]:
    """A progress callable that stops the job (as Ctrl-C would) once ``total`` rows are saved."""
    seen: list[int] = []

    def report(rows: int) -> None:
        seen.append(rows)
        if sum(seen) >= total:
            raise KeyboardInterrupt

    return report


def test_interrupted_after_the_last_part_a_resume_only_assembles(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "rows.jsonl", [{"input": f"row {i}"} for i in range(6)])
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_batch("m", source, out, backend="fake", chunk_size=2, progress=interrupt_after(6))
    assert PartStore(out).done() == {0, 1, 2}
    assert not out.exists()
    runner = FakeRunner("m")
    summary = run_batch(runner, source, out, chunk_size=2, resume=True, progress=False)
    assert (summary.rows, summary.skipped, runner.requests) == (6, 6, [])
    assert [r["index"] for r in read_output(out)] == list(range(6))


def test_parquet_outputs_without_one_arrow_type_are_written_as_json_text(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from llmrun.batch.parts import write_output

    base = {"error": None, "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1}
    records = [{"index": 0, "output": {"v": 1}, **base}, {"index": 1, "output": {"v": "one"}, **base}]
    write_output(tmp_path / "out.parquet", records)
    assert [r["output"] for r in pq.read_table(tmp_path / "out.parquet").to_pylist()] == [
        '{"v": 1}',
        '{"v": "one"}',
    ]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
