"""Tiny test checkpoints, tokenizers trained on the spot, and Hugging Face cache layouts.

Everything here runs offline in seconds and needs no downloaded weights:

- :func:`train_byte_level_bpe_tokenizer` / :func:`train_sentencepiece_style_tokenizer` train a
  GPT-NeoX-like or a Llama-like tokenizer on a small built-in English corpus;
- :func:`build_tiny_checkpoint` writes a loadable ``GPTNeoXForCausalLM`` or ``LlamaForCausalLM``
  folder with seeded random weights; :func:`build_checkpoint` does the same for any config;
- :func:`install_in_hf_cache` lays a folder out exactly as ``huggingface_hub`` caches a hub repo,
  so ``from_pretrained("org/name")`` finds it with ``HF_HUB_OFFLINE=1``;
- :func:`install_demo_pythia` installs ``EleutherAI/pythia-70m`` (real architecture and tokenizer,
  random weights) for offline demos; also ``python -m llmrun.testing.checkpoints install-demo-pythia``.

Environment variables: ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` (else
``HF_HOME``/hub) once, at import, into ``huggingface_hub.constants``; transformers reads those
constants at call time. Setting the env vars after ``huggingface_hub`` is imported has no effect in
that process; use :func:`use_hf_cache` (or the ``offline_hf_cache`` pytest fixture), which sets both.

torch, transformers and tokenizers are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import string
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from llmrun.errors import ConfigurationError, DependencyError, InvalidInputError, LLMRunError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase, PreTrainedTokenizerFast

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
    "llama2_7b_config",
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

NEOX_EOS = "<|endoftext|>"
LLAMA_UNK, LLAMA_BOS, LLAMA_EOS = "<unk>", "<s>", "</s>"
SPIECE_UNDERLINE = "▁"
VOCAB_PAD_MULTIPLE = 128
TINY_CONTEXT = 512
"""Context of the tiny models: room for a nested schema prompt (~200 tokens) plus a 256-token budget."""
# pythia's spelling; transformers 5 moves these into config.rope_parameters (partial_rotary_factor,
# rope_theta). Passed as a dict so the same call works with transformers 4 and 5.
_NEOX_ROTARY: dict[str, Any] = {"rotary_pct": 0.25, "rotary_emb_base": 10000}

CORPUS: tuple[str, ...] = (
    "Question: What is the highest mountain in the world? Answer: Mount Everest, 8,849 metres high.",
    "Question: What is the capital of France? Answer: Paris.",
    "Question: Who wrote the play Hamlet? Answer: William Shakespeare, around 1600.",
    "Question: How many days are there in a leap year? Answer: 366 days.",
    "Question: What is the largest ocean on Earth? Answer: The Pacific Ocean.",
    "Question: What is the boiling point of water at sea level? Answer: 100 degrees Celsius.",
    "Question: Which planet is known as the red planet? Answer: Mars.",
    "Question: What is the longest river in Africa? Answer: The Nile, about 6,650 km long.",
    "Question: When did the first person walk on the Moon? Answer: In 1969, Neil Armstrong.",
    "Question: What is 12 times 12? Answer: 144.",
    '{"question": "What is the highest mountain in the world?", "answer": "Mount Everest"}',
    '{"answer": "Paris", "confidence": 0.95, "sources": ["atlas", "encyclopedia"]}',
    '{"name": "Ada Lovelace", "born": 1815, "fields": ["mathematics", "computing"], "alive": false}',
    '{"city": "Tokyo", "population": 13960000, "country": {"name": "Japan", "code": "JP"}}',
    '{"items": [1, 2, 3, 4, 5], "total": 15, "average": 3.0, "valid": true, "note": null}',
    '[{"id": 0, "label": "negative"}, {"id": 1, "label": "positive"}, {"id": 2, "label": "neutral"}]',
    '{"temperature": -3.5, "unit": "celsius", "readings": [-1.25, 0.5, 2.75], "ok": true}',
    '{"title": "A short story", "words": 250, "tags": ["fiction", "short"], "rating": 4.5}',
    '{"answer": "Mount Everest", "confidence": 0.9}',
    '{"answer": "William Shakespeare", "confidence": 0.87}',
    "The quick brown fox jumps over the lazy dog. The dog did not move at all.",
    "Mount Everest is the highest mountain above sea level. It lies in the Himalaya, on the border "
    "between Nepal and China. The first people known to reach the top were Tenzing Norgay and "
    "Edmund Hillary in 1953.",
    "A language model predicts the next word in a sequence of text. It is trained on a large corpus "
    "of documents, and it can answer questions, write summaries and translate between languages.",
    "The weather today is cold and windy, with a high of 7 degrees and a chance of rain in the "
    "evening. Tomorrow will be warmer and sunny, with light winds from the south.",
    "She opened the door, looked at the garden and said that the flowers were growing well this year. "
    "He agreed, and they walked to the old tree near the river where the children were playing.",
    "In 2023 the company sold 1,250,000 units, an increase of 12.5% over 2022. Revenue was $4.2 "
    "billion, and the team grew from 340 to 415 people across 9 offices.",
    "The first ten numbers are 0, 1, 2, 3, 4, 5, 6, 7, 8 and 9; then come 10, 11, 12, 20, 50, 99 "
    "and 100. Pi is about 3.14159 and e is about 2.71828.",
    "Please answer the following question with a short factual answer and a confidence between 0 and 1.",
    "Input: a question about the world. Output: a short answer. Return the result as JSON.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
    "of foolishness. What do you think this means? I think it means that life is full of contrasts.",
    "Water is made of hydrogen and oxygen. Plants need light, water and air to grow. The Sun is a "
    "star, and the Earth goes around it once every year.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5",
    "Names: Alice, Bob, Carol, David, Emma, Frank. Colours: red, green, blue, yellow, black, white.",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday are the days of the week.",
    "January February March April May June July August September October November December",
    "Yes. No. Maybe! Why? Because: (a) it is true; (b) it is simple; [c] it is {obvious}.",
    "question (a question about the world): What is the highest mountain in the world?",
    "Respond with a JSON object (Answer) with these fields:\n"
    "- answer (string): a short factual answer\n"
    "- confidence (number, >= 0, <= 1): how sure the answer is, 0 to 1",
    "Respond with a JSON object (Person) with these fields:\n"
    "- name (string, at most 20 long): the person's name\n"
    "- age (integer, >= 0, <= 150): the person's age\n"
    "- friends (list of object Person): their friends\n"
    "- tags (list of string): some tags\n"
    "- note (string or null): an optional note\n"
    "- ok (true or false): whether it worked\n"
    '- kind (one of "fact", "opinion", "joke"): what kind of statement it is',
    string.printable,
)
"""The built-in training corpus: English prose, QA prompts, JSON, digits and all printable ASCII."""


# --------------------------------------------------------------------------- tokenizers


def _check_vocab_size(vocab_size: int, minimum: int, what: str) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < minimum:
        raise InvalidInputError(
            f"vocab_size={vocab_size!r} is too small for {what}: it needs at least {minimum} "
            "(the byte alphabet and the special tokens); pass a larger int such as 512."
        )


def train_byte_level_bpe_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a GPT-NeoX-style byte-level BPE tokenizer on :data:`CORPUS`.

    Like GPT-NeoX-20B's (pythia's): NFC normalizer, byte-level pre-tokenizer without prefix space,
    ``<|endoftext|>`` (id 0) as bos, eos and unk, no BOS added, no pad token. ``vocab_size`` is an
    upper bound (the small corpus may run out of merges first). Deterministic.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    _check_vocab_size(vocab_size, len(alphabet) + 2, "a byte-level BPE tokenizer")
    tok = Tokenizer(models.BPE(fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[NEOX_EOS], initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return _fast_tokenizer(tokenizer_object=tok, bos_token=NEOX_EOS, eos_token=NEOX_EOS, unk_token=NEOX_EOS)


def train_sentencepiece_style_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a Llama-style (SentencePiece BPE) tokenizer on :data:`CORPUS`.

    Like Llama 2's: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, the 256 byte-fallback tokens ``<0x00>``..
    ``<0xFF>`` next, then the learned pieces; spaces become ``▁`` (Metaspace) with a dummy prefix
    ``▁`` before the text, unknown characters fall back to bytes, and ``<s>`` is added as BOS by
    the post-processor. ``decode(encode(x), skip_special_tokens=True) == x`` for any text.
    ``vocab_size`` is an upper bound. Deterministic.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = [LLAMA_UNK, LLAMA_BOS, LLAMA_EOS]
    alphabet = [*sorted(set(string.printable) - set(string.whitespace)), SPIECE_UNDERLINE]
    _check_vocab_size(vocab_size, len(specials) + 256 + len(alphabet) + 1, "a SentencePiece-style tokenizer")

    def pipeline(tok: Tokenizer) -> Tokenizer:
        # Prepend + never-prepending Metaspace = SentencePiece's dummy prefix, exactly reversible.
        tok.normalizer = normalizers.Prepend(SPIECE_UNDERLINE)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=SPIECE_UNDERLINE, prepend_scheme="never", split=True
        )
        return tok

    learner = pipeline(Tokenizer(models.BPE(unk_token=LLAMA_UNK)))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 256, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    learner.train_from_iterator(CORPUS, trainer=trainer)
    learned = json.loads(learner.to_str())["model"]

    # Re-number as Llama does: specials, then <0xNN> byte tokens, then learned pieces in order.
    vocab: dict[str, int] = {token: i for i, token in enumerate(specials)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for merge in learned["merges"]:  # ["a", "b"] in recent tokenizers, "a b" in older ones
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        merges.append((left, right))

    model = models.BPE(vocab=vocab, merges=merges, unk_token=LLAMA_UNK, byte_fallback=True, fuse_unk=True)
    tok = pipeline(Tokenizer(model))
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace(SPIECE_UNDERLINE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    return _wrap_llama_tokenizer(tok)


def _fast_tokenizer(**kwargs: Any) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    # clean_up_tokenization_spaces would rewrite " ." to "." on decode and break round trips.
    return PreTrainedTokenizerFast(clean_up_tokenization_spaces=False, **kwargs)  # type: ignore[no-untyped-call]


def _wrap_llama_tokenizer(tok: Any) -> PreTrainedTokenizerFast:
    from tokenizers import processors

    bos_id = tok.token_to_id(LLAMA_BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{LLAMA_BOS}:0 $A:0",
        pair=f"{LLAMA_BOS}:0 $A:0 {LLAMA_BOS}:1 $B:1",
        special_tokens=[(LLAMA_BOS, bos_id)],
    )
    return _fast_tokenizer(
        tokenizer_object=tok, bos_token=LLAMA_BOS, eos_token=LLAMA_EOS, unk_token=LLAMA_UNK
    )


def load_pythia_tokenizer(tokenizer_json: Path | str) -> PreTrainedTokenizerFast:
    """Wrap the real GPT-NeoX-20B ``tokenizer.json`` (pythia's) as pythia's hub repo configures it.

    ``<|endoftext|>`` is bos, eos and unk; no pad token. Raises :class:`ConfigurationError` when the
    file is missing or is not a tokenizers JSON file.
    """
    path = Path(tokenizer_json).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"tokenizer file not found: {path}. Pass the GPT-NeoX tokenizer.json that pythia uses "
            "(e.g. the tokenizer.json of EleutherAI/pythia-70m or EleutherAI/gpt-neox-20b)."
        )
    try:
        return _fast_tokenizer(
            tokenizer_file=str(path), bos_token=NEOX_EOS, eos_token=NEOX_EOS, unk_token=NEOX_EOS
        )
    except Exception as exc:  # tokenizers raises bare Exception subclasses on bad JSON
        raise ConfigurationError(
            f"{path} is not a valid tokenizers JSON file ({exc}). Pass the GPT-NeoX tokenizer.json."
        ) from exc


def load_llama2_tokenizer(tokenizer_model: Path | str) -> PreTrainedTokenizerBase:
    """Load the real Llama 2 SentencePiece ``tokenizer.model`` as Llama-2-7b-hf configures it (adds ``<s>``).

    Needs the ``sentencepiece`` package (converted once to a fast tokenizer; a few seconds). Raises
    :class:`ConfigurationError` for a missing or unreadable file.
    """
    path = Path(tokenizer_model).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"tokenizer file not found: {path}. Pass Llama 2's SentencePiece tokenizer.model."
        )
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory(prefix="llmrun-llama-tok-") as tmp:
        shutil.copyfile(path, Path(tmp) / "tokenizer.model")  # from_pretrained wants that exact name
        try:
            tok: PreTrainedTokenizerBase = LlamaTokenizer.from_pretrained(
                tmp, add_bos_token=True, add_eos_token=False
            )
        except ImportError as exc:
            raise DependencyError(
                f"reading {path} needs sentencepiece: pip install sentencepiece ({exc})"
            ) from exc
        except Exception as exc:  # sentencepiece/protobuf raise assorted errors on a bad file
            raise ConfigurationError(f"{path} is not a SentencePiece model ({exc}).") from exc
    if len(tok) < 1000:  # an unreadable file leaves only the special tokens
        raise ConfigurationError(f"{path} did not load as a SentencePiece model (only {len(tok)} tokens).")
    return tok


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


def llama2_7b_config() -> PretrainedConfig:
    """The config of meta-llama/Llama-2-7b-hf (32 layers, hidden 4096, vocab 32,000, float16)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        intermediate_size=11008,
        hidden_act="silu",
        max_position_embeddings=4096,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        dtype="float16",
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


# --------------------------------------------------------------------------- Hugging Face cache layout


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checkpoint_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def checkpoint_commit_hash(folder: Path | str) -> str:
    """A 40-hex "commit" id for a checkpoint folder, derived from its file names and contents."""
    folder = Path(folder)
    digest = hashlib.sha1(usedforsecurity=False)
    for path in _checkpoint_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{_sha256(path)}\n".encode())
    return digest.hexdigest()


def _repo_folder_name(repo_id: str) -> str:
    parts = repo_id.split("/")
    if not repo_id or len(parts) > 2 or any(not p or p in {".", ".."} or "--" in p for p in parts):
        raise InvalidInputError(
            f"invalid hub repo id {repo_id!r}; use 'org/name' (e.g. 'EleutherAI/pythia-70m') or 'name'."
        )
    return "models--" + "--".join(parts)


def install_in_hf_cache(
    folder: Path | str, repo_id: str, cache_dir: Path | str, revision: str = "main"
) -> Path:
    """Lay ``folder`` out in ``cache_dir`` exactly as ``huggingface_hub`` caches the model repo ``repo_id``.

    Files go to ``models--org--name/blobs/<sha256>``; ``snapshots/<commit>/<file>`` are relative
    symlinks to them (copies where symlinks are unavailable); ``refs/<revision>`` holds the commit.
    Re-installing identical files is a no-op. Returns the snapshot folder. Load it offline with
    :func:`use_hf_cache` (or ``HF_HUB_OFFLINE=1 HF_HUB_CACHE=cache_dir`` set before the process starts).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise InvalidInputError(f"{folder} is not a checkpoint folder (no config.json); build one first.")
    if any(part in {"", ".", ".."} for part in revision.split("/")):
        raise InvalidInputError(f"invalid revision {revision!r}; use a branch name such as 'main'.")
    repo_dir = Path(cache_dir) / _repo_folder_name(repo_id)
    commit = checkpoint_commit_hash(folder)
    snapshot = repo_dir / "snapshots" / commit
    for blobs in (repo_dir / "blobs", snapshot):
        blobs.mkdir(parents=True, exist_ok=True)

    for path in _checkpoint_files(folder):
        relative = path.relative_to(folder)
        blob = repo_dir / "blobs" / _sha256(path)
        if not blob.exists():
            partial = blob.with_name(blob.name + ".incomplete")
            shutil.copyfile(path, partial)
            partial.replace(blob)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # no symlink support (e.g. Windows without developer mode): copy, as the hub does
            shutil.copyfile(blob, link)

    ref = repo_dir / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)  # the hub writes the bare hash, no newline
    return snapshot


@contextlib.contextmanager
def use_hf_cache(cache_dir: Path | str, *, offline: bool = True) -> Iterator[Path]:
    """Point this process (and child processes) at ``cache_dir``, offline by default; restore on exit.

    Sets ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` in ``os.environ`` and in ``huggingface_hub.constants``
    (read once at import, then used by transformers at call time). Not thread-safe: it changes
    process-wide state.
    """
    import huggingface_hub.constants as hf_constants

    cache = Path(cache_dir)
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    saved_const = (hf_constants.HF_HUB_CACHE, hf_constants.HF_HUB_OFFLINE)
    os.environ["HF_HUB_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1" if offline else "0"
    hf_constants.HF_HUB_CACHE = str(cache)
    hf_constants.HF_HUB_OFFLINE = offline
    try:
        yield cache
    finally:
        hf_constants.HF_HUB_CACHE, hf_constants.HF_HUB_OFFLINE = saved_const
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
