"""Tiny test checkpoints with seeded random weights, the reference configs, and the demo pythia.

Everything here runs offline in seconds and needs no downloaded weights. Tokenizers live in
:mod:`llmrun.testing.tokenizers` and the hub cache layout in :mod:`llmrun.testing.hf_cache`; their
names are also importable from here:

- :func:`train_byte_level_bpe_tokenizer` / :func:`train_sentencepiece_style_tokenizer` train a
  GPT-NeoX-like or a Llama-like tokenizer on a small built-in English corpus;
- :func:`build_tiny_checkpoint` writes a loadable ``GPTNeoXForCausalLM`` or ``LlamaForCausalLM``
  folder with seeded random weights; :func:`build_checkpoint` does the same for any config;
- :func:`install_in_hf_cache` lays a folder out exactly as ``huggingface_hub`` caches a hub repo,
  so ``from_pretrained("org/name")`` finds it with ``HF_HUB_OFFLINE=1``;
- :func:`install_demo_pythia` installs ``EleutherAI/pythia-70m`` (real architecture and tokenizer,
  random weights) for offline demos; also ``python -m llmrun.testing.checkpoints install-demo-pythia``.

See :mod:`llmrun.testing.hf_cache` for how the cache environment variables are read.

torch, transformers and tokenizers are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from llmrun.errors import ConfigurationError, InvalidInputError, LLMRunError
from llmrun.testing.hf_cache import checkpoint_commit_hash as checkpoint_commit_hash
from llmrun.testing.hf_cache import install_in_hf_cache as install_in_hf_cache
from llmrun.testing.hf_cache import use_hf_cache as use_hf_cache
from llmrun.testing.tokenizers import CORPUS as CORPUS
from llmrun.testing.tokenizers import load_llama2_tokenizer as load_llama2_tokenizer
from llmrun.testing.tokenizers import load_pythia_tokenizer as load_pythia_tokenizer
from llmrun.testing.tokenizers import train_byte_level_bpe_tokenizer as train_byte_level_bpe_tokenizer
from llmrun.testing.tokenizers import (
    train_sentencepiece_style_tokenizer as train_sentencepiece_style_tokenizer,
)

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

__all__ = [
    "CORPUS",
    "DEMO_PYTHIA_REPO_ID",
    "TINY_CONTEXT",
    "TINY_REPO_IDS",
    "Family",
    "build_checkpoint",
    "build_tiny_checkpoint",
    "checkpoint_commit_hash",
    "install_demo_pythia",
    "install_in_hf_cache",
    "load_llama2_tokenizer",
    "load_pythia_tokenizer",
    "main",
    "padded_vocab_size",
    "pythia_70m_config",
    "tiny_config",
    "train_byte_level_bpe_tokenizer",
    "train_sentencepiece_style_tokenizer",
    "use_hf_cache",
]

Family = Literal["gpt_neox", "llama"]
FAMILIES: tuple[Family, ...] = get_args(Family)

DEMO_PYTHIA_REPO_ID = "EleutherAI/pythia-70m"
"""The hub id under which :func:`install_demo_pythia` installs the demo model."""

TINY_REPO_IDS: dict[Family, str] = {
    "gpt_neox": "llmrun-testing/tiny-gpt-neox",
    "llama": "llmrun-testing/tiny-llama",
}
"""Hub ids the pytest fixtures use for the tiny checkpoints in the cache layout."""

VOCAB_PAD_MULTIPLE = 128
TINY_CONTEXT = 512
"""Context of the tiny models: room for a nested schema prompt (~200 tokens) plus a 256-token budget."""
# pythia's spelling; transformers 5 moves these into config.rope_parameters (partial_rotary_factor,
# rope_theta). Passed as a dict so the same call works with transformers 4 and 5.
_NEOX_ROTARY: dict[str, Any] = {"rotary_pct": 0.25, "rotary_emb_base": 10000}


# --------------------------------------------------------------------------- configs


def padded_vocab_size(n_tokens: int, multiple: int = VOCAB_PAD_MULTIPLE) -> int:
    """The embedding width for ``n_tokens`` tokens, padded like pythia's (50,277 -> 50,304).

    Always strictly larger than ``n_tokens``, so tests see ids the tokenizer never produces.
    """
    return (n_tokens // multiple + 1) * multiple


def tiny_config(family: Family, vocab_size: int, *, bos_token_id: int, eos_token_id: int) -> PretrainedConfig:
    """A tiny (2 layers, hidden 64, 4 heads, context :data:`TINY_CONTEXT`) config of the given family."""
    if family == "gpt_neox":
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=256,
            max_position_embeddings=TINY_CONTEXT,
            use_parallel_residual=True,
            tie_word_embeddings=False,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **_NEOX_ROTARY,
        )
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,  # grouped-query attention, so backends meet both layouts
            intermediate_size=128,
            max_position_embeddings=TINY_CONTEXT,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
        )
    raise ConfigurationError(f"unknown checkpoint family {family!r}; use one of {', '.join(FAMILIES)}.")


def pythia_70m_config() -> PretrainedConfig:
    """The config of EleutherAI/pythia-70m (GPTNeoX, 6 layers, hidden 512, vocab 50,304, float16)."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=512,
        num_hidden_layers=6,
        num_attention_heads=8,
        intermediate_size=2048,
        hidden_act="gelu",
        max_position_embeddings=2048,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        dtype="float16",
        **_NEOX_ROTARY,
    )


