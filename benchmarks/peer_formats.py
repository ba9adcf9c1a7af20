"""Convert the benchmark's pythia-shaped checkpoint (GPTNeoX) to the peers' formats.

- **CTranslate2**: its own ``TransformersConverter``, with one fix for transformers 5: GPTNeoX
  configs no longer carry ``rotary_pct`` (it moved into ``rope_parameters`` as
  ``partial_rotary_factor``), which CTranslate2 4.x reads to size the rotary dimension, and the
  LM head ``embed_out`` is now ``lm_head``.
- **GGUF** (llama.cpp): written here with the ``gguf`` package, as llama.cpp's
  ``convert_hf_to_gguf.py`` writes a GPTNeoX model (that script is not shipped with the wheels):
  the q/k/v weight interleaved per head in transformers (``[heads, 3, head_dim, hidden]``) is
  reordered into q, k, v blocks; the vocabulary is padded to the embedding's width with
  ``[PAD<id>]`` tokens. Types ``f32``, ``f16`` (matrices; norms and biases stay f32) and ``q8_0``
  (matrices, llama.cpp's own 8-bit blocks of 32 with one f16 scale, quantized by ``gguf.quants``).

Only for benchmarks/: the library itself never converts to these formats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GGUF_TYPES = ("f32", "f16", "q8_0")


def _rotary_pct(config: Any) -> float:
    pct = getattr(config, "rotary_pct", None)
    if pct is None:
        params = getattr(config, "rope_parameters", None) or {}
        pct = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    return float(pct)


def convert_ctranslate2(folder: Path, dest: Path) -> Path:
    """A float32 CTranslate2 model of ``folder`` in ``dest`` (int8 is chosen at load: ``compute_type``)."""
    import ctranslate2.converters.transformers as ct2t

    loader = ct2t._MODEL_LOADERS["GPTNeoXConfig"]  # a registered loader instance
    loader_cls = loader if isinstance(loader, type) else type(loader)
    original = loader_cls.get_model_spec

    def get_model_spec(self: Any, model: Any) -> Any:
        if getattr(model.config, "rotary_pct", None) is None:  # transformers 5: see the module docstring
            model.config.rotary_pct = _rotary_pct(model.config)
        if not hasattr(model, "embed_out"):  # transformers 5 renamed the head to lm_head
            model.embed_out = model.lm_head
        return original(self, model)

    loader_cls.get_model_spec = get_model_spec
    try:
        ct2t.TransformersConverter(str(folder), low_cpu_mem_usage=True).convert(str(dest), force=True)
    finally:
        loader_cls.get_model_spec = original
    return dest


def _vocabulary(folder: Path, width: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens by id (padded to ``width``), their GGUF token types, and the BPE merges."""
    import gguf

    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    by_id: dict[int, str] = {i: t for t, i in data["model"]["vocab"].items()}
    special: set[int] = set()
    for added in data.get("added_tokens", []):
        by_id[int(added["id"])] = added["content"]
        if added.get("special"):
            special.add(int(added["id"]))
    tokens, types = [], []
    for i in range(width):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    return tokens, [int(t) for t in types], merges


def convert_gguf(folder: Path, dest: Path, kind: str) -> Path:
    """``folder`` as a GGUF file of type ``kind`` (one of :data:`GGUF_TYPES`)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    if kind not in GGUF_TYPES:
        raise ValueError(f"GGUF type {kind!r}: use one of {GGUF_TYPES}")
    config: Any = AutoConfig.from_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    heads, hidden = int(config.num_attention_heads), int(config.hidden_size)
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(str(dest), "gptneox")
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_rope_dimension_count(int(_rotary_pct(config) * head_dim))
    writer.add_head_count(heads)
    writer.add_parallel_residual(bool(config.use_parallel_residual))
    writer.add_layer_norm_eps(float(config.layer_norm_eps))
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
    writer.add_file_type(int(file_type.get(kind, gguf.LlamaFileType.MOSTLY_Q8_0)))
    tokens, types, merges = _vocabulary(folder, int(config.vocab_size))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the benchmark feeds token ids: pre-tokenizing is never used
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(int(config.bos_token_id))
    writer.add_eos_token_id(int(config.eos_token_id))

    names = {
        "gpt_neox.embed_in.weight": "token_embd.weight",
        "gpt_neox.final_layer_norm.weight": "output_norm.weight",
        "gpt_neox.final_layer_norm.bias": "output_norm.bias",
        "embed_out.weight": "output.weight",  # transformers 4
        "lm_head.weight": "output.weight",  # transformers 5
    }
    per_layer = {
        "input_layernorm": "attn_norm",
        "attention.query_key_value": "attn_qkv",
        "attention.dense": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.dense_h_to_4h": "ffn_up",
        "mlp.dense_4h_to_h": "ffn_down",
    }
    for name in sorted(state):
        value = state[name].astype(np.float32)
        if name in names:
            gname = names[name]
        else:
            parts = name.split(".")  # gpt_neox.layers.<i>.<module...>.<weight|bias>
            if parts[:2] != ["gpt_neox", "layers"] or ".".join(parts[3:-1]) not in per_layer:
                continue  # buffers such as rotary inv_freq
            gname = f"blk.{parts[2]}.{per_layer['.'.join(parts[3:-1])]}.{parts[-1]}"
            if "attn_qkv" in gname:  # [heads, 3, head_dim, ...] -> q, k, v blocks
                shape = (heads, 3, head_dim, *value.shape[1:])
                value = np.ascontiguousarray(value.reshape(shape).swapaxes(0, 1).reshape(value.shape))
        if value.ndim == 2 and kind == "f16":
            writer.add_tensor(gname, value.astype(np.float16))
        elif value.ndim == 2 and kind == "q8_0":
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(gname, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gname, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest
