"""Raw JSON Schemas (``output_schema=``): coverage, output that always closes, budget, refusals.

Random walks of the constrained decoder (random logits, the best allowed token each step,
as a model with random weights writes) must close within ``max_new_tokens`` and give a
reply that ``OutputSpec.parse`` (jsonschema, formats checked) accepts, for schemas that use
the keywords real-world schemas use. Tokenizers are tiny ones trained here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xgrammar")

import llmrun  # noqa: E402
from constraint_walks import random_walks as _walk  # noqa: E402
from llmrun.backends.local import grammar  # noqa: E402
from llmrun.backends.local.schema_bounds import bound_schema, worst_case_tokens  # noqa: E402
from llmrun.backends.local.schema_formats import FORMAT_PATTERNS  # noqa: E402
from llmrun.backends.local.schema_normalize import normalize_schema  # noqa: E402
from llmrun.errors import (  # noqa: E402
    InvalidInputError,
    OutputValidationError,
    SchemaError,
    UnsupportedFeatureError,
)
from llmrun.runner import OutputSpec, RunResult  # noqa: E402
from llmrun.testing.checkpoints import (  # noqa: E402
    padded_vocab_size,
    train_byte_level_bpe_tokenizer,
)

_INT = {"type": "integer"}
_FORMATS = ["date", "date-time", "time", "email", "uri", "uuid", "ipv4", "ipv6", "hostname"]

SCHEMAS: dict[str, dict[str, Any]] = {
    "object-without-properties": {
        "type": "object",
        "properties": {"a": {"type": "object"}},
        "required": ["a"],
    },
    "definitions-ref": {
        "definitions": {
            "pt": {"type": "object", "properties": {"x": _INT, "y": _INT}, "required": ["x", "y"]}
        },
        "type": "object",
        "properties": {"from": {"$ref": "#/definitions/pt"}, "to": {"$ref": "#/definitions/pt"}},
        "required": ["from", "to"],
    },
    "nested-pointer-ref": {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 5}, "b": {"$ref": "#/properties/a"}},
        "required": ["a", "b"],
    },
    "additional-properties-schema": {
        "type": "object",
        "additionalProperties": {"type": "integer", "minimum": 0},
    },
    "pattern-properties": {
        "type": "object",
        "patternProperties": {"^x-[a-z]{1,8}$": {"type": "boolean"}},
        "additionalProperties": False,
    },
    "untyped": {"type": "object", "properties": {"v": {}}, "required": ["v"]},
    "formats": {
        "type": "object",
        "properties": {f: {"type": "string", "format": f} for f in _FORMATS},
        "required": _FORMATS,
    },
    "all-of": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}, "required": ["a"]},
            {"properties": {"a": {"maximum": 10}, "b": {"type": "string"}}, "required": ["b"]},
        ]
    },
    "one-of-overlapping": {
        "oneOf": [
            {"type": "object", "properties": {"a": _INT, "b": _INT}, "required": ["a"]},
            {"type": "object", "properties": {"a": _INT, "b": _INT}, "required": ["b"]},
        ]
    },
    "multiple-of": {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "multipleOf": 7},
            "x": {"type": "number", "multipleOf": 0.25, "minimum": 0, "maximum": 3},
            "y": {"type": "number", "multipleOf": 0.5},
        },
        "required": ["n", "x", "y"],
    },
    "min-max-properties": {
        "type": "object",
        "properties": {"a": _INT, "b": _INT, "c": _INT},
        "minProperties": 2,
        "maxProperties": 2,
    },
    "const-and-enum-of-any-json": {
        "type": "object",
        "properties": {"k": {"const": {"v": [1, 2]}}, "e": {"enum": [None, 1, "x", [True], {"a": 1}]}},
        "required": ["k", "e"],
    },
    "prefix-items": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "integer"}],
        "items": False,
        "minItems": 2,
    },
    "type-union": {"type": ["string", "integer", "null"]},
    "required-key-never-defined": {"type": "object", "properties": {"a": _INT}, "required": ["a", "b"]},
    "recursive-tree": {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"v": _INT, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["v"],
            }
        },
        "$ref": "#/$defs/node",
    },
    "draft4-items-list": {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "array",
        "items": [{"type": "boolean"}],
        "additionalItems": {"type": "integer"},
        "maxItems": 3,
    },
    "dependent-required": {
        "type": "object",
        "properties": {"card": {"type": "string"}, "billing": {"type": "string"}},
        "dependentRequired": {"card": ["billing"]},
    },
    "not-required": {"type": "object", "properties": {"a": _INT, "b": _INT}, "not": {"required": ["a", "b"]}},
    "unanchored-pattern": {"type": "string", "pattern": "[0-9]{3}"},
    "unique-items-of-few-values": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": True},
    "min-properties-of-optionals": {
        "type": "object",
        "properties": {f"p{i}": {"type": "string"} for i in range(8)},
        "minProperties": 2,
    },
    "free-root": {},
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_random_walks_close_within_the_budget_and_validate(tokenizer: Any, name: str) -> None:
    schema, budget = SCHEMAS[name], 512 if name == "formats" else 160
    spec = OutputSpec.for_schema(schema, name=name)
    for seed in range(2):
        for text, done in _walk(tokenizer, spec.json_schema, budget, rows=4, seed=seed):
            assert done, f"{name}: the walk did not close within {budget} tokens: {text!r}"
            spec.parse(text)  # raises OutputValidationError naming the keyword when invalid


def test_an_object_without_properties_is_bounded_not_measured_as_empty(tokenizer: Any) -> None:
    """The bug of issue 18: {"type": "object"} was measured as {} but let any keys in."""
    schema = {"type": "object", "properties": {"a": {"type": "object"}}, "required": ["a"]}
    bounded = bound_schema(schema, 64)
    inner = bounded.schema["properties"]["a"]
    assert isinstance(inner["additionalProperties"], dict)
    assert "maxProperties" in inner
    assert worst_case_tokens(bounded.schema, bounded.string_tokens) <= 64
    for seed in range(5):
        for text, done in _walk(tokenizer, schema, 64, rows=4, seed=seed):
            assert done, text
            assert isinstance(json.loads(text)["a"], dict)


# --------------------------------------------------------------------------- normalization


def test_refs_are_inlined_and_all_of_merged() -> None:
    plain = normalize_schema(SCHEMAS["all-of"])
    assert plain["properties"]["a"] == {"type": "integer", "minimum": 0, "maximum": 10}
    assert set(plain["required"]) == {"a", "b"}
    assert "$ref" not in json.dumps(normalize_schema(SCHEMAS["definitions-ref"]))


def test_one_of_branches_are_made_disjoint() -> None:
    plain = normalize_schema(SCHEMAS["one-of-overlapping"])
    assert [set(b["properties"]) for b in plain["anyOf"]] == [{"a"}, {"b"}]


def test_a_required_key_the_schema_never_defines_is_generated() -> None:
    plain = normalize_schema(SCHEMAS["required-key-never-defined"])
    assert set(plain["properties"]) == {"a", "b"}


def test_number_multiple_of_becomes_exact_values() -> None:
    props = normalize_schema(SCHEMAS["multiple-of"])["properties"]
    assert props["x"] == {"enum": [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 2.75, 3]}
    assert props["y"]["type"] == "integer"
    assert props["n"]["multipleOf"] == 7


@pytest.mark.parametrize("fmt", sorted(FORMAT_PATTERNS))
def test_format_patterns_only_match_valid_strings(fmt: str) -> None:
    """Each format's pattern, sampled with random walks, gives strings jsonschema accepts."""
    import re

    pattern = FORMAT_PATTERNS[fmt]
    spec = OutputSpec.for_schema({"type": "string", "format": fmt})
    tok = train_byte_level_bpe_tokenizer(512)
    for text, done in _walk(tok, spec.json_schema, 120, rows=3, seed=1):
        assert done
        value = spec.parse(text)
        assert re.fullmatch(pattern, value)


