"""Grammar-constrained JSON decoding: schema bounds, the compile cache, and closure within the budget."""

from __future__ import annotations

import copy
import enum
import json
from typing import Any, Literal

import pydantic
import pytest

torch = pytest.importorskip("torch")
xgr = pytest.importorskip("xgrammar")

from llmrun.backends.local import grammar, grammar_tokens  # noqa: E402
from llmrun.backends.local.reply_plan import plan_reply  # noqa: E402
from llmrun.backends.local.schema_bounds import (  # noqa: E402
    CLOSE_SLACK,
    ITEMS_PER_TOKENS,
    MAX_NUMBER_DIGITS,
    bound_schema,
    bound_schema_with_share,
    worst_case_tokens,
)
from llmrun.errors import GenerationError, InvalidInputError, SchemaError  # noqa: E402
from llmrun.testing.checkpoints import (  # noqa: E402
    padded_vocab_size,
)

# --------------------------------------------------------------------------- output types


class Flat(pydantic.BaseModel):
    answer: str
    confidence: float = pydantic.Field(ge=0, le=1)
    ok: bool


class Inner(pydantic.BaseModel):
    name: str
    count: int


class Nested(pydantic.BaseModel):
    title: str
    inner: Inner
    others: list[Inner]


class Lists(pydantic.BaseModel):
    tags: list[str]
    scores: list[int]


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Choice(pydantic.BaseModel):
    kind: Literal["yes", "no", "maybe"]
    color: Color
    level: Literal[1, 2, 3]


class Optionals(pydantic.BaseModel):
    note: str | None = None
    score: float | None
    inner: Inner | None = None


class Numbers(pydantic.BaseModel):
    age: int = pydantic.Field(ge=0, le=150)
    temperature: float = pydantic.Field(ge=-50)
    delta: int = pydantic.Field(lt=0)
    big: int
    ratio: float


class Limits(pydantic.BaseModel):
    code: str = pydantic.Field(max_length=6)
    word: str = pydantic.Field(min_length=2)
    sku: str = pydantic.Field(pattern=r"^[A-Z]+-\d+$")
    few: list[str] = pydantic.Field(max_length=2)


class Unicode(pydantic.BaseModel):
    """Non-ASCII keys and literals cost their UTF-8 bytes."""

    città: str
    état: Literal["é", "中文"]


MODELS: list[type[pydantic.BaseModel]] = [Flat, Nested, Lists, Choice, Optionals, Numbers, Limits, Unicode]


