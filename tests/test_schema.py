from __future__ import annotations

import enum
import json
from typing import Literal

import pytest

from llmrun import Context, Type
from llmrun.errors import OutputValidationError, SchemaError
from llmrun.schema import check_output_type, check_template, output_json_schema, parse_output, render_prompt


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(Type):
    name: str = Context("a name")


class Question(Type):
    question: str = Context("a question about the world")


class Answer(Type):
    answer: str = Context("a short factual answer")
    confidence: float = Context("how sure the answer is, 0 to 1", ge=0, le=1)


class Rich(Type):
    kind: Literal["a", "b"] = Context("a kind")
    color: Color = Context("a color")
    maybe: int | None = Context("an optional number")
    tags: list[str] = Context("some tags")
    inner: Inner = Context("a nested value")
    inners: list[Inner] = Context("nested values")


def test_missing_description_names_class_field_and_fix() -> None:
    with pytest.raises(SchemaError, match=r"NoDesc\.answer has no description.*Context\("):

        class NoDesc(Type):
            answer: str


@pytest.mark.parametrize("annotation", [set, list[list[int]], bytes, int | str, dict[int, str], list[list]])
def test_unsupported_field_types_are_rejected(annotation: object) -> None:
    with pytest.raises(SchemaError, match=r"Bad\.x has the unsupported type"):
        type("Bad", (Type,), {"__annotations__": {"x": annotation}, "x": Context("x")})


def test_context_rejects_a_non_string_description_and_unknown_constraints() -> None:
    with pytest.raises(SchemaError, match="description string"):
        Context(3)
    with pytest.raises(SchemaError, match="unknown constraint"):
        Context("x", minimum=3)


def test_constraints_are_enforced() -> None:
    Answer(answer="x", confidence=0.5)
    with pytest.raises(ValueError, match="less than or equal"):
        Answer(answer="x", confidence=2)


def test_render_is_deterministic_and_names_fields() -> None:
    q = Question(question="What is the highest mountain in the world?")
    first = render_prompt(q, Answer)
    assert first == render_prompt(Question(question=q.question), Answer)
    assert "question (a question about the world): What is the highest mountain in the world?" in first
    assert "- answer (string): a short factual answer" in first
    assert "- confidence (number, >= 0, <= 1)" in first


def test_render_nested_and_literal_descriptions() -> None:
    text = render_prompt("hi", Rich)
    assert '- kind (one of "a", "b")' in text
    assert '- color (one of "red", "blue")' in text
    assert "- maybe (integer or null)" in text
    assert "  - name (string): a name" in text


def test_plain_prompt_without_output_type_is_unchanged() -> None:
    assert render_prompt("Hello there") == "Hello there"


def test_custom_template() -> None:
    text = render_prompt(Question(question="Why?"), Answer, template="### Input\n{input}\n### Output{output}")
    assert text.startswith("### Input\nquestion (a question about the world): Why?\n### Output\n\n")


@pytest.mark.parametrize("template", ["no placeholder", "{input} {other}", "{input", 3])
def test_bad_templates(template: object) -> None:
    with pytest.raises(SchemaError, match="template"):
        check_template(template)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [dict, Answer(answer="x", confidence=0.1), str, None, Type])
def test_non_type_output_type(bad: object) -> None:
    with pytest.raises(SchemaError, match=r"output_type must be a subclass of llmrun\.Type"):
        check_output_type(bad)


def test_parse_output_valid_and_invalid() -> None:
    assert parse_output('{"answer": "Everest", "confidence": 0.9}', Answer) == Answer(
        answer="Everest", confidence=0.9
    )
    with pytest.raises(OutputValidationError, match="confidence") as info:
        parse_output('{"answer": "Everest", "confidence": 7}', Answer)
    assert info.value.raw_text == '{"answer": "Everest", "confidence": 7}'


# ----------------------------------------------------------------------------- as 2023 allowed


class AdAspects(Type):
    """The error_handling page's example, as 2023 wrote it."""

    tone: str = Context("tone of the marketing copy")
    product_features: list = Context("product features to promote")
    extras: dict = Context("")
    counts: dict[str, int] = Context("how often each feature is named")


def test_dict_and_bare_list_fields_and_empty_context_as_2023_allowed() -> None:
    value = AdAspects(tone="fun", product_features=["fast", 2], extras={"a": [1]}, counts={"fast": 1})
    schema = output_json_schema(AdAspects)["properties"]
    assert schema["product_features"] == {
        "description": "product features to promote",
        "items": {},
        "title": "Product Features",
        "type": "array",
    }
    assert schema["extras"]["type"] == "object"
    assert schema["extras"]["additionalProperties"] is True
    assert schema["counts"]["additionalProperties"] == {"type": "integer"}
    prompt = render_prompt(value, AdAspects)
    assert '\nextras: {"a": [1]}\n' in prompt  # an empty description leaves the bare name
    assert "- extras (JSON object)\n" in prompt
    with pytest.raises(ValueError, match="valid integer"):
        AdAspects(tone="x", product_features=[], extras={}, counts={"a": "many"})


def test_pydantic_v1_names_and_assignment() -> None:
    value = AdAspects(tone="fun", product_features=[], extras={}, counts={})
    value.tone = "calm"
    assert value.dict() == {"tone": "calm", "product_features": [], "extras": {}, "counts": {}}
    assert AdAspects.parse_obj(json.loads(value.json())) == value
    assert value["tone"] == "calm"
    assert AdAspects.schema()["title"] == "AdAspects"
    with pytest.raises(KeyError, match="no field 'nope'"):
        value["nope"]


class Tone(Type):
    tone: str = Context("the tone of the story")


class Descriptors(Type):
    likes: list[str] = Context("things you like")
    tone_desc: Tone


def test_a_nested_type_field_may_go_without_context_as_2023_allowed() -> None:
    assert Descriptors(likes=["llamas"], tone_desc=Tone(tone="cheeky")).tone_desc.tone == "cheeky"
    assert "tone_desc" in Descriptors.schema()["properties"]
    with pytest.raises(SchemaError, match=r"Plain\.tone has no description"):

        class Plain(Type):
            tone: str


def test_a_pydantic_v1_root_type_is_a_schema_error_saying_what_to_write() -> None:
    with pytest.raises(SchemaError, match=r"KeywordData has a `__root__` field.*dict\[str, X\]"):

        class KeywordData(Type):
            __root__: dict[str, int]
