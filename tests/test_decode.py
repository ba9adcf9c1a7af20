"""The local decode loop against plain transformers ``generate``, and its stopping rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from llmrun.backends.local.decode import (  # noqa: E402
    PreparedModel,
    TokenConstraint,
    generate_tokens,
    prepare_model_for_decoding,
)
from llmrun.errors import InvalidInputError  # noqa: E402
from llmrun.generation import GenerationConfig  # noqa: E402

GREEDY = GenerationConfig()
N = 12
PROMPT_LENGTHS = (5, 11, 1, 8)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Tiny models run fastest on one thread, and a busy machine then cannot stall a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tiny_gpt_neox_dir: Path, tiny_llama_dir: Path) -> dict[str, Any]:
    """The tiny checkpoints (random weights, float32), plus two inline variants."""
    from transformers import (
        AutoModelForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
    )

    loaded = {
        "gpt_neox": AutoModelForCausalLM.from_pretrained(tiny_gpt_neox_dir, dtype=torch.float32),
        "llama": AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32),
    }
    torch.manual_seed(0)
    loaded["gpt_neox_sequential"] = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=300,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            rotary_pct=0.5,
            use_parallel_residual=False,
            max_position_embeddings=128,
            eos_token_id=0,
        )
    )
    loaded["gpt2"] = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=128, bos_token_id=0, eos_token_id=0
        )
    )
    for model in loaded.values():
        model.eval()
    return loaded


def prompts(vocab: int, lengths: tuple[int, ...] = PROMPT_LENGTHS, seed: int = 1) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


def left_pad(rows: list[list[int]], pad: int = 2) -> tuple[Any, Any]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def eos_of(model: Any) -> list[int]:
    model = model.model if isinstance(model, PreparedModel) else model
    eos = model.generation_config.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def hf_greedy(model: Any, rows: list[list[int]], n: int = N, **kwargs: Any) -> list[list[int]]:
    """Plain transformers greedy generation; new tokens per row, cut before the first EOS."""
    ids, mask = left_pad(rows)
    eos = eos_of(model)
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=n,
            pad_token_id=2,
            eos_token_id=eos or None,
            **kwargs,
        )
    result = []
    for row in out[:, ids.shape[1] :].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        result.append(row[:cut])
    return result


def ours(
    model: Any, rows: list[list[int]], n: int = N, config: GenerationConfig = GREEDY, **kwargs: Any
) -> list[list[int]]:
    ids, mask = left_pad(rows, pad=kwargs.pop("pad", 2))
    kwargs.setdefault("eos_token_ids", eos_of(model))
    return generate_tokens(model, ids, mask, max_new_tokens=n, config=config, **kwargs)


def vocab_of(model: Any) -> int:
    model = model.model if isinstance(model, PreparedModel) else model
    return int(model.get_input_embeddings().weight.shape[0])


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt_neox_sequential", "gpt2"])
@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
def test_greedy_equals_transformers_single_and_batch(
    models: dict[str, Any], family: str, native: bool
) -> None:
    model = models[family]
    prepared = prepare_model_for_decoding(model, native=native)
    expected_path = family.removesuffix("_sequential") if native and family != "gpt2" else "generic"
    assert prepared.path == expected_path
    rows = prompts(vocab_of(model))
    batch_ref = hf_greedy(model, rows)
    assert ours(prepared, rows) == batch_ref
    for row, ref in zip(rows, batch_ref, strict=True):
        single_ref = hf_greedy(model, [row])
        assert single_ref == [ref]  # transformers itself: batch row == single prompt
        assert ours(prepared, [row]) == single_ref


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_batch_equals_single_with_any_pad_id(models: dict[str, Any], family: str) -> None:
    model = models[family]
    rows = prompts(vocab_of(model), lengths=(3, 14, 7, 1, 9), seed=5)
    singles = [ours(model, [row], n=20)[0] for row in rows]
    assert ours(model, rows, n=20, pad=vocab_of(model) + 1000) == singles  # an out-of-vocab pad is fine


def test_repetition_penalty_equals_transformers(models: dict[str, Any]) -> None:
    model = models["gpt_neox"]
    config = GenerationConfig(repetition_penalty=1.5)
    for row in prompts(vocab_of(model), lengths=(6, 10), seed=3):
        assert ours(model, [row], n=16, config=config) == hf_greedy(
            model, [row], n=16, repetition_penalty=1.5
        )


def test_repetition_penalty_ignores_padding(models: dict[str, Any]) -> None:
    model = models["llama"]
    config = GenerationConfig(repetition_penalty=1.3)
    rows = prompts(vocab_of(model), lengths=(2, 12), seed=4)
    assert ours(model, rows, n=10, config=config, pad=rows[0][0]) == [
        ours(model, [row], n=10, config=config)[0] for row in rows
    ]


def test_bfloat16_head_is_an_option(models: dict[str, Any]) -> None:
    model = models["gpt_neox"]
    prepared = prepare_model_for_decoding(model, head_dtype=torch.bfloat16)
    assert prepared.decoder().head is not None
    assert prepared.decoder().head.weight.dtype == torch.bfloat16
    out = ours(prepared, prompts(vocab_of(model)), n=5, eos_token_ids=[])
    assert [len(r) for r in out] == [5] * len(PROMPT_LENGTHS)


def test_extra_layouts_keep_tokens(models: dict[str, Any]) -> None:
    model = models["llama"]
    rows = prompts(vocab_of(model), lengths=(4, 9, 2, 6, 5, 3), seed=8)
    plain = prepare_model_for_decoding(model, extra_layouts=False)
    fast = prepare_model_for_decoding(model, extra_layouts=True)
    native = fast.decoder().native
    assert native is not None
    assert native.layers[0].gate_up.t_weight is not None  # the extra layouts were made
    assert ours(fast, rows) == ours(plain, rows)


def test_one_row_takes_the_layout_every_thread_reads(models: dict[str, Any]) -> None:
    """MKL multiplies one row on one thread: with more threads, one row goes through oneDNN's
    packed copy (split over the threads) instead of the transposed copy; tokens stay transformers'."""
    from llmrun.backends.local.kernels import LinearKernel

    torch.manual_seed(0)
    weight, bias, x = torch.randn(96, 32), torch.randn(96), torch.randn(1, 32)
    kernel = LinearKernel(weight, bias, layouts=True)
    if kernel.packed is None or kernel.t_weight is None:
        pytest.skip("this torch build has no oneDNN: there is no packed copy to choose")
    packed = torch.ops.mkldnn._linear_pointwise(x, kernel.packed, bias, "none", [], "")
    assert torch.equal(kernel(x), torch.addmm(bias, x, kernel.t_weight))  # one thread (this module's)
    torch.set_num_threads(2)
    try:
        assert torch.equal(kernel(x), packed)
        for family in ("gpt_neox", "llama"):
            model = models[family]
            for row in prompts(vocab_of(model), lengths=(6, 1)):
                assert ours(prepare_model_for_decoding(model), [row]) == hf_greedy(model, [row])
    finally:
        torch.set_num_threads(1)