def _schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _walk(node: Any) -> list[dict[str, Any]]:
    """Every schema dict in ``node``, depth first."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


def _strings(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in _walk(schema) if n.get("type") == "string" and "enum" not in n and "const" not in n]


# --------------------------------------------------------------------------- bound_schema


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("budget", [200, 256, 1000])
def test_bound_schema_fits_the_budget_and_bounds_everything(
    model: type[pydantic.BaseModel], budget: int
) -> None:
    schema = _schema(model)
    original = copy.deepcopy(schema)
    bounded = bound_schema(schema, budget)
    assert schema == original, "bound_schema must not modify its input"
    assert bounded.worst_case_tokens == worst_case_tokens(bounded.schema, bounded.string_tokens) <= budget
    for node in _walk(bounded.schema):
        if "enum" in node or "const" in node:
            continue
        if node.get("type") == "array":
            assert "maxItems" in node
        if node.get("type") in ("integer", "number"):
            assert "minimum" in node or "exclusiveMinimum" in node
            assert "maximum" in node or "exclusiveMaximum" in node


@pytest.mark.parametrize("model", [Flat, Nested, Lists, Optionals, Limits, Unicode], ids=lambda m: m.__name__)
def test_bound_schema_uses_the_largest_share_that_fits(model: type[pydantic.BaseModel]) -> None:
    """Strings are as long as the budget allows: one more token per string would not fit."""
    schema, budget = _schema(model), 300
    bounded = bound_schema(schema, budget)
    share = bounded.string_tokens
    assert share > 0
    assert bounded.schema == bound_schema_with_share(schema, share)
    assert worst_case_tokens(bound_schema_with_share(schema, share + 1), share + 1) > budget


def test_flat_strings_get_the_rest_of_the_budget() -> None:
    bounded = bound_schema(_schema(Flat), 256)
    # {"answer":"…","confidence":0.123456,"ok":false}, plus 3 tokens to finish a character
    fixed = len('{"answer":"","confidence":0.123456,"ok":false}')
    assert bounded.string_tokens == 256 - fixed - CLOSE_SLACK
    assert bounded.worst_case_tokens == 256
    props = bounded.schema["properties"]
    assert "maxLength" not in props["answer"]  # capped in tokens by the decoder, not in characters
    assert (props["confidence"]["minimum"], props["confidence"]["maximum"]) == (0, 1)


def test_every_string_shares_the_cap() -> None:
    one = bound_schema(_schema(Flat), 300).string_tokens
    three = bound_schema(_schema(Nested), 300).string_tokens  # title, inner.name, others[].name
    assert 0 < three < one


def test_lists_get_max_items_and_bounded_items() -> None:
    bounded = bound_schema(_schema(Lists), 400)
    tags, scores = bounded.schema["properties"]["tags"], bounded.schema["properties"]["scores"]
    assert tags["maxItems"] == -(-bounded.string_tokens // ITEMS_PER_TOKENS)
    assert scores["maxItems"] >= 1
    assert scores["items"]["maximum"] == -scores["items"]["minimum"] > 0


def test_literal_and_enum_keep_their_values() -> None:
    schema = _schema(Choice)
    bounded = bound_schema(schema, 100).schema
    assert bounded["properties"]["kind"] == {"enum": schema["properties"]["kind"]["enum"]}
    assert bounded["properties"]["level"] == {"enum": schema["properties"]["level"]["enum"]}
    assert bounded["properties"]["color"] == {"enum": schema["$defs"]["Color"]["enum"]}  # $ref inlined


def test_optional_branches_are_bounded() -> None:
    bounded = bound_schema(_schema(Optionals), 300).schema
    score = next(b for b in bounded["properties"]["score"]["anyOf"] if b.get("type") == "number")
    assert score["maximum"] == -score["minimum"] > 0
    inner = next(b for b in bounded["properties"]["inner"]["anyOf"] if b.get("type") == "object")
    count = inner["properties"]["count"]
    assert count["maximum"] == -count["minimum"] > 0


def test_numeric_bounds_given_are_kept_and_open_sides_get_digits() -> None:
    schema = _schema(Numbers)
    props = bound_schema(schema, 1000).schema["properties"]
    assert (props["age"]["minimum"], props["age"]["maximum"]) == (0, 150)
    assert props["temperature"]["minimum"] == -50
    assert props["temperature"]["maximum"] == 10**MAX_NUMBER_DIGITS - 1
    assert props["delta"]["maximum"] == -1  # integer bounds become inclusive integers
    assert props["delta"]["minimum"] == -(10**MAX_NUMBER_DIGITS - 1)
    assert props["big"]["maximum"] == 10**MAX_NUMBER_DIGITS - 1
    small = bound_schema(schema, 80).schema["properties"]
    assert 0 < small["big"]["maximum"] < 10**MAX_NUMBER_DIGITS - 1
    assert (small["age"]["minimum"], small["age"]["maximum"]) == (0, 150)


def test_lengths_given_by_the_schema_are_kept_and_never_loosened() -> None:
    for budget in (150, 2000):
        props = bound_schema(_schema(Limits), budget).schema["properties"]
        assert props["code"]["maxLength"] == 6
        assert props["word"]["minLength"] == 2
        assert "maxLength" not in props["word"]
        assert props["few"]["maxItems"] <= 2
    assert bound_schema(_schema(Limits), 2000).schema["properties"]["few"]["maxItems"] == 2


def test_patterns_get_bounded_repeats() -> None:
    import re

    bounded = bound_schema(_schema(Limits), 400)
    sku = bounded.schema["properties"]["sku"]
    assert "+" not in sku["pattern"]
    assert "maxLength" not in sku
    chars = bounded.string_tokens // 4  # both repeats get the same cap: 2k + 1 <= chars
    k = (chars - 1) // 2
    assert re.fullmatch(sku["pattern"], "AB-12")
    assert re.fullmatch(sku["pattern"], "A" * k + "-" + "1" * k)
    assert not re.fullmatch(sku["pattern"], "A" * (k + 1) + "-1")


def test_too_small_a_budget_fails_early_and_names_a_budget_that_works() -> None:
    with pytest.raises(InvalidInputError, match=r"max_new_tokens=20 is too small for Nested") as info:
        bound_schema(_schema(Nested), 20)
    message = str(info.value)
    suggested = int(message.split("max_new_tokens >= ")[1].split(" ")[0])
    minimum = int(message.split("or at least ")[1].rstrip("."))
    assert bound_schema(_schema(Nested), suggested).string_tokens == 32
    assert bound_schema(_schema(Nested), minimum).string_tokens == 0
    with pytest.raises(InvalidInputError):
        bound_schema(_schema(Nested), minimum - 1)


@pytest.mark.parametrize("budget", [0, -5, 2.5, True])
def test_bad_budgets_are_rejected(budget: Any) -> None:
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        bound_schema(_schema(Flat), budget)


class Tree(pydantic.BaseModel):
    label: str
    children: list[Tree]


class WithDict(pydantic.BaseModel):
    meta: dict[str, str]


class WithAny(pydantic.BaseModel):
    blob: Any


class WithMultiple(pydantic.BaseModel):
    step: int = pydantic.Field(multiple_of=5)


class Chain(pydantic.BaseModel):
    label: str
    next: Chain


@pytest.mark.parametrize("model", [Tree, WithDict, WithAny, WithMultiple], ids=lambda m: m.__name__)
def test_free_and_recursive_types_are_bounded(model: type[pydantic.BaseModel]) -> None:
    """dict, Any, multiple_of and recursive types (unrolled) are bounded to the budget."""
    bounded = bound_schema(_schema(model), 500)
    assert worst_case_tokens(bounded.schema, bounded.string_tokens) == bounded.worst_case_tokens <= 500


def test_a_recursive_type_that_cannot_end_is_refused_naming_the_ref() -> None:
    with pytest.raises(SchemaError, match=r"\$ref '#/\$defs/Chain' is recursive"):
        bound_schema(_schema(Chain), 500)


# --------------------------------------------------------------------------- tokenizers and cache


def _width(tok: Any) -> int:
    return padded_vocab_size(len(tok))


def test_compiled_grammars_are_cached_per_tokenizer_and_schema(tokenizer: Any) -> None:
    width = _width(tokenizer)
    schema = bound_schema(_schema(Flat), 128).schema
    first = grammar.compile_json_grammar(tokenizer, schema, width)
    assert grammar.compile_json_grammar(tokenizer, copy.deepcopy(schema), width) is first
    assert grammar.json_constraint(tokenizer, _schema(Flat), 2, width, max_new_tokens=128).compiled is first
    # Flat's strings are capped by the decoder, so another budget needs no new grammar
    assert grammar.json_constraint(tokenizer, _schema(Flat), 1, width, max_new_tokens=300).compiled is first
    assert (
        grammar.compile_json_grammar(tokenizer, bound_schema(_schema(Lists), 128).schema, width) is not first
    )
    assert grammar.compile_json_grammar(tokenizer, schema, width + 32) is not first


def test_vocabulary_type_is_detected(tokenizer: Any) -> None:
    compiled = grammar.compile_json_grammar(
        tokenizer, bound_schema(_schema(Flat), 128).schema, _width(tokenizer)
    )
    info = compiled.grammar.tokenizer_info
    byte_level = tokenizer.eos_token == "<|endoftext|>"
    assert info.vocab_type == (xgr.VocabType.BYTE_LEVEL if byte_level else xgr.VocabType.BYTE_FALLBACK)
    assert info.stop_token_ids == [tokenizer.eos_token_id]


def test_fast_token_tables_match_those_from_xgrammars_vocabulary(tokenizer: Any) -> None:
    width = _width(tokenizer)
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=width)
    fast = grammar_tokens.token_tables(info, tokenizer, width)

    class NotFast:  # no backend_tokenizer: the tables come from xgrammar's decoded_vocab
        all_special_ids = tokenizer.all_special_ids
        added_tokens_decoder = tokenizer.added_tokens_decoder

    slow = grammar_tokens.token_tables(info, NotFast(), width)
    for name in ("allowed_bits", "stop_bits", "after_ed_bits"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
    for a, b in zip(fast.closing_bits, slow.closing_bits, strict=True):
        assert torch.equal(a, b)
    assert fast.next_state == slow.next_state
    assert fast.crosses_quote == slow.crosses_quote
    assert fast.ends_with_ed == slow.ends_with_ed
    assert len(fast.ends_with_ed) >= 1  # the lone lead byte ED
    # a SentencePiece "▁u" decodes as "u" on its own: the fast path may ban more after a backslash
    assert torch.equal(fast.after_backslash_bits & slow.after_backslash_bits, fast.after_backslash_bits)
    allowed = _unpack(fast.allowed_bits, width)
    assert not allowed[_spell(tokenizer, "\n")[0]]
    assert allowed[_spell(tokenizer, "a")[0]]


def _unpack(bits: Any, width: int) -> Any:
    """``[W]`` int32 bits -> ``[V]`` bool."""
    shifts = torch.arange(32, dtype=torch.int64)
    return ((bits.to(torch.int64).unsqueeze(-1) >> shifts) & 1).flatten()[:width].bool()


def test_utf8_surrogates_are_never_emitted(tokenizer: Any) -> None:
    """xgrammar accepts ED A0..BF (a UTF-8 surrogate), which decodes to three U+FFFD."""
    width = _width(tokenizer)
    constraint = grammar.json_constraint(tokenizer, _schema(Flat), 1, width, max_new_tokens=64)
    ed, a0 = _spell(tokenizer, "\ud7ff")[0], _spell(tokenizer, "\u00a0")[1]  # the bytes ED and A0
    for token in _spell(tokenizer, '{"answer":"'):
        constraint.advance(torch.tensor([token]))
    logits = torch.zeros(1, width)
    logits[0, ed] = 10.0
    constraint.mask_logits(logits)
    assert int(logits.argmax()) == ed
    constraint.advance(torch.tensor([ed]))
    logits = torch.zeros(1, width)
    logits[0, a0] = 10.0
    constraint.mask_logits(logits)
    assert logits[0, a0] == float("-inf")


def test_ranged_numbers_have_at_most_six_fraction_digits(tokenizer: Any) -> None:
    """The cost model's assumption about xgrammar's ranged numbers (FLOAT_FRACTION_DIGITS)."""
    schema = {"type": "object", "properties": {"x": {"type": "number", "minimum": -9, "maximum": 9}}}
    schema["required"] = ["x"]
    compiled = grammar.compile_json_grammar(tokenizer, schema, _width(tokenizer))

    def accepts(text: str) -> bool:
        return bool(xgr.GrammarMatcher(compiled.grammar).accept_string(text))

    assert accepts('{"x":-8.123456}')
    assert not accepts('{"x":-8.1234567}')
    assert not accepts('{"x":1e5}')
    assert not accepts('{"x": 1}')  # no free whitespace


# --------------------------------------------------------------------------- closure


def _decode(
    tokenizer: Any, constraint: grammar.JsonSchemaConstraint, logits_for: Any, budget: int
) -> list[Any]:
    """Drive ``constraint`` like the decode loop; return each row's tokens (a row stops when finished)."""
    rows = constraint.batch_size
    out: list[list[int]] = [[] for _ in range(rows)]
    for step in range(budget):
        logits = logits_for(step)  # [B, V]
        constraint.mask_logits(logits)
        chosen = logits.argmax(dim=-1)  # [B]
        running = [not done for done in constraint.finished()]
        constraint.advance(chosen)
        for row in range(rows):
            if running[row]:
                out[row].append(int(chosen[row]))
        if all(constraint.finished()):
            break
    return out


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("batch", [1, 8])
def test_random_logits_always_close_valid_json_within_the_budget(
    tokenizer: Any, model: type[pydantic.BaseModel], batch: int
) -> None:
    budget, width = 256, _width(tokenizer)
    constraint = grammar.json_constraint(tokenizer, _schema(model), batch, width, max_new_tokens=budget)
    gen = torch.Generator().manual_seed(MODELS.index(model) * 10 + batch)

    def logits_for(step: int) -> Any:
        logits = torch.randn(batch, width, generator=gen)
        logits[:, len(tokenizer) :] += 100.0  # padding ids the grammar must never allow
        for special in tokenizer.all_special_ids:
            logits[:, special] += 50.0
        return logits

    rows = _decode(tokenizer, constraint, logits_for, budget)
    assert all(constraint.finished())
    for tokens in rows:
        assert len(tokens) <= budget
        assert max(tokens) < len(tokenizer)
        text = tokenizer.decode(tokens, skip_special_tokens=False)
        model.model_validate_json(text)


def _adversary(tokenizer: Any, width: int) -> Any:
    """Logits that make the output as long as possible in tokens.

    Prefer one-byte tokens of multi-byte characters (4 tokens per character), never close
    strings, arrays or objects early, and take optional fields and the longest numbers.
    """
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=width)
    score = torch.zeros(width)
    for i, piece in enumerate(info.decoded_vocab):
        if not piece:
            continue
        score[i] = -float(len(piece))
        if piece[0] >= 0xF0:  # lead byte of a 4-byte character
            score[i] += 3.0
        elif piece[0] >= 0x80:
            score[i] += 2.0
        if any(c in piece for c in b'"]}'):
            score[i] -= 20.0
        if piece[:1].isdigit() or piece[:1] in (b"-", b"."):
            score[i] += 1.0
    return score


@pytest.mark.parametrize(
    "model", [Flat, Nested, Lists, Optionals, Numbers, Unicode], ids=lambda m: m.__name__
)
def test_adversarial_logits_still_close_within_the_budget(
    tokenizer: Any, model: type[pydantic.BaseModel]
) -> None:
    budget, width = 200, _width(tokenizer)
    constraint = grammar.json_constraint(tokenizer, _schema(model), 2, width, max_new_tokens=budget)
    score = _adversary(tokenizer, width)
    rows = _decode(tokenizer, constraint, lambda step: score.repeat(2, 1), budget)
    assert all(constraint.finished())
    for tokens in rows:
        assert len(tokens) <= budget
        model.model_validate_json(tokenizer.decode(tokens))
    if model in (Flat, Unicode):  # one free string: the adversary fills it with 4-byte characters
        assert len(rows[0]) > budget * 3 // 4, "the adversary should use most of the budget"


