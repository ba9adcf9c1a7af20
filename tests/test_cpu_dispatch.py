"""The decode loop's kernels chosen by what the CPU has: detection, the override, the int8 kernels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llmrun.backends.local import cpu_features  # noqa: E402
from llmrun.backends.local.cpu_features import CpuFeatures, detect  # noqa: E402
from llmrun.backends.local.cpu_kernels import RowInt8Linear, int8_kernel_name  # noqa: E402
from llmrun.backends.local.decode import generate_tokens, prepare_model_for_decoding  # noqa: E402
from llmrun.backends.local.quantize import Int8Linear  # noqa: E402
from llmrun.generation import GenerationConfig  # noqa: E402

FBGEMM = (
    "fbgemm" in torch.backends.quantized.supported_engines
    or "x86" in torch.backends.quantized.supported_engines
)
needs_fbgemm = pytest.mark.skipif(not FBGEMM, reason="this torch build has no fbgemm/x86 quantized engine")


@pytest.fixture
def cpu_as(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Pretend the CPU has the given flags (``LLMRUN_CPU_FEATURES``), for the duration of a test."""

    def set_flags(flags: str) -> None:
        monkeypatch.setenv("LLMRUN_CPU_FEATURES", flags)
        detect.cache_clear()

    yield set_flags
    monkeypatch.delenv("LLMRUN_CPU_FEATURES", raising=False)
    detect.cache_clear()


def test_detect_reads_torch_and_cpuinfo() -> None:
    found = detect()
    assert found.capability == torch.backends.cpu.get_cpu_capability()
    if Path("/proc/cpuinfo").is_file() and found.capability in ("AVX2", "AVX512"):
        assert "avx2" in found.flags
    assert found.capability in found.describe()