def test_changed_weights_are_picked_up(models: dict[str, Any]) -> None:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(3)
    model = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    ).eval()
    prepared = prepare_model_for_decoding(model)
    rows = prompts(200, lengths=(5,))
    before = ours(prepared, rows, eos_token_ids=[])
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(-1.0)  # in place, like an optimizer step
    after = ours(prepared, rows, eos_token_ids=[])
    assert after != before
    assert after == hf_greedy(model, rows)


# ----------------------------------------------------------------------------- sampling


def test_seeded_sampling_is_deterministic(models: dict[str, Any]) -> None:
    model = models["llama"]
    rows = prompts(vocab_of(model))
    config = GenerationConfig(temperature=1.5, top_k=50, top_p=0.95, seed=123)
    first = ours(model, rows, n=16, config=config, eos_token_ids=[])
    assert ours(model, rows, n=16, config=config, eos_token_ids=[]) == first
    other = ours(model, rows, n=16, config=config.merged(seed=124), eos_token_ids=[])
    assert other != first
    assert first != ours(model, rows, n=16, eos_token_ids=[])  # not simply greedy


@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(temperature=0.7, top_k=1, seed=1),
        GenerationConfig(temperature=2.0, top_p=1e-6, seed=2),
        GenerationConfig(temperature=1.0, top_k=5, top_p=1e-6, seed=3),
    ],
    ids=["top_k=1", "tiny_top_p", "top_k_and_top_p"],
)
def test_filters_that_leave_one_token_are_greedy(models: dict[str, Any], config: GenerationConfig) -> None:
    model = models["gpt_neox"]
    rows = prompts(vocab_of(model))
    assert ours(model, rows, n=10, config=config) == ours(model, rows, n=10)


def test_sampling_follows_top_k(models: dict[str, Any]) -> None:
    """Every sampled first token is among the k most likely ones."""
    model = models["gpt_neox"]
    row = prompts(vocab_of(model), lengths=(6,))[0]
    with torch.no_grad():
        top3 = set(model(torch.tensor([row])).logits[0, -1].topk(3).indices.tolist())
    seen = {
        ours(model, [row], n=1, config=GenerationConfig(temperature=5.0, top_k=3, seed=s), eos_token_ids=[])[
            0
        ][0]
        for s in range(40)
    }
    assert seen <= top3
    assert len(seen) > 1