def test_control_characters_are_never_emitted(tokenizer: Any) -> None:
    width = _width(tokenizer)
    constraint = grammar.json_constraint(tokenizer, _schema(Lists), 4, width, max_new_tokens=160)
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=width)
    control = [i for i, piece in enumerate(info.decoded_vocab) if piece and min(piece) < 0x20]
    assert control
    gen = torch.Generator().manual_seed(1)

    def logits_for(step: int) -> Any:
        logits = torch.randn(4, width, generator=gen)
        logits[:, control] += 30.0
        return logits

    for tokens in _decode(tokenizer, constraint, logits_for, 160):
        text = tokenizer.decode(tokens)
        assert not any(ord(ch) < 0x20 for ch in text)
        Lists.model_validate_json(text)


def _spell(tokenizer: Any, text: str) -> list[int]:
    """One token per byte of ``text`` (both tokenizer families have every byte as a token)."""
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=_width(tokenizer))
    special = set(info.special_token_ids) | set(tokenizer.all_special_ids)
    by_piece = {piece: i for i, piece in reversed(list(enumerate(info.decoded_vocab))) if i not in special}
    return [by_piece[bytes([b])] for b in text.encode()]


def test_finished_rows_are_left_alone(tokenizer: Any) -> None:
    width = _width(tokenizer)
    constraint = grammar.json_constraint(tokenizer, _schema(Choice), 2, width, max_new_tokens=64)
    tokens = _spell(tokenizer, '{"kind":"yes","color":"red","level":1}')
    for token in tokens:
        assert not constraint.finished()[0]
        constraint.advance(torch.tensor([token, token]))
    assert constraint.finished() == [True, True]
    logits = torch.zeros(2, width)
    constraint.mask_logits(logits)
    assert torch.equal(logits, torch.zeros(2, width))


def test_rows_that_leave_the_batch_keep_their_results(tokenizer: Any) -> None:
    """Finished rows dropped with select_rows: the others decode exactly as in the whole batch."""
    budget, width, batch = 96, _width(tokenizer), 4

    def row_logits(step: int, row: int) -> Any:
        gen = torch.Generator().manual_seed(step * 1000 + row)
        return torch.randn(width, generator=gen)  # [V]

    def run(select: bool) -> tuple[list[list[int]], list[bool], list[int]]:
        constraint = grammar.json_constraint(tokenizer, _schema(Choice), batch, width, max_new_tokens=budget)
        rows, out, sizes = list(range(batch)), [[] for _ in range(batch)], []
        for step in range(budget):
            logits = torch.stack([row_logits(step, row) for row in rows])  # [b, V]
            sizes.append(len(rows))
            constraint.mask_logits(logits)
            chosen = logits.argmax(dim=-1)  # [b]
            running = [not constraint.finished()[row] for row in rows]
            constraint.advance(chosen)
            for j, row in enumerate(rows):
                if running[j]:
                    out[row].append(int(chosen[j]))
            done = constraint.finished()
            if all(done):
                break
            if select:
                keep = [j for j, row in enumerate(rows) if not done[row]]
                constraint.select_rows(torch.tensor(keep))
                rows = [rows[j] for j in keep]
        return out, constraint.finished(), sizes

    whole, whole_done, whole_sizes = run(select=False)
    shrunk, shrunk_done, sizes = run(select=True)
    assert shrunk == whole
    assert shrunk_done == whole_done == [True] * batch  # reported for the original rows
    assert set(whole_sizes) == {batch}
    assert sizes[0] == batch
    assert sizes[-1] < batch
    for tokens in shrunk:
        assert Choice.model_validate_json(tokenizer.decode(tokens))


