"""Text embeddings for the 2023 index and classifier: the local model's, or Lamini's endpoint.

Locally a text's embedding is the mean of the model's last hidden states over
its tokens (float32). On Lamini it is ``POST /v1/embedding`` through the
``lamini`` client. Other backends cannot embed and say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmrun.errors import DependencyError, InvalidInputError, UnsupportedFeatureError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from llmrun.runner import ModelRunner

#: Longest text, in tokens, that goes into one local embedding (the rest is cut).
MAX_EMBED_TOKENS = 512


def embed_texts(
    runner: ModelRunner, texts: Sequence[str], options: Mapping[str, Any] | None = None
) -> NDArray[np.float32]:
    """One float32 row per text, from ``runner``'s backend; ``options`` are its load options (key, URL)."""
    import numpy as np

    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise InvalidInputError("embed_texts takes a list of strings")
    if not texts:
        return np.zeros((0, 0), dtype="float32")
    backend = getattr(runner, "backend", runner)  # a 2023 facade: its backend runner
    if backend.backend_name == "lamini":
        from llmrun.compat.lamini_client import credentials_from, embed

        rows = embed(credentials_from(options or {}), backend.model_name, list(texts))
        return np.asarray(rows, dtype="float32")
    if hasattr(backend, "model") and hasattr(backend, "tokenizer") and backend.backend_name == "local":
        return _local(backend, texts)
    raise UnsupportedFeatureError(
        f"embeddings cannot be computed by the {backend.backend_name!r} backend; "
        "use backend='local' (the model's hidden states) or backend='lamini' (its embedding endpoint)"
    )


def _local(runner: Any, texts: Sequence[str]) -> NDArray[np.float32]:
    import numpy as np
    import torch

    rows = []
    with torch.inference_mode():
        for text in texts:
            ids = runner.tokenizer(text, add_special_tokens=False)["input_ids"][:MAX_EMBED_TOKENS] or [0]
            batch = torch.tensor([ids], device=runner.device)  # [1, S]
            out = runner.model(input_ids=batch, output_hidden_states=True)
            rows.append(out.hidden_states[-1][0].float().mean(dim=0).cpu().numpy())  # [H]
    stacked: NDArray[np.float32] = np.stack(rows).astype("float32")
    return stacked


def require_faiss() -> Any:
    """The ``faiss`` module, or a DependencyError that says how to install it."""
    try:
        import faiss
    except ImportError:
        raise DependencyError(
            "the 2023 index searches with faiss; install it with: "
            'pip install -e ".[retrieval]" in an llmrun checkout'
        ) from None
    return faiss
