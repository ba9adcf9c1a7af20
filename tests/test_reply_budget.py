"""The budget that follows the reply: every typed reply closes within max_new_tokens and is valid.

Random walks of the constrained decoder (random or adversarial logits, the best allowed
token each step) over many seeds, small budgets, deep schemas, free keys, arrays, patterns
and unions must close within the budget and validate; valid instances far longer than a
worst-case sizing would allow go through unchanged. Tokenizers are tiny ones trained here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xgrammar")
pytest.importorskip("interegular")

from constraint_walks import random_logits as _random  # noqa: E402
from constraint_walks import walk as _walk  # noqa: E402
from llmrun.backends.local import grammar  # noqa: E402
from llmrun.backends.local.reply_patterns import pattern_automaton  # noqa: E402
from llmrun.backends.local.reply_plan import MUL, OPQ, PAT, STR, UNI, plan_reply  # noqa: E402
from llmrun.backends.local.reply_tracker import LOST, ReplyTracker  # noqa: E402
from llmrun.backends.local.schema_patterns import json_text_pattern  # noqa: E402
from llmrun.errors import InvalidInputError  # noqa: E402
from llmrun.runner import OutputSpec  # noqa: E402
from llmrun.testing.checkpoints import (  # noqa: E402
    padded_vocab_size,
    train_byte_level_bpe_tokenizer,
)

_STR = {"type": "string"}
_INT = {"type": "integer"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {
        "type": "object",
        "properties": {"a": _STR, "b": _STR, "n": _INT, "ok": {"type": "boolean"}},
        "required": ["a", "b", "n", "ok"],
    },
    "optionals": {
        "type": "object",
        "properties": {f"o{i}": {"type": ["string", "null"]} for i in range(6)} | {"id": _INT},
        "required": ["id"],
    },
    "arrays": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": _STR},
            "pairs": {
                "type": "array",
                "items": {"type": "array", "items": _INT, "minItems": 2},
                "minItems": 1,
            },
        },
        "required": ["tags", "pairs"],
    },
    "free-keys": {
        "type": "object",
        "properties": {"name": _STR, "meta": {"type": "object", "additionalProperties": _STR}},
        "required": ["name", "meta"],
        "additionalProperties": {"type": "array", "items": {"type": "number"}},
    },
    "deep": {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"v": _STR, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["v"],
            }
        },
        "$ref": "#/$defs/node",
    },
    "patterns": {
        "type": "object",
        "properties": {
            "day": {"type": "string", "format": "uuid"},
            "code": {"type": "string", "pattern": "^[A-Z]{2,}-[0-9]+$"},
            "mail": {"type": "string", "format": "email"},
            "by_key": {
                "type": "object",
                "patternProperties": {"^x-[a-z]+$": _INT},
                "additionalProperties": False,
            },
        },
        "required": ["day", "code", "by_key"],
    },
    "unions": {
        "type": "object",
        "properties": {
            "any": {},
            "maybe": {
                "anyOf": [{"type": "object", "properties": {"k": _STR}, "required": ["k"]}, {"type": "null"}]
            },
            "alike": {"anyOf": [{"type": "string", "maxLength": 3}, {"enum": ["long-enough", "x"]}]},
            "kind": {"enum": ["a", "bb", "ccc"]},
            "min": {"type": "string", "minLength": 5},
        },
        "required": ["any", "maybe", "alike", "kind", "min"],
    },
    "objects-alike": {
        "type": "object",
        "properties": {
            "shape": {
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "circle"}, "r": _INT},
                        "required": ["kind", "r"],
                    },
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "box"}, "w": _STR, "h": _STR},
                        "required": ["kind"],
                    },
                    {"type": "array", "items": _STR},
                    {"type": "string", "pattern": "^[a-z]+$"},
                    {"type": "string", "maxLength": 4},
                ]
            },
            "names": {"type": "array", "items": {"anyOf": [{"type": "string", "format": "email"}, _STR]}},
        },
        "required": ["shape", "names"],
    },
    "root-array": {
        "type": "array",
        "items": {"type": "object", "properties": {"s": _STR}, "required": ["s"]},
    },
    "root-string": _STR,
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_random_walks_close_within_small_budgets_and_validate(tokenizer: Any, name: str) -> None:
    spec = OutputSpec.for_schema(SCHEMAS[name], name=name)
    need = plan_reply(spec.json_schema, 4096).min_tokens
    for budget in (need, need + 3, need + 17, need + 60, 200):
        for seed in range(6):
            rows, constraint = _walk(tokenizer, spec.json_schema, budget, 3, _random(seed * 100 + budget))
            assert not any(t.lost for t in constraint._trackers), f"{name}: the tracker lost the reply"
            for text, done, used in rows:
                assert done, f"{name}: no close within {budget} tokens: {text!r}"
                assert used <= budget
                spec.parse(text)


def _never_close(tokenizer: Any) -> Any:
    """Logits that prefer content and dislike every closing quote or bracket."""
    width = padded_vocab_size(len(tokenizer))
    score = torch.zeros(width)
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        score[i] = 3.0 * len(text)
        if any(c in text for c in '"]}'):
            score[i] -= 100.0
        if text[:1] in ",[{":
            score[i] += 50.0  # open more items and keys whenever it can
    return lambda step, rows, width: score[:width].repeat(rows, 1)


@pytest.mark.parametrize(
    "name", ["flat", "arrays", "free-keys", "deep", "patterns", "unions", "objects-alike", "root-array"]
)
@pytest.mark.parametrize("budget", [96, 150])
def test_logits_that_never_close_still_close_within_the_budget(
    tokenizer: Any, name: str, budget: int
) -> None:
    spec = OutputSpec.for_schema(SCHEMAS[name], name=name)
    rows, constraint = _walk(tokenizer, spec.json_schema, budget, 2, _never_close(tokenizer))
    for text, done, used in rows:
        assert done, text
        assert used <= budget
        spec.parse(text)
    assert constraint.replaced > 0, "the budget, not the model, closed these replies"


def test_a_string_the_model_never_closes_takes_the_rest_of_the_budget(tokenizer: Any) -> None:
    schema = {"type": "object", "properties": {"text": _STR}, "required": ["text"]}
    rows, _ = _walk(tokenizer, schema, 120, 1, _never_close(tokenizer))
    text, done, used = rows[0]
    assert done
    assert used >= 110, "no worst-case share: the string runs until only its closing is left"
    assert set(json.loads(text)) == {"text"}


def _accepts(tokenizer: Any, schema: dict[str, Any], budget: int, value: Any) -> bool:
    width = padded_vocab_size(len(tokenizer))
    constraint = grammar.json_constraint(tokenizer, schema, 1, width, max_new_tokens=budget)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for token in tokenizer.encode(text, add_special_tokens=False):
        logits = torch.zeros(1, width)
        constraint.mask_logits(logits)
        if constraint.finished()[0] or not bool(torch.isfinite(logits[0, token])):
            return False
        chosen = torch.tensor([token])
        constraint.advance(chosen)
        if int(chosen[0]) != token:
            return False
    return constraint.finished()[0]


def test_long_valid_instances_are_accepted_where_the_budget_allows_them() -> None:
    tokenizer = train_byte_level_bpe_tokenizer(512)
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": _STR},
            "note": _STR,
            "extra": {"type": "object", "additionalProperties": _INT},
            "maybe": {"type": ["string", "null"]},
            "code": {"type": "string", "pattern": "^[a-z]+$"},
        },
        "required": ["tags", "note", "extra"],
    }
    value = {
        "tags": [f"t{i}" for i in range(30)],
        "note": "a long note, " * 12 + 'with "quotes" and\nlines',
        "extra": {f"k{i}": i for i in range(12)},
        "maybe": "present",
        "code": "abcdefghijklmnopqrstuvwxyz" * 2,
    }
    size = len(tokenizer.encode(json.dumps(value, separators=(",", ":")), add_special_tokens=False))
    # the closing is counted one token per byte: an instance needs at most that many tokens more
    assert _accepts(tokenizer, schema, size + 2, value), "accepted with the tokens it takes and its closing"
    assert not _accepts(tokenizer, schema, size - 1, value), "one token short: the budget closes it"
    assert not _accepts(tokenizer, schema, 4 * size, {**value, "tags": [1]}), "the grammar still rules"


def test_the_smallest_reply_is_checked_before_generation(tokenizer: Any) -> None:
    schema = {"type": "object", "properties": {f"f{i}": _STR for i in range(20)}}
    schema["required"] = list(schema["properties"])
    with pytest.raises(InvalidInputError, match="too small") as info:
        plan_reply(schema, 50)
    need = int(str(info.value).split("or at least ")[1].rstrip("."))
    assert need == len(json.dumps({f"f{i}": "" for i in range(20)}, separators=(",", ":")))
    assert plan_reply(schema, need).min_tokens == need
    rows, _ = _walk(tokenizer, schema, need, 2, _random(3))
    for text, done, used in rows:
        assert done
        assert used <= need
        assert set(json.loads(text)) == {f"f{i}" for i in range(20)}  # tokens of several bytes leave room


def test_the_tracker_knows_the_cheapest_closing() -> None:
    schema = {
        "type": "object",
        "properties": {"a": _STR, "b": {"type": "array", "items": _INT, "minItems": 2}, "c": _STR},
        "required": ["a", "b"],
    }
    plan = plan_reply(schema, 100)
    tracker = ReplyTracker(plan.root)
    assert tracker.cost() == len('{"a":"","b":[0,0]}') == plan.min_tokens
    for text, closing in [
        ('{"a":"xyz', '","b":[0,0]}'),
        ('","b":[0', ",0]}"),  # a number following its smallest value, 0
        (",0", "]}"),
        ("]", "}"),
        (',"', 'c":""}'),
    ]:
        tracker.feed(text.encode())
        assert tracker.cost() == len(closing), text
    tracker.feed(b'c":"\xe4\xb8')  # half a character: its last byte, the quote, the brace
    assert tracker.cost() == 3
    assert not tracker.lost
    other = ReplyTracker(plan.root)
    other.feed(b'{"a":"","b":[12')  # any other number: the rest of its worst case (15 digits and a sign)
    assert other.cost() == 16 - 1 + len(",0]}")


def test_nodes_are_followed_where_they_can_grow_and_bounded_elsewhere() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": _STR,
            "p": {"type": "string", "pattern": "^[0-9]{3}-x$"},
            "u": {"type": ["string", "null"]},
            "n": {"type": "number"},
            "alike": {"anyOf": [{"type": "string", "maxLength": 3}, {"enum": ["abc"]}]},
        },
        "required": ["s", "p", "u", "n", "alike"],
    }
    plan = plan_reply(schema, 300)
    kinds = {p[0].decode(): p[1].kind for p in plan.root.props}
    assert kinds == {'"s"': STR, '"p"': PAT, '"u"': UNI, '"n"': OPQ, '"alike"': UNI}
    alike = plan.root.props[-1][1].by_byte[ord('"')]
    assert alike.kind == MUL, "alternatives that start alike are followed together"
    assert [a.kind for a in alike.alts] == [STR, OPQ]
    assert "maxLength" not in plan.schema["properties"]["s"], "no worst-case share in the grammar"
    assert plan.min_tokens == len('{"s":"","p":"111-x","u":"","n":0,"alike":""}')


def test_pattern_automata() -> None:
    automaton = pattern_automaton("^[A-Z]{2,}-[0-9]+$")
    assert automaton is not None
    assert automaton.shortest == b"AA-1"  # "0" only where nothing else fits (year 0000 is no date)
    state = automaton.initial
    for char in "AB-":
        next_state = automaton.step(state, char)
        assert next_state is not None
        state = next_state
    assert automaton.cost[state] == 1
    assert automaton.step(state, "x") is None
    assert pattern_automaton('^a"b$').shortest == b'a\\"b'  # type: ignore[union-attr]
    for unreadable in ("^(?=a)a$", "^(a)\\1$", "^a^b$"):
        assert pattern_automaton(unreadable) is None


# --------------------------------------------------------------------------- the decode loops


@pytest.fixture(scope="module")
def local(tiny_gpt_neox_dir: Any) -> Any:
    import llmrun

    return llmrun.load(str(tiny_gpt_neox_dir), backend="local", device="cpu")


def test_replaced_tokens_are_what_both_decode_loops_write(
    local: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget that forces replacements: generate() and a step-level batch row write the same
    closed, valid reply (the loops read the tokens advance() replaced in place)."""
    from llmrun import GenerationConfig
    from llmrun.runner import CompletionRequest

    schema = {
        "type": "object",
        "properties": {"story": _STR, "tags": {"type": "array", "items": _STR}, "n": _INT},
        "required": ["story", "tags", "n"],
    }
    spec = OutputSpec.for_schema(schema, name="tight")
    config = GenerationConfig(max_new_tokens=plan_reply(spec.json_schema, 4096).min_tokens + 6)
    engine = local.engine
    made: list[Any] = []
    original = engine.constraint

    def spy(output: Any, batch_size: int, budget: int) -> Any:
        made.append(original(output, batch_size, budget))
        return made[-1]

    monkeypatch.setattr(engine, "constraint", spy)
    alone = engine.generate(CompletionRequest(("Tell me a story:", "Another:"), config, spec))
    batch = engine.batch()
    rows = [batch.add(p, config, spec) for p in ("Tell me a story:", "Another:")]
    batch.run()
    for completion, row in zip(alone, rows, strict=True):
        assert completion.finish_reason == "stop"
        assert completion.usage.completion_tokens <= config.max_new_tokens
        spec.parse(completion.text)
        assert row.completion == completion
    assert all(c.replaced > 0 for c in made), "the budget, not the model, closed these replies"


