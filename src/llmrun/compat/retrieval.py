"""2023's retrieval: ``DirectoryLoader``, ``DefaultChunker``, ``LaminiIndex``, ``QueryEngine``,
``RetrievalAugmentedRunner``.

``LaminiIndex`` embeds chunks with the model's backend (see
:mod:`llmrun.compat.embeddings`) and searches them with a faiss
``IndexFlatL2``, as 2023 did. Extra keywords (``backend=``, ``device=`` ...)
go to :func:`llmrun.load` for the embedding and answering models.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from llmrun.compat.embeddings import embed_texts, require_faiss
from llmrun.compat.runners import LlamaV2Runner
from llmrun.errors import InvalidInputError

logger = logging.getLogger("llmrun.compat")


class DefaultChunker:
    """Cut texts into ``chunk_size``-character pieces every ``step_size`` characters."""

    def __init__(self, chunk_size: int = 512, step_size: int = 128) -> None:
        for name, value in (("chunk_size", chunk_size), ("step_size", step_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name}={value!r} is invalid: it must be an integer >= 1")
        self.chunk_size = chunk_size
        self.step_size = step_size

    def get_chunks(self, data: Iterable[str]) -> Iterator[str]:
        """The chunks of every text, in order."""
        for text in data:
            for i in range(0, len(text), self.step_size):
                yield text[i : i + self.chunk_size]


class DirectoryLoader:
    """Read every file under ``directory`` as text and hand out its chunks in batches."""

    def __init__(
        self, directory: str | Path, batch_size: int = 512, chunker: DefaultChunker | None = None
    ) -> None:
        if not Path(directory).is_dir():
            raise InvalidInputError(
                f"{directory} is not a directory; DirectoryLoader reads the files under one"
            )
        self.directory = Path(directory)
        self.batch_size = batch_size
        self.chunker = chunker or DefaultChunker()

    def load(self) -> Iterator[str]:
        """The text of each file, walking the directory in sorted order."""
        for root, dirs, files in os.walk(self.directory):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                logger.debug("Loading file: %s", path)
                yield path.read_text(encoding="utf-8", errors="replace")

    def get_chunks(self) -> Iterator[str]:
        return self.chunker.get_chunks(self.load())

    def get_chunk_batches(self) -> Iterator[list[str]]:
        batch: list[str] = []
        for chunk in self.get_chunks():
            batch.append(chunk)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __iter__(self) -> Iterator[list[str]]:
        return self.get_chunk_batches()


class LaminiIndex:
    """A faiss index over a loader's chunks, embedded by ``model_name`` on the configured backend."""

    def __init__(
        self,
        loader: Iterable[list[str]] | None = None,
        config: Mapping[str, Any] | None = None,
        *,
        model_name: str | None = None,
        backend: str | None = None,
        **options: Any,
    ) -> None:
        self.loader = loader
        self.config = dict(config or {})
        if self.config:
            options["config"] = self.config
        self._options = options
        self._model_name, self._backend = model_name, backend
        self._runner: Any = None
        self.index: Any = None
        self.splits: list[str] = []
        if loader is not None:
            self.build_index()

    def _embedder(self) -> Any:
        if self._runner is None:
            from llmrun.compat.facade import Facade

            self._runner = Facade(self._model_name, backend=self._backend, **self._options)
        return self._runner

    def get_embeddings(self, examples: list[str]) -> Any:
        """One float32 row per text."""
        return embed_texts(self._embedder(), examples, self._options)

    def build_index(self) -> None:
        """Embed every chunk of the loader and add it to a new ``IndexFlatL2``."""
        faiss = require_faiss()
        if self.loader is None:
            raise InvalidInputError("LaminiIndex has no loader; pass LaminiIndex(DirectoryLoader(path))")
        self.index, self.splits = None, []
        for batch in self.loader:
            embeddings = self.get_embeddings(batch)
            if self.index is None:
                self.index = faiss.IndexFlatL2(embeddings.shape[1])
            self.index.add(embeddings)
            self.splits.extend(batch)

    def query(self, query: str, k: int = 5) -> list[str]:
        """The ``k`` chunks nearest to ``query``, nearest first."""
        if self.index is None:
            raise InvalidInputError("the index is empty; build it from a loader or load_index(path) first")
        _distances, indices = self.index.search(self.get_embeddings([query]), min(k, len(self.splits)))
        return [self.splits[i] for i in indices[0] if i >= 0]

    def save_index(self, path: str | Path) -> None:
        """Write ``index.faiss`` and ``splits.json`` into ``path``."""
        faiss = require_faiss()
        Path(path).mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(Path(path) / "index.faiss"))
        (Path(path) / "splits.json").write_text(json.dumps(self.splits), encoding="utf-8")

    @staticmethod
    def load_index(path: str | Path, **kwargs: Any) -> LaminiIndex:
        """An index saved by :meth:`save_index`; ``kwargs`` pick the embedding model as in the constructor."""
        faiss = require_faiss()
        index = LaminiIndex(**kwargs)
        index.index = faiss.read_index(str(Path(path) / "index.faiss"))
        index.splits = json.loads((Path(path) / "splits.json").read_text(encoding="utf-8"))
        return index


