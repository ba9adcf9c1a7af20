"""Fine-tuning data loading: every source, every bad input, all-or-nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrun.data import load_csv, load_dataframe, load_examples, load_jsonlines
from llmrun.errors import DataError, InvalidInputError
from llmrun.schema import Context, Type, render_prompt
from llmrun.training import TrainingExample

ROWS = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "How many legs does a spider have?", "answer": "Eight"},
]


class Question(Type):
    question: str = Context("a question about the world")


class Answer(Type):
    answer: str = Context("a short factual answer")
    confidence: float = Context("how sure the answer is, 0 to 1", ge=0, le=1)


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ good inputs
def test_list_of_dicts_with_custom_keys() -> None:
    examples = load_examples(ROWS, input_key="question", output_key="answer")
    assert examples == [
        TrainingExample("What is the capital of France?", "Paris", " "),
        TrainingExample("How many legs does a spider have?", "Eight", " "),
    ]
    assert examples[0].target == " Paris"


def test_default_keys_are_input_and_output() -> None:
    examples = load_examples([{"input": "Q: 2+2? A:", "output": "4"}])
    assert examples == [TrainingExample("Q: 2+2? A:", "4", " ")]


def test_no_separator_when_prompt_ends_in_whitespace() -> None:
    examples = load_examples([{"input": "Question: why?\nAnswer:\n", "output": "Because."}])
    assert examples[0].separator == ""
    assert examples[0].target == "Because."


def test_template_applies_to_plain_prompts() -> None:
    examples = load_examples([{"input": "hi", "output": "hello"}], template="### Q: {input}\n### A:")
    assert examples[0].prompt == "### Q: hi\n### A:"


def test_typed_pairs_render_with_the_schema_renderer() -> None:
    pairs = [(Question(question="Highest mountain?"), Answer(answer="Everest", confidence=0.9))]
    (example,) = load_examples(pairs)
    assert example.prompt == render_prompt(Question(question="Highest mountain?"), Answer)
    assert example.completion == '{"answer":"Everest","confidence":0.9}'
    assert example.separator == ""
    assert Answer.model_validate_json(example.target) == pairs[0][1]


def test_typed_pair_with_string_input() -> None:
    (example,) = load_examples([("Highest mountain?", Answer(answer="Everest", confidence=1.0))])
    assert example.prompt == render_prompt("Highest mountain?", Answer)


def test_jsonlines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [json.dumps(r) for r in ROWS] + ["", "   "])
    examples = load_jsonlines(path, input_key="question", output_key="answer")
    assert [e.completion for e in examples] == ["Paris", "Eight"]


def test_jsonlines_accepts_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(r) for r in ROWS).encode() + b"\r\n")
    assert len(load_jsonlines(path, "question", "answer")) == 2


def test_csv_with_quoted_multiline_value(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text('question,answer,extra\n"Line one,\nline two",yes,x\nSecond?,no,y\n', encoding="utf-8")
    examples = load_csv(path, input_key="question", output_key="answer")
    assert [(e.prompt, e.completion) for e in examples] == [("Line one,\nline two", "yes"), ("Second?", "no")]


def test_dataframe() -> None:
    pd = pytest.importorskip("pandas", reason="pandas is a dev dependency")
    df = pd.DataFrame(ROWS)
    examples = load_dataframe(df, input_key="question", output_key="answer")
    assert [e.completion for e in examples] == ["Paris", "Eight"]
    assert load_examples(df, input_key="question", output_key="answer") == examples


# ------------------------------------------------------------------ bad inputs
def test_missing_key_names_item_and_fix() -> None:
    with pytest.raises(DataError) as info:
        load_examples([ROWS[0], {"question": "no answer here"}], input_key="question", output_key="answer")
    err = info.value
    assert err.line == 2
    assert "item 2" in str(err)
    assert "missing key 'answer'" in str(err)
    assert "output_key=" in str(err)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"question": "q", "answer": ""}', "'answer' is empty"),
        ('{"question": "   ", "answer": "a"}', "'question' is empty"),
        ('{"question": "q", "answer": null}', "'answer' is empty (null)"),
        ('{"question": "q", "answer": 42}', "'answer' must be a string, got int"),
        ('{"question": ["q"], "answer": "a"}', "'question' must be a string, got list"),
        ('{"question": "q", "answer": "a"', "not valid JSON"),
        ('["q", "a"]', "expected an object"),
        ('{"q": "x", "answer": "a"}', "missing key 'question'"),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [json.dumps(ROWS[0]), json.dumps(ROWS[1]), line])
    with pytest.raises(DataError) as info:
        load_jsonlines(path, input_key="question", output_key="answer")
    err = info.value
    assert err.source == str(path)
    assert err.line == 3
    assert f"{path}, line 3: " in str(err)
    assert problem in str(err)
    assert "nothing was loaded" in str(err)


def test_several_problems_are_listed_together(tmp_path: Path) -> None:
    lines = [json.dumps({"question": "q"})] * 8
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError) as info:
        load_jsonlines(path, "question", "answer")
    assert info.value.line == 1
    assert "line 2: missing key" in str(info.value)
    assert "and 3 more problem(s)" in str(info.value)


def test_bad_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        json.dumps(ROWS[0]).encode() + b"\n" + '{"question": "caf\u00e9?", "answer": "yes"}'.encode("latin-1")
    )
    with pytest.raises(DataError) as info:
        load_jsonlines(path, "question", "answer")
    assert info.value.line == 2
    assert "not valid UTF-8" in str(info.value)
    assert f"{path}, line 2" in str(info.value)


def test_bad_utf8_in_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"input,output\nfine,ok\n" + "caf\u00e9,no".encode("latin-1") + b"\n")
    with pytest.raises(DataError) as info:
        load_csv(path)
    assert info.value.line == 3
    assert "UTF-8" in str(info.value)


def test_csv_missing_column_is_line_one(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text("question,reply\nq,a\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_csv(path, input_key="question", output_key="answer")
    assert info.value.line == 1
    assert "no column 'answer'" in str(info.value)
    assert "'reply'" in str(info.value)


def test_csv_empty_value_and_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text('input,output\n"multi\nline",ok\nq,\nq,a,extra\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_csv(path)
    assert info.value.line == 4  # the quoted value spans lines 2-3
    assert "'output' is empty" in str(info.value)
    assert "line 5: the row has 3 field(s)" in str(info.value)


def test_dataframe_nan_and_missing_column() -> None:
    pd = pytest.importorskip("pandas", reason="pandas is a dev dependency")
    df = pd.DataFrame({"input": ["a", "b", "c"], "output": ["x", float("nan"), "z"]}, index=[10, 11, 12])
    with pytest.raises(DataError) as info:
        load_dataframe(df)
    assert info.value.line == 2
    assert "row 2" in str(info.value)
    assert "index 11" in str(info.value)
    with pytest.raises(DataError, match="no column 'answer'"):
        load_dataframe(df, output_key="answer")


def test_empty_sources_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no examples"):
        load_examples([])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no examples"):
        load_jsonlines(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("input,output\n", encoding="utf-8")
    with pytest.raises(DataError, match="no examples"):
        load_csv(header_only)
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="is empty"):
        load_csv(nothing)


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_jsonlines(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="not a file"):
        load_csv(tmp_path)
    with pytest.raises(DataError, match="expected a list"):
        load_examples("qa.jsonl")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="different"):
        load_examples(ROWS, input_key="answer", output_key="answer")


def test_bad_typed_pairs() -> None:
    good = (Question(question="q"), Answer(answer="a", confidence=0.5))
    with pytest.raises(DataError) as info:
        load_examples([good, (42, Answer(answer="a", confidence=0.5))])
    assert info.value.line == 2
    assert "must be a llmrun.Type instance or a string, got int" in str(info.value)