def test_select_rows_rejects_positions_outside_the_batch(tokenizer: Any) -> None:
    constraint = grammar.json_constraint(tokenizer, _schema(Flat), 2, _width(tokenizer), max_new_tokens=128)
    with pytest.raises(GenerationError, match="select_rows"):
        constraint.select_rows(torch.tensor([2]))
    constraint.select_rows(torch.tensor([1]))
    with pytest.raises(GenerationError, match="logits of shape"):
        constraint.mask_logits(torch.zeros(2, _width(tokenizer)))


def test_misuse_is_reported(tokenizer: Any) -> None:
    width = _width(tokenizer)
    constraint = grammar.json_constraint(tokenizer, _schema(Flat), 2, width, max_new_tokens=128)
    with pytest.raises(GenerationError, match="logits of shape"):
        constraint.mask_logits(torch.zeros(3, width))
    brace = _spell(tokenizer, "}")[0]
    with pytest.raises(GenerationError, match="not allowed by the output grammar"):
        constraint.advance(torch.tensor([brace, brace]))
    with pytest.raises(InvalidInputError, match="batch_size"):
        grammar.json_constraint(tokenizer, _schema(Flat), 0, width, max_new_tokens=128)


def test_the_json_schema_text_is_kept(tokenizer: Any) -> None:
    constraint = grammar.json_constraint(tokenizer, _schema(Flat), 1, _width(tokenizer), max_new_tokens=128)
    assert constraint.compiled.schema == plan_reply(_schema(Flat), 128).schema
    assert json.loads(constraint.compiled.schema_json) == constraint.compiled.schema


def test_strings_take_the_budget_the_reply_leaves_them(tokenizer: Any) -> None:
    """Logits that never want to close a string: the budget closes it, as late as the reply allows."""
    width, budget = _width(tokenizer), 60
    constraint = grammar.json_constraint(tokenizer, _schema(Flat), 1, width, max_new_tokens=budget)
    score = _adversary(tokenizer, width)
    tokens = _decode(tokenizer, constraint, lambda step: score.repeat(1, 1), budget)[0]
    assert constraint.finished() == [True]
    assert len(tokens) > budget - 10, "no per-string share: the first string runs until closing is due"
    assert constraint.replaced > 0
    Flat.model_validate_json(tokenizer.decode(tokens))


def test_backslash_u_escapes_are_never_emitted(tokenizer: Any) -> None:
    width = _width(tokenizer)
    constraint = grammar.json_constraint(tokenizer, _schema(Flat), 1, width, max_new_tokens=64)
    backslash, u = _spell(tokenizer, "\\u")
    for token in _spell(tokenizer, '{"answer":"'):
        constraint.advance(torch.tensor([token]))
    logits = torch.zeros(1, width)
    logits[0, backslash] = 10.0
    constraint.mask_logits(logits)
    assert int(logits.argmax()) == backslash
    constraint.advance(torch.tensor([backslash]))
    logits = torch.zeros(1, width)
    logits[0, u] = 10.0
    n = _spell(tokenizer, "n")[0]
    logits[0, n] = 5.0
    constraint.mask_logits(logits)
    assert logits[0, u] == float("-inf")
    assert int(logits.argmax()) == n
