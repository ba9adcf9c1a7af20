"""The screened LM head: an int8 screen, then float32 for the candidates; the argmax is float32's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llmrun.backends.local.decode import generate_tokens, prepare_model_for_decoding  # noqa: E402
from llmrun.backends.local.screened_head import SCREEN_MAX_ROWS, ArgmaxHead, ScreenedHead  # noqa: E402
from llmrun.generation import GenerationConfig  # noqa: E402


def _exact(weight: Any, bias: Any, x: Any) -> Any:
    return torch.nn.functional.linear(x, weight, bias)


def _head(vocab: int = 4000, hidden: int = 64, bias: bool = False, seed: int = 0) -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(vocab, hidden, generator=gen) * 0.05
    return weight, (torch.randn(vocab, generator=gen) if bias else None)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 3])
def test_argmax_equals_float32_on_random_inputs(bias: bool, rows: int) -> None:
    weight, b = _head(bias=bias)
    head = ScreenedHead(weight, b, weight.shape[0], lambda x: _exact(weight, b, x))
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        x = torch.randn(rows, weight.shape[1], generator=gen) * 3
        got = head(x)
        expected = _exact(weight, b, x)
        assert torch.equal(got.argmax(-1), expected.argmax(-1))
        kept = torch.isfinite(got)
        assert kept.sum() < got.numel() / 4  # the screen really dropped most ids
        torch.testing.assert_close(got[kept], expected[kept], rtol=1e-5, atol=1e-5)


def test_near_ties_are_decided_in_float32() -> None:
    """Rows that differ by less than the int8 step: the screen keeps both, float32 decides."""
    weight, _ = _head(vocab=512, seed=2)
    x = torch.randn(1, weight.shape[1], generator=torch.Generator().manual_seed(3))
    best = int(_exact(weight, None, x).argmax())
    rival = (best + 1) % weight.shape[0]
    weight[rival] = weight[best]
    weight[rival, 0] += 1e-4 * torch.sign(x[0, 0])  # a hair larger in float32, the same in int8
    head = ScreenedHead(weight, None, weight.shape[0], lambda h: _exact(weight, None, h))
    assert int(head(x).argmax()) == rival == int(_exact(weight, None, x).argmax())


def test_ids_past_the_vocabulary_are_never_candidates() -> None:
    weight, _ = _head(vocab=600)
    weight[550:] = 10.0  # padding rows that would win every time
    head = ScreenedHead(weight, None, 550, lambda h: _exact(weight, None, h))
    x = torch.randn(2, weight.shape[1]).abs()
    got = head(x)
    assert torch.isinf(got[:, 550:]).all()
    assert torch.equal(got.argmax(-1), _exact(weight, None, x)[:, :550].argmax(-1))


def test_many_rows_or_a_flat_head_fall_back_to_the_whole_head() -> None:
    weight, _ = _head(vocab=1000)
    full_calls: list[int] = []

    def full(x: Any) -> Any:
        full_calls.append(x.shape[0])
        return _exact(weight, None, x)

    head = ScreenedHead(weight, None, 1000, full)
    x = torch.randn(SCREEN_MAX_ROWS + 1, weight.shape[1])
    torch.testing.assert_close(head(x), _exact(weight, None, x))
    assert full_calls == [SCREEN_MAX_ROWS + 1]
    flat = ScreenedHead(
        torch.ones_like(weight), None, 1000, lambda h: _exact(torch.ones_like(weight), None, h)
    )
    out = flat(torch.randn(1, weight.shape[1]))
    assert torch.isfinite(out).all()  # every id a candidate: computed whole instead


@pytest.mark.parametrize("rows", [1, 4])
def test_refine_gives_the_float32_argmax_among_allowed_ids(rows: int) -> None:
    """A grammar masks ids after the screen: the argmax over what is left is still float32's."""
    weight, b = _head(vocab=3000, bias=True, seed=5)
    screen = ScreenedHead(weight, b, 2900, lambda h: _exact(weight, b, h))
    gen = torch.Generator().manual_seed(6)
    rounds_with_work = 0
    for trial in range(100):
        x = torch.randn(rows, weight.shape[1], generator=gen) * 3
        head = screen.session()
        logits = head(x)
        allowed = torch.rand(rows, weight.shape[0], generator=gen) < (0.5 if trial % 2 else 0.01)
        allowed[:, 2900:] = True  # past the vocabulary: must stay out all the same
        logits.masked_fill_(~allowed, float("-inf"))
        first = logits.argmax(-1)
        tokens = head.refine(logits, first)
        expected = _exact(weight, b, x).masked_fill(~allowed, float("-inf"))[:, :2900].argmax(-1)
        assert torch.equal(tokens, expected)
        rounds_with_work += int(not torch.equal(first, tokens))
    assert rounds_with_work > 0  # some masks did hide every candidate, and refine found the answer


