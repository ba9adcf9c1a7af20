"""2023's ``LaminiClassifier`` and ``BinaryLaminiClassifier``: classify text by its nearest examples.

Examples per class come from ``add_data_to_class`` and/or are generated from a
description of each class by a chat model (``prompt_train``). ``train()``
embeds them (the model's backend: see :mod:`llmrun.compat.embeddings`) into a
faiss inner-product index over unit vectors; a text's class probabilities are
a softmax-weighted vote of its ``k`` nearest examples. 2023 fitted a
scikit-learn logistic regression instead; the search here is faiss's.

``save``/``load`` write JSON (examples, classes, settings), not a pickle, and
``load`` embeds again: loading never runs code from the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmrun.compat.embeddings import embed_texts, require_faiss
from llmrun.errors import DataError, InvalidInputError, UnsupportedFeatureError
from llmrun.schema import Context, Type

#: Softmax temperature of the neighbour vote (cosine similarities are in [-1, 1]).
VOTE_TEMPERATURE = 0.1


class FiveExamples(Type):
    """What ``prompt_train`` asks the chat model for."""

    example_1: str = Context("")
    example_2: str = Context("")
    example_3: str = Context("")
    example_4: str = Context("")
    example_5: str = Context("")


class LaminiClassifier:
    """A classifier over text embeddings; extra keywords (``backend=`` ...) go to :func:`llmrun.load`."""

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        model_name: str | None = None,
        augmented_example_count: int = 10,
        batch_size: int = 10,
        threads: int = 1,
        saved_examples_path: str | None = None,
        generator_from_prompt: Any = None,
        example_modifier: Any = None,
        example_expander: Any = None,
        *,
        k: int = 5,
        **options: Any,
    ) -> None:
        custom = [
            n
            for n, v in (
                ("generator_from_prompt", generator_from_prompt),
                ("example_modifier", example_modifier),
                ("example_expander", example_expander),
            )
            if v is not None
        ]
        if custom:
            raise UnsupportedFeatureError(
                f"{', '.join(custom)} cannot be honoured: llmrun's classifier generates examples one way. "
                "Generate them yourself and pass them with add_data_to_class(class_name, examples)"
            )
        for name, value in (("augmented_example_count", augmented_example_count), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name}={value!r} is invalid: it must be an integer >= 1")
        self.config = dict(config or {})
        self.model_name = model_name
        self.augmented_example_count = augmented_example_count
        self.batch_size, self.threads = batch_size, threads
        self.saved_examples_path = saved_examples_path
        self.k = k
        self._options = {**options, **({"config": self.config} if self.config else {})}
        self.class_names_to_ids: dict[str, int] = {}
        self.class_ids_to_metadata: dict[int, dict[str, Any]] = {}
        self.examples: dict[str, list[str]] = {}
        self._runner: Any = None
        self._index: Any = None
        self._labels: list[int] = []

    # ----------------------------------------------------------------- data
    def _model(self) -> Any:
        if self._runner is None:
            from llmrun.compat.runners import LlamaV2Runner

            self._runner = LlamaV2Runner(self.model_name, **self._options)
        return self._runner

    def add_class(self, class_name: str) -> None:
        """Register a class (ids follow the order classes are added)."""
        if not isinstance(class_name, str) or not class_name:
            raise InvalidInputError(f"a class name must be a non-empty string, got {class_name!r}")
        if class_name not in self.class_names_to_ids:
            class_id = len(self.class_names_to_ids)
            self.class_names_to_ids[class_name] = class_id
            self.class_ids_to_metadata[class_id] = {"class_name": class_name}

    def add_data_to_class(self, class_name: str, examples: str | list[str]) -> None:
        """Add example texts of ``class_name``."""
        items = [examples] if isinstance(examples, str) else list(examples)
        if not items or not all(isinstance(e, str) and e.strip() for e in items):
            raise InvalidInputError("examples must be a non-empty string or a list of them")
        self.add_class(class_name)
        self.examples.setdefault(class_name, []).extend(items)

    def add_metadata_to_class(self, class_name: str, metadata: Any) -> None:
        """Attach metadata that ``classify(..., metadata=True)`` returns."""
        if class_name not in self.class_names_to_ids:
            raise InvalidInputError(f"no class {class_name!r}; add it first")
        self.class_ids_to_metadata[self.class_names_to_ids[class_name]]["metadata"] = metadata

    def get_data(self) -> dict[str, list[str]]:
        """The examples per class."""
        return self.examples

    # ----------------------------------------------------------------- training
    def prompt_train(self, prompts: Mapping[str, str]) -> None:
        """Generate examples for each class from its description, then :meth:`train`."""
        if not isinstance(prompts, Mapping) or not prompts:
            raise InvalidInputError('prompt_train takes {"class name": "a description of the class", ...}')
        for class_name, prompt in prompts.items():
            self.add_class(class_name)
            have = self.examples.setdefault(class_name, [])
            for _ in range(math.ceil(self.augmented_example_count / 5) + 1):
                if len(have) >= self.augmented_example_count:
                    break
                have += self._generate(prompt, have)
        self.train()

    def _generate(self, prompt: str, have: list[str]) -> list[str]:
        shown = "\n".join(f"- {e}" for e in have[-3:])
        ask = f"Write five new, varied examples of text in this category: {prompt}" + (
            f"\nExamples so far:\n{shown}" if shown else ""
        )
        out: FiveExamples = self._model()(
            ask, system_prompt="You write training examples.", output_type=FiveExamples
        )
        found = [getattr(out, f"example_{i}").strip() for i in range(1, 6)]
        return [e for e in found if e and e not in have]

    def train(self) -> None:
        """Embed every example into a faiss index."""
        faiss = require_faiss()
        texts = [(self.class_names_to_ids[c], e) for c, items in self.examples.items() for e in items]
        if not texts or len({c for c, _ in texts}) < 2:
            raise InvalidInputError(
                "a classifier needs examples of at least two classes; add_data_to_class first"
            )
        vectors = self._unit(embed_texts(self._model(), [e for _, e in texts], self._options))
        self._index = faiss.IndexFlatIP(vectors.shape[1])
        self._index.add(vectors)
        self._labels = [c for c, _ in texts]

    @staticmethod
    def _unit(vectors: Any) -> Any:
        import numpy as np

        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.where(norms == 0, 1.0, norms)).astype("float32")

    # ----------------------------------------------------------------- prediction
    def predict_proba(self, text: str | list[str]) -> list[list[float]]:
        """Per text, the probability of each class, in class-id order."""
        if self._index is None:
            raise InvalidInputError(
                "the classifier is not trained; call train() or prompt_train({...}) first"
            )
        texts = [text] if isinstance(text, str) else list(text)
        sims, ids = self._index.search(
            self._unit(embed_texts(self._model(), texts, self._options)), min(self.k, len(self._labels))
        )
        out = []
        for row_sims, row_ids in zip(sims, ids, strict=True):
            weights = [0.0] * len(self.class_names_to_ids)
            for sim, i in zip(row_sims, row_ids, strict=True):
                if i >= 0:
                    weights[self._labels[i]] += math.exp(float(sim) / VOTE_TEMPERATURE)
            total = sum(weights) or 1.0
            out.append([w / total for w in weights])
        return out

    def predict(self, text: list[str]) -> list[str]:
        """The most likely class name of each text."""
        if not isinstance(text, list):
            raise InvalidInputError("predict takes a list of strings")
        names = list(self.class_names_to_ids)
        return [names[max(range(len(p)), key=p.__getitem__)] for p in self.predict_proba(text)]

    def classify(
        self,
        text: str | list[str],
        top_n: int | None = None,
        threshold: float | None = None,
        metadata: bool = False,
    ) -> Any:
        """Per text, ``[{"class_id", "class_name", "prob"(, "metadata")}]`` sorted by probability."""
        batch = []
        for probs in self.predict_proba(text):
            rows = []
            for class_id, prob in enumerate(probs):
                if threshold is None or prob > threshold:
                    row: dict[str, Any] = {
                        "class_id": class_id,
                        "class_name": self.class_ids_to_metadata[class_id]["class_name"],
                        "prob": prob,
                    }
                    if metadata:
                        row["metadata"] = self.class_ids_to_metadata[class_id]
                    rows.append(row)
            rows.sort(key=lambda r: r["prob"], reverse=True)
            batch.append(rows[:top_n] if top_n is not None else rows)
        return batch[0] if isinstance(text, str) else batch

    # ----------------------------------------------------------------- persistence
    def dumps(self) -> str:
        """The classifier's examples, classes and settings as JSON (no model, no pickle)."""
        return json.dumps(
            {
                "model_name": self.model_name,
                "k": self.k,
                "options": {k: v for k, v in self._options.items() if k in ("backend", "device")},
                "classes": list(self.class_names_to_ids),
                "metadata": {str(k): v.get("metadata") for k, v in self.class_ids_to_metadata.items()},
                "examples": self.examples,
            }
        )

    @classmethod
    def loads(cls, data: str, **options: Any) -> LaminiClassifier:
        """A classifier from :meth:`dumps`, embedded again (``options`` as in the constructor)."""
        try:
            raw = json.loads(data)
        except ValueError:
            raw = None
        if not isinstance(raw, dict) or not isinstance(raw.get("classes"), list):
            raise DataError(
                "not a classifier saved by llmrun (JSON with its classes and examples). A 2023 "
                "LaminiClassifier file is a pickle, which llmrun never loads (unpickling runs code): "
                "train the classifier again (prompt_train / add_data_to_class) and save() it",
                source="classifier",
            )
        clf = cls(
            model_name=raw.get("model_name"), k=raw.get("k", 5), **{**raw.get("options", {}), **options}
        )
        for class_name in raw["classes"]:
            clf.add_class(class_name)
            if raw["examples"].get(class_name):
                clf.add_data_to_class(class_name, raw["examples"][class_name])
            meta = raw.get("metadata", {}).get(str(clf.class_names_to_ids[class_name]))
            if meta is not None:
                clf.add_metadata_to_class(class_name, meta)
        clf.train()
        return clf

    def save(self, filename: str | Path) -> None:
        """Write :meth:`dumps` to ``filename``."""
        Path(filename).write_text(self.dumps(), encoding="utf-8")

    @classmethod
    def load(cls, filename: str | Path, **options: Any) -> LaminiClassifier:
        """Read a file written by :meth:`save`."""
        try:
            text = Path(filename).read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary: 2023's pickle
            text = ""
        except OSError as e:
            raise DataError(f"{filename}: cannot read the classifier ({e})", source=str(filename)) from e
        try:
            return cls.loads(text, **options)
        except DataError as e:
            raise DataError(f"{filename}: {e.args[0]}", source=str(filename)) from None