# ----------------------------------------------------------------------------- stopping


def test_eos_stops_a_row_and_is_not_returned(models: dict[str, Any]) -> None:
    model = models["llama"]
    rows = prompts(vocab_of(model))
    free = ours(model, rows, eos_token_ids=[])
    eos = free[1][3]  # the 4th token of row 1 becomes EOS
    got = ours(model, rows, eos_token_ids={eos})
    for out, ref in zip(got, free, strict=True):
        cut = ref.index(eos) if eos in ref else len(ref)
        assert out == ref[:cut]
    assert len(got[1]) <= 3


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
def test_should_stop_and_max_new_tokens(models: dict[str, Any], native: bool) -> None:
    model = prepare_model_for_decoding(models["gpt_neox"], native=native)
    rows = prompts(vocab_of(model))
    free = ours(model, rows, n=15, eos_token_ids=[])
    calls: list[tuple[int, int]] = []

    def should_stop(row: int, tokens: list[int]) -> bool:
        calls.append((row, len(tokens)))
        return row == 2 and len(tokens) == 4

    got = ours(model, rows, n=15, eos_token_ids=[], should_stop=should_stop)
    assert got[2] == free[2][:4]
    assert [g for i, g in enumerate(got) if i != 2] == [f for i, f in enumerate(free) if i != 2]
    assert all(len(g) == 15 for i, g in enumerate(got) if i != 2)
    assert (2, 5) not in calls  # a stopped row is never extended
    assert ours(model, rows, n=1, eos_token_ids=[]) == [f[:1] for f in free]


def test_on_step_streams_every_row(models: dict[str, Any]) -> None:
    model = models["llama"]
    rows = prompts(vocab_of(model))
    steps: list[list[int]] = []
    got = ours(
        model,
        rows,
        n=8,
        eos_token_ids=[],
        should_stop=lambda row, toks: row == 0 and len(toks) == 2,
        on_step=lambda tokens: steps.append(tokens.tolist()),
    )
    assert len(steps) == 8
    assert all(len(s) == len(rows) for s in steps)
    for r, out in enumerate(got):
        assert [s[r] for s in steps[: len(out)]] == out
    assert all(s[0] == -1 for s in steps[2:])  # row 0 stopped after 2 tokens


class AllowedTokens:
    """A test double of the TokenConstraint protocol: a fixed token set, finished after k tokens."""

    def __init__(self, allowed: list[int], k: list[int]) -> None:
        self.allowed = allowed
        self.k = k
        self.count = [0] * len(k)
        self.seen_batch_sizes: list[int] = []

    def mask_logits(self, logits: Any) -> None:
        self.seen_batch_sizes.append(logits.shape[0])
        keep = torch.full_like(logits, float("-inf"))
        keep[:, self.allowed] = 0.0
        logits.add_(keep)

    def advance(self, tokens: Any) -> None:
        assert tokens.shape == (len(self.k),)
        for row, token in enumerate(tokens.tolist()):
            if self.count[row] < self.k[row]:
                assert token in self.allowed
                self.count[row] += 1

    def finished(self) -> list[bool]:
        return [c >= k for c, k in zip(self.count, self.k, strict=True)]


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_constraint_is_honoured(models: dict[str, Any], family: str) -> None:
    model = models[family]
    rows = prompts(vocab_of(model))
    allowed = [7, 11, 19, 23]
    constraint = AllowedTokens(allowed, k=[3, 6, 1, 4])
    assert isinstance(constraint, TokenConstraint)
    got = ours(model, rows, n=N, eos_token_ids=[], constraint=constraint)
    assert [len(g) for g in got] == [3, 6, 1, 4]
    assert all(t in allowed for g in got for t in g)
    assert set(constraint.seen_batch_sizes) == {len(rows)}  # no select_rows: always the full batch