def test_the_date_pattern_leaves_out_year_zero_which_jsonschema_rejects() -> None:
    import re

    for fmt, tail in (("date", ""), ("date-time", "T00:00:00Z")):
        pattern = FORMAT_PATTERNS[fmt]
        assert not re.fullmatch(pattern, "0000-01-01" + tail)
        assert re.fullmatch(pattern, "0001-01-01" + tail)
        assert re.fullmatch(pattern, "2024-12-31" + tail)


# --------------------------------------------------------------------------- refusals

CHAIN = {
    "$defs": {"c": {"type": "object", "properties": {"n": {"$ref": "#/$defs/c"}}, "required": ["n"]}},
    "$ref": "#/$defs/c",
}


@pytest.mark.parametrize(
    ("schema", "error", "words"),
    [
        (CHAIN, SchemaError, r"\$ref '#/\$defs/c' is recursive"),
        ({"allOf": [{"pattern": "^a"}, {"pattern": "b$"}]}, UnsupportedFeatureError, "allOf"),
        (
            {"type": "object", "properties": {"a": _INT}, "required": ["b"], "additionalProperties": False},
            SchemaError, "required key 'b' is forbidden by additionalProperties",
        ),
        ({"type": "integer", "minimum": 5, "maximum": 4}, SchemaError, "integer range"),
        ({"type": "string", "pattern": "^(a)\\1$"}, SchemaError, "'pattern' the grammar engine cannot read"),
    ],
)  # fmt: skip
def test_schemas_that_cannot_be_generated_are_refused_naming_the_keyword(
    schema: dict[str, Any], error: type[Exception], words: str
) -> None:
    tok = train_byte_level_bpe_tokenizer(512)
    with pytest.raises(error, match=words):
        grammar.json_constraint(tok, schema, 1, padded_vocab_size(len(tok)), max_new_tokens=256)


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "objet"}, r"not a valid JSON Schema: at type"),
        ({"properties": {"a": {"$ref": "#/definitions/missing"}}}, r"\$ref '#/definitions/missing'"),
        ({"type": "object", "minProperties": -1}, "minProperties"),
        ({"enum": [{1, 2}]}, "not JSON data"),
        ([{"type": "object"}], "must be a JSON Schema"),
    ],
)
def test_malformed_schemas_are_refused_up_front(schema: Any, words: str) -> None:
    with pytest.raises(SchemaError, match=words):
        OutputSpec.for_schema(schema)