class BinaryLaminiClassifier:
    """Two classes, ``"positive"`` and ``"negative"``; ``predict`` answers 1 or 0."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.classifier = LaminiClassifier(*args, **kwargs)
        self.classifier.add_class("positive")
        self.classifier.add_class("negative")

    def add_positive_examples(self, examples: str | list[str]) -> None:
        self.classifier.add_data_to_class("positive", examples)

    def add_negative_examples(self, examples: str | list[str]) -> None:
        self.classifier.add_data_to_class("negative", examples)

    def get_augmented_positive_examples(self) -> list[str]:
        return self.classifier.get_data().get("positive", [])

    def get_augmented_negative_examples(self) -> list[str]:
        return self.classifier.get_data().get("negative", [])

    def prompt_train(self, positive_prompt: str, negative_prompt: str) -> None:
        self.classifier.prompt_train({"positive": positive_prompt, "negative": negative_prompt})

    def train(self) -> None:
        self.classifier.train()

    def predict_proba(self, text: list[str]) -> list[list[float]]:
        """Per text, ``[P(negative), P(positive)]`` as 2023 ordered them."""
        ids = self.classifier.class_names_to_ids
        return [[p[ids["negative"]], p[ids["positive"]]] for p in self.classifier.predict_proba(text)]

    def predict(self, text: list[str]) -> list[int]:
        return [1 if p[1] > p[0] else 0 for p in self.predict_proba(text)]

    def classify(
        self,
        text: str | list[str],
        top_n: int | None = None,
        threshold: float | None = None,
        metadata: bool = False,
    ) -> Any:
        return self.classifier.classify(text, top_n, threshold, metadata)