class SelectableAllowedTokens(AllowedTokens):
    """The same test double with ``select_rows``: it then sees only the rows still running."""

    def __init__(self, allowed: list[int], k: list[int]) -> None:
        super().__init__(allowed, k)
        self.rows = list(range(len(k)))  # original row of each row of the current batch

    def advance(self, tokens: Any) -> None:
        assert tokens.shape == (len(self.rows),)
        for row, token in zip(self.rows, tokens.tolist(), strict=True):
            if self.count[row] < self.k[row]:
                assert token in self.allowed
                self.count[row] += 1

    def select_rows(self, index: Any) -> None:
        self.rows = [self.rows[j] for j in index.tolist()]


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_a_constraint_that_selects_rows_lets_stopped_rows_leave(models: dict[str, Any], family: str) -> None:
    model = models[family]
    rows = prompts(vocab_of(model))
    allowed, k = [7, 11, 19, 23], [3, 6, 1, 4]
    whole = ours(model, rows, n=N, eos_token_ids=[], constraint=AllowedTokens(allowed, k))
    constraint = SelectableAllowedTokens(allowed, k)
    got = ours(model, rows, n=N, eos_token_ids=[], constraint=constraint)
    assert got == whole
    assert constraint.seen_batch_sizes == [4, 3, 3, 2, 1, 1]  # rows leave after 1, 3 and 4 tokens


@pytest.mark.parametrize("width", [50304, 50277, 300, 100])
@pytest.mark.parametrize("batch", [1, 3, 32])
def test_greedy_argmax_is_torchs_argmax_ties_included(width: int, batch: int) -> None:
    from llmrun.backends.local.sampling import greedy_argmax

    gen = torch.Generator().manual_seed(width + batch)
    logits = torch.randn(batch, width, generator=gen)
    assert torch.equal(greedy_argmax(logits), logits.argmax(dim=-1))
    tied = logits.round()  # many equal values: the first index must win, as in torch
    tied[:, width - 1] = tied.max() + 1  # the tail past the last whole block
    tied[0, width - 1] = tied[0, 0] = tied.max() + 2
    assert torch.equal(greedy_argmax(tied), tied.argmax(dim=-1))
    assert torch.equal(greedy_argmax(tied[:, :-1]), tied[:, :-1].argmax(dim=-1))  # a non-contiguous view


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("ids", "mask", "message"),
    [
        ([[5, 6, 7]], [[1, 1, 0]], "left-padded"),
        ([[5, 6, 7]], [[1, 1]], "shape"),
        ([[5, 6], [7, 8]], [[1, 1], [0, 0]], "no tokens"),
        ([[5, 6, 7]], [[1, 2, 1]], "only 0"),
        ([[5, 10**6]], [[1, 1]], "vocabulary"),
        ([[]], [[]], "at least 1"),
    ],
)
def test_bad_batches_raise_clear_errors(models: dict[str, Any], ids: Any, mask: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        generate_tokens(
            models["gpt_neox"],
            torch.tensor(ids, dtype=torch.long),
            torch.tensor(mask, dtype=torch.long),
            max_new_tokens=3,
            config=GREEDY,
            eos_token_ids=[],
        )


def test_bad_options_raise_clear_errors(models: dict[str, Any]) -> None:
    model = models["gpt_neox"]
    ids, mask = left_pad([[5, 6]])
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        generate_tokens(model, ids, mask, max_new_tokens=0, config=GREEDY, eos_token_ids=[])
    with pytest.raises(InvalidInputError, match="GenerationConfig"):
        generate_tokens(model, ids, mask, max_new_tokens=2, config={"temperature": 0}, eos_token_ids=[])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="head_dtype"):
        prepare_model_for_decoding(model, head_dtype=torch.int8)
    with pytest.raises(InvalidInputError, match=r"nn\.Module"):
        prepare_model_for_decoding("not a model")  # type: ignore[arg-type]


def test_raw_model_is_prepared_once(models: dict[str, Any]) -> None:
    from llmrun.backends.local import decode

    model = models["gpt_neox"]
    ours(model, [[5, 6]], n=2)
    first = decode._PREPARED[model]
    ours(model, [[5, 6]], n=2)
    assert decode._PREPARED[model] is first
    assert isinstance(first, PreparedModel)


def test_the_cache_of_prepared_models_does_not_keep_models_alive() -> None:
    import gc
    import weakref

    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    ).eval()
    ours(model, [[5, 6]], n=2, eos_token_ids=[])
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, raised while compiling
def test_compiled_step_equals_eager(models: dict[str, Any]) -> None:
    """The opt-in torch.compile path (static KV cache) gives the eager tokens; compiling takes ~20 s."""
    model = models["llama"]
    rows = prompts(vocab_of(model), lengths=(4, 9, 2), seed=6)
    compiled = prepare_model_for_decoding(model, compile=True)
    assert compiled.decoder().compiled_step is not None
    expected = ours(model, rows, n=6)
    assert ours(compiled, rows, n=6) == expected
    assert ours(compiled, rows, n=6) == expected  # second call: compiled graph reused
