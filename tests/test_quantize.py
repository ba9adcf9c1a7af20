"""Opt-in int8 weights for the CPU decode loop: the kernel, the decode loop, the runner option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import llmrun  # noqa: E402
from llmrun.backends.local import LocalRunner  # noqa: E402
from llmrun.backends.local.decode import generate_tokens, prepare_model_for_decoding  # noqa: E402
from llmrun.backends.local.quantize import Int8Linear  # noqa: E402
from llmrun.errors import ConfigurationError, InvalidInputError, UnsupportedFeatureError  # noqa: E402
from llmrun.generation import GenerationConfig  # noqa: E402
from llmrun.schema import Context, Type  # noqa: E402

FAMILIES = ["gpt_neox", "llama"]


@pytest.fixture(scope="module")
def models(tiny_checkpoint_dirs: dict[str, Path]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    return {
        family: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        for family, folder in tiny_checkpoint_dirs.items()
    }


def _linear(out_features: int, in_features: int, bias: bool = True, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Linear(in_features, out_features, bias=bias)


def _batch(rows: list[list[int]]) -> tuple[Any, Any]:
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def _prompts(vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in (5, 11, 1, 8)]


# ----------------------------------------------------------------------------- the kernel


@pytest.mark.parametrize("in_features", [64, 60])  # 60: not a multiple of 8, the dequantizing path
def test_int8_linear_is_the_quantized_weights_arithmetic(in_features: int) -> None:
    lin = _linear(96, in_features)
    q = Int8Linear([lin])
    assert q.qweight.dtype == torch.int8
    assert q.qweight.shape == (96, in_features)
    assert int(q.qweight.abs().max()) == 127  # symmetric, the full range used
    x = torch.randn(5, in_features)
    dequantized = q.qweight.float() * q.scale.float()[:, None]  # [O, I]
    expected = x.bfloat16().float() @ dequantized.T + lin.bias.detach()
    got = q(x)
    assert got.dtype == torch.float32
    assert got.shape == (5, 96)
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)
    exact = torch.nn.functional.linear(x, lin.weight, lin.bias).detach()
    assert float((got - exact).abs().max()) < 0.02 * float(exact.abs().max())


def test_int8_linear_fuses_several_linears_and_keeps_leading_dims() -> None:
    a, b = _linear(32, 64, bias=False, seed=1), _linear(16, 64, bias=True, seed=2)
    fused = Int8Linear([a, b])
    x = torch.randn(2, 3, 64)
    out = fused(x)
    assert out.shape == (2, 3, 48)
    torch.testing.assert_close(out[..., :32], Int8Linear([a])(x))
    torch.testing.assert_close(out[..., 32:], Int8Linear([b])(x))
    assert fused.nbytes == 48 * 64 + 48 * 2  # a quarter of float32, plus bfloat16 scales


def test_fold_norm_is_the_linear_of_the_scaled_and_shifted_norm() -> None:
    from llmrun.backends.local.forward import _fold_norm

    lin, no_bias = _linear(24, 16), _linear(24, 16, bias=False, seed=1)
    scale, shift, n = torch.randn(16), torch.randn(16), torch.randn(5, 16)
    with torch.no_grad():
        torch.testing.assert_close(_fold_norm(lin, scale, shift)(n), lin(n * scale + shift))
        torch.testing.assert_close(_fold_norm(no_bias, scale, None)(n), no_bias(n * scale))
    assert _fold_norm(no_bias, scale, None).bias is None


def test_joined_linears_are_one_matmul_of_both_inputs() -> None:
    from llmrun.backends.local.forward import _joined

    first, second = _linear(12, 20), _linear(12, 8, seed=1)
    a, b = torch.randn(3, 20), torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(_joined(first, second)(torch.cat([a, b], dim=-1)), first(a) + second(b))


def test_int8_folds_the_norms_into_the_linears(models: dict[str, Any]) -> None:
    """int8 (numerics already changed) moves the norms' scales into the next linears: pythia's
    parallel block makes one bare norm, one matmul for q/k/v and the MLP's input, and one for the
    MLP's output and the attention's projection."""
    neox = prepare_model_for_decoding(models["gpt_neox"], quantize="int8").decoder().native
    assert neox is not None
    assert models["gpt_neox"].config.use_parallel_residual
    assert all(
        layer.fc_in is None and layer.dense is None and layer.ln1.weight is None for layer in neox.layers
    )
    llama = prepare_model_for_decoding(models["llama"], quantize="int8").decoder().native
    assert llama is not None
    assert all(layer.norm1.weight is None and layer.norm2.weight is None for layer in llama.layers)
    exact = prepare_model_for_decoding(models["gpt_neox"]).decoder().native  # float32 keeps its norms
    assert exact is not None
    assert all(layer.fc_in is not None and layer.ln1.weight is not None for layer in exact.layers)


# ----------------------------------------------------------------------------- the decode loop


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_logits_stay_close_to_float32(models: dict[str, Any], family: str) -> None:
    model = models[family]
    rows = _prompts(model.config.vocab_size)
    ids, mask = _batch(rows)
    exact = prepare_model_for_decoding(model).decoder().start(ids, mask, 1).prefill()  # [B, V]
    approx = prepare_model_for_decoding(model, quantize="int8").decoder().start(ids, mask, 1).prefill()
    scale = float(exact.abs().max())
    assert float((approx - exact).abs().max()) < 0.05 * scale
    assert not torch.equal(approx, exact)  # it really is another arithmetic


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_batch_equals_single(models: dict[str, Any], family: str) -> None:
    model = models[family]
    prepared = prepare_model_for_decoding(model, quantize="int8")
    rows = _prompts(model.config.vocab_size)
    greedy = GenerationConfig()

    def run(batch: list[list[int]]) -> list[list[int]]:
        ids, mask = _batch(batch)
        return generate_tokens(prepared, ids, mask, max_new_tokens=10, config=greedy, eos_token_ids=())

    together = run(rows)
    assert [len(r) for r in together] == [10] * len(rows)
    assert together == [run([row])[0] for row in rows]


def test_int8_is_refused_where_it_cannot_run(models: dict[str, Any]) -> None:
    model = models["gpt_neox"]
    with pytest.raises(InvalidInputError, match=r"quantize='int4' is not supported.*'int8'"):
        prepare_model_for_decoding(model, quantize="int4")
    with pytest.raises(InvalidInputError, match="pass only one"):
        prepare_model_for_decoding(model, quantize="int8", head_dtype=torch.bfloat16)
    with pytest.raises(InvalidInputError, match="compile=True with quantize='int8' is not supported"):
        prepare_model_for_decoding(model, quantize="int8", compile=True)
    with pytest.raises(UnsupportedFeatureError, match="needs llmrun's own forward"):
        prepare_model_for_decoding(model, quantize="int8", native=False)


# ----------------------------------------------------------------------------- the runner option


class Answer(Type):
    answer: str = Context("a short answer")
    sure: bool = Context("whether the answer is certain")


@pytest.mark.parametrize("family", FAMILIES)
def test_runner_quantize_option_untyped_and_typed(tiny_checkpoint_dirs: dict[str, Path], family: str) -> None:
    runner = llmrun.load(str(tiny_checkpoint_dirs[family]), backend="local", device="cpu", quantize="int8")
    assert isinstance(runner, LocalRunner)
    assert runner.quantize == "int8"
    texts = runner(["Hello there", "1, 2, 3,"], max_new_tokens=8)
    assert len(texts) == 2
    assert all(isinstance(t, str) for t in texts)
    typed = runner("Is the sky blue?", output_type=Answer, max_new_tokens=48)
    assert isinstance(typed, Answer)


def test_runner_quantize_from_the_environment(
    tiny_gpt_neox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMRUN_QUANTIZE", "int8")
    runner = llmrun.load(str(tiny_gpt_neox_dir), backend="local", device="cpu")
    assert isinstance(runner, LocalRunner)
    assert runner.quantize == "int8"


def test_runner_rejects_a_bad_quantize_before_loading(tmp_path: Path) -> None:
    # tmp_path holds no checkpoint: the option is checked before any loading is tried
    with pytest.raises(ConfigurationError, match=r"quantize='fp4' is not supported"):
        llmrun.load(str(tmp_path), backend="local", device="cpu", quantize="fp4")