# --------------------------------------------------------------------------- checkpoints


def _random_state_dict(
    config: PretrainedConfig, seed: int, dtype: torch.dtype
) -> tuple[str, dict[str, torch.Tensor]]:
    """The causal-LM class name for ``config`` and seeded weights for it.

    Matrices are N(0, initializer_range), norm scales 1, biases 0; drawn in float32 on the CPU in
    parameter order, then cast, so the values depend only on the seed, the config and the torch
    version. Tied parameters appear once (as ``save_pretrained`` writes them).
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]  # shapes only
    std = float(getattr(config, "initializer_range", 0.02))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, param in skeleton.named_parameters():
        if param.ndim >= 2:
            value = torch.empty(param.shape, dtype=torch.float32).normal_(0.0, std, generator=gen)
        elif name.endswith("bias"):
            value = torch.zeros(param.shape, dtype=torch.float32)
        else:  # LayerNorm / RMSNorm scales
            value = torch.ones(param.shape, dtype=torch.float32)
        state[name] = value.to(dtype).contiguous()
    return type(skeleton).__name__, state


def _resolve_dtype(config: PretrainedConfig, dtype: torch.dtype | str | None) -> torch.dtype:
    import torch

    wanted: Any = dtype if dtype is not None else getattr(config, "dtype", None) or torch.float32
    if isinstance(wanted, str):
        resolved = getattr(torch, wanted, None)
        if not isinstance(resolved, torch.dtype):
            raise InvalidInputError(f"unknown dtype {wanted!r}; use e.g. 'float32', 'float16' or 'bfloat16'.")
        return resolved
    if not isinstance(wanted, torch.dtype):
        raise InvalidInputError(f"dtype must be a torch.dtype or its name, got {wanted!r}.")
    return wanted


def build_checkpoint(
    dest: Path | str,
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int = 0,
    dtype: torch.dtype | str | None = None,
    max_shard_size: str = "5GB",
) -> Path:
    """Write a loadable checkpoint folder: config, seeded random safetensors weights, tokenizer.

    ``dtype`` defaults to ``config.dtype`` (else float32). Weights over ``max_shard_size`` are
    sharded with an index file, as ``save_pretrained`` does. ``dest`` is created (parents too) and
    must not already contain a checkpoint. Returns ``dest``.
    """
    from huggingface_hub import save_torch_state_dict
    from transformers import GenerationConfig

    dest = Path(dest)
    if (dest / "config.json").exists():
        raise InvalidInputError(f"{dest} already contains a checkpoint (config.json); pick an empty folder.")
    torch_dtype = _resolve_dtype(config, dtype)
    n_tokens = len(tokenizer)
    if n_tokens > config.vocab_size:
        raise InvalidInputError(
            f"the tokenizer has {n_tokens} tokens but config.vocab_size is {config.vocab_size}; "
            f"set vocab_size to at least {n_tokens} (e.g. padded_vocab_size({n_tokens}))."
        )
    config.dtype = torch_dtype
    class_name, state = _random_state_dict(config, seed, torch_dtype)
    config.architectures = [class_name]

    dest.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(state, dest, max_shard_size=max_shard_size, safe_serialization=True)
    config.save_pretrained(dest)
    GenerationConfig.from_model_config(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def build_tiny_checkpoint(dest: Path | str, family: Family, *, seed: int = 0) -> Path:
    """Build a tiny checkpoint of ``family`` ("gpt_neox" like pythia, or "llama") with a trained tokenizer.

    2 layers, hidden 64, 4 heads, context 512, vocab padded above the tokenizer's; float32 weights
    determined by ``seed``. Loads with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(dest)``.
    """
    if family == "gpt_neox":
        tokenizer = train_byte_level_bpe_tokenizer()
    elif family == "llama":
        tokenizer = train_sentencepiece_style_tokenizer()
    else:
        raise ConfigurationError(f"unknown checkpoint family {family!r}; use one of {', '.join(FAMILIES)}.")
    config = tiny_config(
        family,
        padded_vocab_size(len(tokenizer)),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return build_checkpoint(dest, config, tokenizer, seed=seed, dtype="float32")


def install_demo_pythia(
    cache_dir: Path | str | None, tokenizer_json: Path | str, *, seed: int = 0, revision: str = "main"
) -> Path:
    """Install the demo ``EleutherAI/pythia-70m``: the real architecture and tokenizer, seeded random weights.

    ``cache_dir`` defaults to huggingface_hub's cache (``HF_HUB_CACHE``, else ``~/.cache/huggingface/hub``).
    The weights are float16 like the real repo's. Returns the snapshot folder. The text it generates
    is gibberish: the point is to run the whole stack offline.
    """
    tokenizer = load_pythia_tokenizer(tokenizer_json)
    if cache_dir is None:
        import huggingface_hub.constants as hf_constants

        cache_dir = hf_constants.HF_HUB_CACHE
    with tempfile.TemporaryDirectory(prefix="llmrun-demo-pythia-") as tmp:
        folder = build_checkpoint(Path(tmp) / "pythia-70m", pythia_70m_config(), tokenizer, seed=seed)
        return install_in_hf_cache(folder, DEMO_PYTHIA_REPO_ID, cache_dir, revision=revision)


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmrun.testing.checkpoints",
        description="Build test checkpoints with random weights and install them in a Hugging Face cache.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "install-demo-pythia",
        help="install EleutherAI/pythia-70m (real tokenizer, random weights) in the HF cache",
        description="Install EleutherAI/pythia-70m (real architecture and tokenizer, seeded random weights) "
        "in the Hugging Face cache, so `HF_HUB_OFFLINE=1` runs of that hub id work without a download.",
    )
    demo.add_argument("--tokenizer", required=True, type=Path, help="path to the GPT-NeoX tokenizer.json")
    demo.add_argument("--cache-dir", type=Path, default=None, help="HF hub cache (default: HF_HUB_CACHE)")
    demo.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    tiny = commands.add_parser("build-tiny", help="write a tiny checkpoint folder with a trained tokenizer")
    tiny.add_argument("dest", type=Path, help="folder to create")
    tiny.add_argument("--family", choices=FAMILIES, default="gpt_neox", help="default: gpt_neox")
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "install-demo-pythia":
            if not args.tokenizer.is_file():
                parser.error(
                    f"--tokenizer: file not found: {args.tokenizer} (pass GPT-NeoX's tokenizer.json)"
                )
            snapshot = install_demo_pythia(args.cache_dir, args.tokenizer, seed=args.seed)
            print(f"installed {DEMO_PYTHIA_REPO_ID} at {snapshot}")
        else:
            print(build_tiny_checkpoint(args.dest, args.family, seed=args.seed))
    except LLMRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