def test_a_free_key_that_starts_like_a_named_one_that_is_behind() -> None:
    """After "b", a free key may start like "a" (written before): it costs one more character."""
    schema = {"type": "object", "properties": {"a": _INT, "b": _INT}, "additionalProperties": _INT}
    tracker = ReplyTracker(plan_reply(schema, 100).root)
    tracker.feed(b'{"b":0,"a')
    assert tracker.cost() == len('x":0}')
    tracker.feed(b"x")
    assert tracker.cost() == len('":0}')
    assert not tracker.lost


def test_a_string_beside_an_enum_is_not_capped() -> None:
    tokenizer = train_byte_level_bpe_tokenizer(512)
    schema = {
        "type": "object",
        "properties": {"v": {"anyOf": [{"enum": ["x", "yy"]}, _STR]}},
        "required": ["v"],
    }
    assert _accepts(
        tokenizer, schema, 200, {"v": "a string far longer than any share a bounded value gets " * 3}
    )
    assert _accepts(tokenizer, schema, 200, {"v": "yy"})


def test_a_reply_the_tracker_cannot_follow_costs_more_than_any_budget() -> None:
    """Bytes the pattern automaton cannot follow (U+FEFF, which xgrammar's \\s took) are never "free"."""
    schema = {
        "type": "object",
        "properties": {
            "p": {"type": "string", "pattern": "^(?:\\s*[A-Za-z0-9+/]){4}$"},
            "u": {"type": "string"},
        },
        "required": ["p", "u"],
    }
    tracker = ReplyTracker(plan_reply(OutputSpec.for_schema(schema).json_schema, 256).root)
    tracker.feed(b'{"p":" ')
    assert 0 < tracker.cost() < 64
    tracker.feed("\ufeff".encode())
    assert tracker.lost
    assert tracker.cost() == LOST


def test_backslash_s_is_a_space_for_the_grammar_but_a_negated_class_keeps_it() -> None:
    assert json_text_pattern("^\\s*x[\\s,]$") == "^ *x[ ,]$"
    assert json_text_pattern("[^\\s]") == "[^\\s]"