def test_refine_stops_when_every_id_is_masked() -> None:
    weight, _ = _head(vocab=500)
    head = ScreenedHead(weight, None, 500, lambda h: _exact(weight, None, h)).session()
    logits = head(torch.randn(1, weight.shape[1]))
    logits.fill_(float("-inf"))
    assert head.refine(logits, logits.argmax(-1)).shape == (1,)


@pytest.fixture(scope="module")
def models(tiny_checkpoint_dirs: dict[str, Path]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    return {
        family: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        for family, folder in tiny_checkpoint_dirs.items()
    }


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_only_argmax_only_calls_are_screened(models: dict[str, Any], family: str) -> None:
    decoder = prepare_model_for_decoding(models[family]).decoder()
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    greedy = decoder.start(ids, mask, 4, argmax_only=True, vocab_size=100)
    assert isinstance(greedy.head, ArgmaxHead)  # type: ignore[attr-defined]
    assert greedy.head.screen.vocab_size == 100  # type: ignore[attr-defined]
    assert not isinstance(decoder.start(ids, mask, 4).head, ArgmaxHead)  # type: ignore[attr-defined]
    unscreened = prepare_model_for_decoding(models[family], extra_layouts=False).decoder()
    plain = unscreened.start(ids, mask, 4, argmax_only=True)
    assert not isinstance(plain.head, ArgmaxHead)  # type: ignore[attr-defined]


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_greedy_tokens_with_and_without_the_screen_are_equal(models: dict[str, Any], family: str) -> None:
    model = models[family]
    gen = torch.Generator().manual_seed(4)
    rows = [torch.randint(3, model.config.vocab_size, (n,), generator=gen).tolist() for n in (6, 2, 9)]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    vocab = model.config.vocab_size - 7
    kwargs: dict[str, Any] = {"max_new_tokens": 16, "eos_token_ids": (), "vocab_size": vocab}
    screened = generate_tokens(
        prepare_model_for_decoding(model), ids, mask, config=GenerationConfig(), **kwargs
    )
    whole = generate_tokens(
        prepare_model_for_decoding(model, extra_layouts=False), ids, mask, config=GenerationConfig(), **kwargs
    )
    assert screened == whole
    assert max(t for row in screened for t in row) < vocab


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_typed_greedy_tokens_with_and_without_the_screen_are_equal(
    models: dict[str, Any], tiny_checkpoint_dirs: dict[str, Path], family: str
) -> None:
    """A grammar masks the screened logits; refine keeps the choice float32's."""
    import pydantic
    from transformers import AutoTokenizer

    from llmrun.backends.local.grammar import json_constraint

    class Reply(pydantic.BaseModel):
        word: str
        count: int
        ok: bool

    model = models[family]
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint_dirs[family])
    width = int(model.get_output_embeddings().weight.shape[0])
    ids = torch.tensor([[5, 9, 14, 3], [0, 0, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])

    def run(**prepare: Any) -> list[list[int]]:
        constraint = json_constraint(tokenizer, Reply.model_json_schema(), 2, width, max_new_tokens=48)
        out = generate_tokens(
            prepare_model_for_decoding(model, **prepare),
            ids,
            mask,
            max_new_tokens=48,
            config=GenerationConfig(),
            eos_token_ids=(),
            constraint=constraint,
            vocab_size=len(tokenizer),
        )
        assert all(constraint.finished())
        return out

    screened, whole = run(), run(extra_layouts=False)
    assert screened == whole
    for tokens in screened:
        Reply.model_validate_json(tokenizer.decode(tokens))