def test_flags_decide_the_properties(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16\n")
    flags = cpu_features._proc_flags(str(cpuinfo))
    epyc = CpuFeatures("AVX512", flags)
    assert epyc.avx512
    assert epyc.native_bf16
    assert epyc.int8_dot
    assert not epyc.amx
    old = CpuFeatures("AVX2", frozenset({"avx2", "fma"}))
    assert not (old.avx512)
    assert not (old.native_bf16)
    assert not (old.int8_dot)
    assert CpuFeatures("AVX512", frozenset({"amx_tile", "amx_bf16", "amx_int8"})).native_bf16
    assert cpu_features._proc_flags(str(tmp_path / "missing")) == frozenset()


def test_the_override_sets_the_flags(cpu_as: Any) -> None:
    cpu_as("avx2, FMA")
    assert detect() == CpuFeatures("AVX2", frozenset({"avx2", "fma"}))
    cpu_as("avx2,avx512f,avx512_bf16")
    assert detect().capability == "AVX512"
    assert detect().native_bf16


@needs_fbgemm
@pytest.mark.parametrize("bias", [True, False])
def test_row_int8_linear_is_close_and_each_row_is_its_own(bias: bool) -> None:
    torch.manual_seed(0)
    a, b = torch.nn.Linear(64, 40, bias=bias), torch.nn.Linear(64, 24, bias=bias)
    kernel = RowInt8Linear([a, b])  # fused: outputs concatenated
    x = torch.randn(6, 64)
    x[2] *= 100.0  # one loud row must not change the others' quantization
    exact = torch.cat([a(x), b(x)], dim=-1).detach()
    out = kernel(x)
    assert out.shape == (6, 64)
    for row in range(6):
        err = float((out[row] - exact[row]).abs().max())
        assert err < 0.03 * float(exact[row].abs().max()), row
        torch.testing.assert_close(kernel(x[row : row + 1])[0], out[row], rtol=0, atol=0)
    assert not torch.equal(out, exact)  # it really is int8 arithmetic
    assert kernel(x.view(2, 3, 64)).shape == (2, 3, 64)


def test_int8_kernel_follows_the_cpu(cpu_as: Any, tiny_checkpoint_dirs: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_dirs["llama"], dtype=torch.float32).eval()
    cpu_as("avx2,fma")
    assert int8_kernel_name() == "weight-only"
    head = prepare_model_for_decoding(model, quantize="int8").decoder().head
    assert isinstance(head, Int8Linear)
    if not FBGEMM:
        pytest.skip("this torch build has no fbgemm/x86 quantized engine: no int8 x int8 kernel")
    cpu_as("avx2,avx512f,avx512_vnni")
    assert int8_kernel_name() == "fbgemm-rows"
    prepared = prepare_model_for_decoding(model, quantize="int8")
    assert isinstance(prepared.decoder().head, RowInt8Linear)
    gen = torch.Generator().manual_seed(3)
    rows = [torch.randint(3, model.config.vocab_size, (n,), generator=gen).tolist() for n in (5, 11, 1)]

    def run(batch: list[list[int]]) -> list[list[int]]:
        width = max(len(r) for r in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(batch):
            ids[i, width - len(r) :], mask[i, width - len(r) :] = torch.tensor(r), 1
        return generate_tokens(
            prepared, ids, mask, max_new_tokens=8, config=GenerationConfig(), eos_token_ids=()
        )

    assert run(rows) == [run([row])[0] for row in rows]  # batch == single, as with the weight-only kernel


def test_compile_takes_a_torch_compile_mode(tiny_checkpoint_dirs: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    from llmrun.errors import InvalidInputError

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_dirs["llama"], dtype=torch.float32).eval()
    with pytest.raises(InvalidInputError, match=r"compile='fast'.*reduce-overhead"):
        prepare_model_for_decoding(model, compile="fast")
    prepared = prepare_model_for_decoding(model, compile="reduce-overhead")  # CUDA graphs on a GPU
    assert prepared.decoder().compiled_step is not None  # compiled lazily, at the first step


@needs_fbgemm
def test_row_int8_screen_bounds_every_logit() -> None:
    """The screen's error bound holds for every logit, so the argmax stays float32's."""
    from llmrun.backends.local.cpu_kernels import RowInt8ScreenedHead

    torch.manual_seed(1)
    weight = torch.randn(500, 64) * 0.02
    head = RowInt8ScreenedHead(weight, None, 480, lambda x: x @ weight.t())
    x = torch.randn(4, 64)
    x[1] *= 50.0
    x[2, 0] = 40.0  # one outlier: a coarse activation step for that row
    approx = head.screen(x)  # [B, 480]
    exact = x @ weight[:480].t()
    bound = head.error_bound(x, approx.clone())
    assert bool(((approx - exact).abs() <= bound).all())
    assert float(((approx - exact).abs() / bound).max()) > 0.05  # a bound, not a wild overestimate
    logits, is_exact = head.screened(x)
    assert is_exact is not None
    assert torch.equal(logits[:, :480].argmax(-1), exact.argmax(-1))
    assert bool(torch.isinf(logits[:, 480:]).all())


@needs_fbgemm
def test_row_int8_linear_buffers_follow_the_thread_and_the_inference_mode() -> None:
    """The scaled rows go to a buffer per thread, so concurrent calls and calls in and out of
    ``torch.inference_mode`` give what a lone call gives."""
    import threading

    torch.manual_seed(2)
    kernel = RowInt8Linear([torch.nn.Linear(64, 40)])
    x = torch.randn(5, 64)
    with torch.inference_mode():
        inside = kernel(x)
    outside = kernel(x)  # the buffer made under inference mode is not written to outside it
    assert torch.equal(inside, outside)
    alone = [kernel(x[i : i + 1]) for i in range(5)]
    wrong: list[int] = []

    def worker(i: int) -> None:
        for _ in range(200):
            if not torch.equal(kernel(x[i : i + 1]), alone[i]):
                wrong.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


@pytest.mark.parametrize("flags", ["avx2,fma", "avx2,avx512f,avx512_vnni"])
def test_int8_parallel_block_is_fused_and_close_on_either_kernel(
    cpu_as: Any, tiny_checkpoint_dirs: dict[str, Path], flags: str
) -> None:
    """The folded, joined int8 block runs on both kernels (weight-only on AVX2, fbgemm with int8
    dot products) and stays close to float32."""
    from transformers import AutoModelForCausalLM

    if "vnni" in flags and not FBGEMM:
        pytest.skip("this torch build has no fbgemm/x86 quantized engine: no int8 x int8 kernel")
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_dirs["gpt_neox"], dtype=torch.float32).eval()
    cpu_as(flags)
    decoder = prepare_model_for_decoding(model, quantize="int8").decoder()
    assert decoder.native is not None
    layer = decoder.native.layers[0]
    assert layer.fc_in is None
    assert isinstance(layer.fc_out, Int8Linear if flags == "avx2,fma" else RowInt8Linear)
    ids = torch.randint(3, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    exact = prepare_model_for_decoding(model).decoder().start(ids, mask, 1).prefill()
    approx = decoder.start(ids, mask, 1).prefill()
    assert float((approx - exact).abs().max()) < 0.05 * float(exact.abs().max())