def test_parse_validates_the_reply_naming_the_keyword() -> None:
    spec = OutputSpec.for_schema({"type": "object", "properties": {"d": {"format": "date"}}}, name="Day")
    assert spec.parse('{"d": "2024-02-28"}') == {"d": "2024-02-28"}
    with pytest.raises(OutputValidationError, match="'format' at d") as info:
        spec.parse('{"d": "2024-02-30"}')
    assert info.value.raw_text == '{"d": "2024-02-30"}'
    with pytest.raises(OutputValidationError, match="not valid JSON for Day"):
        spec.parse('{"d": NaN}')


# --------------------------------------------------------------------------- the budget


def test_optional_fields_are_left_out_to_fit_instead_of_refusing() -> None:
    props = {f"f{i}": {"type": "string"} for i in range(12)}
    schema = {"type": "object", "properties": {**props, "id": _INT}, "required": ["id"]}
    bounded = bound_schema(schema, 80)
    assert bounded.dropped
    assert "id" in bounded.schema["properties"]
    assert bounded.worst_case_tokens <= 80
    kept = set(bounded.schema["properties"]) - {"id"}
    assert kept, "optional fields that fit stay in"
    assert bound_schema(schema, 2000).dropped == ()


def test_a_schema_that_cannot_fit_is_refused_with_the_tokens_it_needs() -> None:
    schema = {"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(20)}}
    schema["required"] = list(schema["properties"])
    with pytest.raises(InvalidInputError, match="too small") as info:
        bound_schema(schema, 50)
    need = int(str(info.value).split("or at least ")[1].rstrip("."))
    assert bound_schema(schema, need).worst_case_tokens <= need


def _accepts(tokenizer: Any, schema: dict[str, Any], budget: int, value: Any) -> bool:
    width = padded_vocab_size(len(tokenizer))
    constraint = grammar.json_constraint(tokenizer, schema, 1, width, max_new_tokens=budget)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for token in tokenizer.encode(text, add_special_tokens=False):
        logits = torch.zeros(1, width)
        constraint.mask_logits(logits)
        if constraint.finished()[0] or not bool(torch.isfinite(logits[0, token])):
            return False
        constraint.advance(torch.tensor([token]))
    return constraint.finished()[0]


def test_valid_instances_with_several_items_and_escapes_are_accepted() -> None:
    tokenizer = train_byte_level_bpe_tokenizer(512)  # its encode() adds nothing before the text
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "note": {"type": "string"},
            "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "required": ["tags", "note", "extra"],
    }
    value = {"tags": ["a", "b", "c"], "note": 'line\nwith "quotes"', "extra": {"k": 1, "j": 2}}
    assert _accepts(tokenizer, schema, 256, value)
    assert not _accepts(tokenizer, schema, 256, {**value, "tags": [1]})


# --------------------------------------------------------------------------- the public path


@pytest.fixture(scope="module")
def local(tiny_gpt_neox_dir: Path) -> Any:
    return llmrun.load(str(tiny_gpt_neox_dir), backend="local", device="cpu")


PERSON = {
    "$defs": {"age": {"type": "integer", "minimum": 0, "maximum": 130}},
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"$ref": "#/$defs/age"}, "tags": {}},
    "required": ["name", "age"],
}


def _person(value: Any) -> None:
    assert isinstance(value, dict)
    assert set(value) >= {"name", "age"}
    assert 0 <= value["age"] <= 130