class QueryEngine:
    """Answer a question with the ``k`` nearest chunks in front of it, through a :class:`LlamaV2Runner`."""

    def __init__(
        self,
        index: LaminiIndex,
        model_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        k: int = 5,
        system_prompt: str | None = None,
        **options: Any,
    ) -> None:
        self.index = index
        self.k = k
        self.model = LlamaV2Runner(
            model_name=model_name, config=config, system_prompt=system_prompt, **options
        )

    def answer_question(self, question: str, **options: Any) -> Any:
        """The model's answer to ``question`` given the retrieved context."""
        return self.model(self._build_prompt(question), **options)

    def _build_prompt(self, question: str) -> str:
        most_similar = self.index.query(question, k=self.k)
        return "\n".join(reversed(most_similar)) + "\n\n" + question


class RetrievalAugmentedRunner:
    """2023's retrieval runner: ``load_data(directory)``, ``train()`` (builds the index), then call it."""

    def __init__(
        self,
        model_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        k: int = 5,
        chunk_size: int = 512,
        step_size: int = 128,
        batch_size: int = 512,
        system_prompt: str | None = None,
        **options: Any,
    ) -> None:
        self.config = dict(config or {})
        self.model_name = model_name
        self.k, self.chunk_size, self.step_size, self.batch_size = k, chunk_size, step_size, batch_size
        self.system_prompt = system_prompt
        self._options = options
        self.loader: DirectoryLoader | None = None
        self.index: LaminiIndex | None = None
        self._engine: QueryEngine | None = None

    def load_data(self, path: str | Path) -> None:
        """Read the files under ``path`` (chunked when :meth:`train` runs)."""
        self.loader = DirectoryLoader(path, self.batch_size, DefaultChunker(self.chunk_size, self.step_size))

    def train(self) -> None:
        """Build the index (2023 called this training; no weights change)."""
        if self.loader is None:
            raise InvalidInputError("call load_data(directory) before train()")
        self.index = LaminiIndex(self.loader, self.config, model_name=self.model_name, **self._options)
        self._engine = None

    def __call__(self, query: str, **options: Any) -> Any:
        if self.index is None:
            raise InvalidInputError("call load_data(directory) and train() before asking questions")
        if self._engine is None:
            self._engine = QueryEngine(
                self.index, self.model_name, self.config, self.k, self.system_prompt, **self._options
            )
        return self._engine.answer_question(query, **options)


__all__ = ["DefaultChunker", "DirectoryLoader", "LaminiIndex", "QueryEngine", "RetrievalAugmentedRunner"]