def test_local_runner_returns_validated_json_values(local: Any) -> None:
    _person(local("Describe someone:", output_schema=PERSON, max_new_tokens=96))
    batch = local(["One:", "Two:"], output_schema=PERSON, max_new_tokens=96)
    assert len(batch) == 2
    for value in batch:
        _person(value)
    result = local.run("Three:", output_schema=PERSON, max_new_tokens=96)
    assert isinstance(result, RunResult)
    assert result.finish_reason == "stop"
    _person(result.output)
    assert json.loads(result.text) == result.output
    _person(asyncio.run(local.agenerate("Four:", output_schema=PERSON, max_new_tokens=96)))
    partials = list(local.stream("Five:", output_schema=PERSON, max_new_tokens=96))  # partial JSON values
    _person(partials[-1])


def test_output_schema_and_output_type_together_are_refused(local: Any) -> None:
    class Answer(llmrun.Type):
        answer: str = llmrun.Context("an answer")

    with pytest.raises(InvalidInputError, match="not both"):
        local("x", output_type=Answer, output_schema=PERSON)
    with pytest.raises(SchemaError, match="not a valid JSON Schema"):
        local("x", output_schema={"type": 3})


# --------------------------------------------------------------------------- Lamini

PLACE = {
    "definitions": {"city": {"type": "object", "properties": {"name": {"type": "string"}, "pop": _INT}}},
    "type": "object",
    "properties": {"title": {"type": ["string", "null"]}, "where": {"$ref": "#/definitions/city"}},
}


def test_lamini_sends_a_flat_schema_and_returns_the_validated_value() -> None:
    pytest.importorskip("lamini", reason="the lamini backend needs the optional lamini client")
    from llmrun.backends.lamini import LaminiRunner
    from llmrun.backends.lamini.wire_types import lamini_schema_output_type
    from llmrun.testing.lamini_server import FakeLaminiServer

    spec = OutputSpec.for_schema(PLACE)
    assert lamini_schema_output_type(spec) == {"title": "str", "where.name": "str", "where.pop": "int"}
    key = "sk-test-0123456789abcdef"
    with FakeLaminiServer(api_key=key) as server:
        runner = LaminiRunner("test-model", api_key=key, api_url=server.url, timeout=5.0)
        value = runner("Where?", output_schema=PLACE)
        assert set(value) == {"title", "where"}
        assert isinstance(value["where"]["pop"], int)
        sent = server.requests_to("/v1/completions")[0].body
        assert sent["output_type"] == {"title": "str", "where.name": "str", "where.pop": "int"}
        server.reset()
        tags = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
        with pytest.raises(UnsupportedFeatureError, match=r"property output\.tags uses 'items'"):
            runner("Tags?", output_schema=tags)
        with pytest.raises(UnsupportedFeatureError, match="not an object with properties"):
            runner("Any?", output_schema={"type": "array"})
        assert server.requests_to("/v1/completions") == []


# --------------------------------------------------------------------------- the coverage benchmark


def test_the_coverage_benchmark_runs_on_a_tiny_corpus(tmp_path: Path) -> None:
    """bench_schemas.py end to end on a corpus and tokenizer made here (no shared assets)."""
    import importlib.util

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_schemas.py"
    spec = importlib.util.spec_from_file_location("bench_schemas", bench)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    corpus = tmp_path / "corpus"
    schemas = {
        "point": (SCHEMAS["definitions-ref"], [{"from": {"x": 1, "y": 2}, "to": {"x": 3, "y": 4}}]),
        "tags": ({"type": "array", "items": {"type": "string", "maxLength": 4}}, [["ab", "cd"]]),
        "chain": (CHAIN, []),
    }
    for name, (schema, instances) in schemas.items():
        for folder, data in (("schemas", schema), ("instances", instances)):
            (corpus / folder / "Tiny").mkdir(parents=True, exist_ok=True)
            (corpus / folder / "Tiny" / f"{name}.json").write_text(json.dumps(data))
    tok_file = tmp_path / "tokenizer.json"
    train_byte_level_bpe_tokenizer(512).backend_tokenizer.save(str(tok_file))
    out = tmp_path / "out.json"
    args = ["--corpus", str(corpus), "--tokenizer", str(tok_file), "--width", "512", "--budget", "128"]
    assert module.main([*args, "--out", str(out)]) == 0
    tiny = json.loads(out.read_text())["per_dataset"]["Tiny"]
    assert tiny["schemas"] == 3
    assert (tiny["valid"], tiny["refused"], tiny["rejected"], tiny["unclosed"]) == (2, 1, 0, 0)
    assert tiny["refused_by"] == {"$ref": 1}
    assert (tiny["instances"], tiny["instances_allowed"], tiny["instances_accepted"]) == (2, 2, 2)
    assert tiny["instances_share"] == 1.0
    assert tiny["instances_missed"] == {"tracker": 0, "bounds": 0, "normalized": 0, "grammar": 0}
