"""The 2023 task runners: ``InputOutputRunner``, ``QuestionAnswerModel``, ``AutocompleteRunner``,
``LlamaV2Runner`` and ``MistralRunner``, each a facade with its own prompt and data format.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmrun import data as data_module
from llmrun.compat.engines import BasicModelRunner, Text
from llmrun.compat.facade import pick_input
from llmrun.compat.prompts import (
    LLAMA_V2_SYSTEM_PROMPT,
    LLAMA_V2_TEMPLATE,
    MISTRAL_SYSTEM_PROMPT,
    MISTRAL_TEMPLATE,
    fill_2023_template,
)
from llmrun.errors import DataError, InvalidInputError
from llmrun.schema import Context, Type, check_output_type


class _TaskRunner(BasicModelRunner):
    """A 2023 task runner: its positional arguments came as (model_name, task_name, config, enable_peft)."""

    def __init__(
        self,
        model_name: str | None = None,
        task_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        enable_peft: bool = False,
        **kwargs: Any,
    ) -> None:
        # 2023 ordered these (model_name, task_name, config, enable_peft)
        super().__init__(model_name, task_name, enable_peft, config, **kwargs)


class QuestionAnswerModel(_TaskRunner):
    """2023's question answering runner: ``get_answer(question)`` / ``get_answers([...])``.

    The prompt is the question itself (2023's ``{input:question}``) and the
    answer comes typed, as ``{"answer": str}``, as it did on Lamini.
    """

    def get_answer(self, question: str, **options: Any) -> str:
        """The answer to one question."""
        out: Answer = self.generate(_question(question), Answer, **options)
        return out.answer

    def get_answers(self, questions: list[str], **options: Any) -> list[dict[str, str]]:
        """``[{"question": ..., "answer": ...}]`` for a list of questions."""
        if not isinstance(questions, list | tuple) or not questions:
            raise InvalidInputError("get_answers takes a non-empty list of questions")
        out: list[Answer] = self.generate([_question(q) for q in questions], Answer, **options)
        return [{"question": q, "answer": a.answer} for q, a in zip(questions, out, strict=True)]

    def __call__(self, prompt: Any = None, output_type: Any = None, **kwargs: Any) -> Any:
        inputs = pick_input(prompt, kwargs.pop("input", None), kwargs.pop("inputs", None))
        if output_type is not None:
            raise InvalidInputError(
                "QuestionAnswerModel answers as text; use LLMEngine for other output types"
            )
        return (
            self.get_answer(inputs, **kwargs)
            if isinstance(inputs, str)
            else self.get_answers(inputs, **kwargs)
        )

    def load_question_answer(
        self, data: Any, question_key: str = "question", answer_key: str = "answer"
    ) -> None:
        """Add question/answer dicts as training pairs."""
        rows = list(data) if isinstance(data, list | tuple) else data
        examples = data_module.load_examples(rows, question_key, answer_key, template=self.template)
        self._add(_as_answers(examples, self.template), False)

    def load_question_answer_from_jsonlines(
        self, file_path: str | Path, question_key: str = "question", answer_key: str = "answer"
    ) -> None:
        """Add question/answer pairs from a JSON-lines file."""
        examples = data_module.load_jsonlines(file_path, question_key, answer_key, template=self.template)
        self._add(_as_answers(examples, self.template), False)

    def load_question_answer_from_csv(
        self, file_path: str | Path, question_key: str = "question", answer_key: str = "answer"
    ) -> None:
        """Add question/answer pairs from a CSV file."""
        examples = data_module.load_csv(file_path, question_key, answer_key, template=self.template)
        self._add(_as_answers(examples, self.template), False)

    def load_question_answer_from_dataframe(
        self, df: Any, question_key: str = "question", answer_key: str = "answer"
    ) -> None:
        """Add question/answer pairs from a pandas DataFrame."""
        examples = data_module.load_dataframe(df, question_key, answer_key, template=self.template)
        self._add(_as_answers(examples, self.template), False)

    def upload_file(
        self, file_path: str | Path, question_key: str = "question", answer_key: str = "answer"
    ) -> None:
        """2023's ``upload_file``: a ``.jsonl`` or ``.csv`` of questions and answers."""
        if Path(file_path).suffix.lower() == ".csv":
            self.load_question_answer_from_csv(file_path, question_key, answer_key)
        else:
            self.load_question_answer_from_jsonlines(file_path, question_key, answer_key)


class Answer(Type):
    """The output of :class:`QuestionAnswerModel`."""

    answer: str = Context("")


def _question(question: object) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError(f"a question must be a non-empty string, got {question!r}")
    return question


def _as_answers(examples: list[Any], template: str) -> list[Any]:
    pairs = [(e.prompt, Answer(answer=e.completion)) for e in examples]
    return data_module.load_examples(pairs, template=template)


class InputOutputRunner(BasicModelRunner):
    """2023's typed runner: ``InputOutputRunner(input_type=In, output_type=Out)``, called with ``In``."""

    def __init__(
        self, input_type: type[Type], output_type: type[Type], model_name: str | None = None, **kwargs: Any
    ):
        self.input_type = check_output_type(input_type)
        self.output_type = check_output_type(output_type)
        super().__init__(model_name, **kwargs)

    def __call__(self, prompt: Any = None, output_type: Any = None, **kwargs: Any) -> Any:
        inputs = pick_input(prompt, kwargs.pop("input", None), kwargs.pop("inputs", None))
        for item in inputs if isinstance(inputs, list | tuple) else [inputs]:
            if not isinstance(item, self.input_type):
                raise InvalidInputError(
                    f"input must be a {self.input_type.__name__}, got {type(item).__name__}"
                )
        return self.generate(inputs, output_type or self.output_type, **kwargs)

    def load_data(self, data: Any, verbose: bool = False, *args: Any, **kwargs: Any) -> None:
        """Add ``[[input, output], ...]`` pairs of this runner's types."""
        if args or kwargs:
            raise InvalidInputError("InputOutputRunner.load_data takes [[input, output], ...] pairs of Types")
        self._add(data_module.load_examples(self._pairs(data), template=self.template), verbose)

    def load_data_from_paired_dicts(
        self, data: Any, verbose: bool = False, input_key: str = "input", output_key: str = "output"
    ) -> None:
        """Add ``[{"input": {...}, "output": {...}}, ...]``."""
        rows = [[_get(d, input_key, i), _get(d, output_key, i)] for i, d in enumerate(_as_list(data))]
        self.load_data_from_paired_lists(rows, verbose)

    def load_data_from_paired_lists(self, data: Any, verbose: bool = False) -> None:
        """Add ``[[input_dict, output_dict], ...]``."""
        pairs = []
        for i, row in enumerate(_as_list(data)):
            if not (
                isinstance(row, list | tuple) and len(row) == 2 and all(isinstance(x, Mapping) for x in row)
            ):
                raise DataError(f"item {i + 1}: expected [input_dict, output_dict]", source="data")
            pairs.append([self._make(self.input_type, row[0], i), self._make(self.output_type, row[1], i)])
        self.load_data(pairs, verbose)

    def load_data_from_jsonlines(self, file_path: str | Path, verbose: bool = False, **_: Any) -> None:  # type: ignore[override]
        """Add lines of ``{"input": {...}, "output": {...}}`` or of ``input-``/``output-`` prefixed keys."""
        rows = []
        with open(file_path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        raise DataError(f"{file_path}, line {n}: not valid JSON", str(file_path), n) from None
        self.load_data_from_paired_lists([self._split(r) for r in rows], verbose)

    def load_data_from_csv(self, file_path: str | Path, verbose: bool = False, **_: Any) -> None:  # type: ignore[override]
        """Add rows of a CSV file with ``input-``/``output-`` prefixed columns."""
        with open(file_path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        self.load_data_from_paired_lists([self._split(r) for r in rows], verbose)

    def load_data_from_dataframe(self, df: Any, verbose: bool = False, **_: Any) -> None:  # type: ignore[override]
        """Add rows of a DataFrame with ``input-``/``output-`` prefixed columns."""
        self.load_data_from_paired_lists([self._split(r) for r in df.to_dict("records")], verbose)

    def load_data_from_paired_dataframes(self, input_df: Any, output_df: Any, verbose: bool = False) -> None:
        """Add row ``i`` of ``input_df`` (input fields as columns) paired with row ``i`` of ``output_df``."""
        inputs, outputs = input_df.to_dict("records"), output_df.to_dict("records")
        if len(inputs) != len(outputs):
            raise DataError(
                f"the input and output DataFrames pair row by row, but have {len(inputs)} and "
                f"{len(outputs)} rows",
                source="data",
            )
        self.load_data_from_paired_lists([[i, o] for i, o in zip(inputs, outputs, strict=True)], verbose)

    def _pairs(self, data: Any) -> list[Any]:
        pairs = _as_list(data)
        for i, pair in enumerate(pairs):
            ok = isinstance(pair, list | tuple) and len(pair) == 2
            if (
                not ok
                or not isinstance(pair[0], self.input_type)
                or not isinstance(pair[1], self.output_type)
            ):
                raise DataError(
                    f"item {i + 1}: expected [{self.input_type.__name__}, {self.output_type.__name__}]",
                    source="data",
                )
        return pairs

    @staticmethod
    def _split(row: Mapping[str, Any]) -> list[Any]:
        if isinstance(row.get("input"), Mapping) and isinstance(row.get("output"), Mapping):
            return [row["input"], row["output"]]
        ins = {k[len("input-") :]: v for k, v in row.items() if k.startswith("input-")}
        outs = {k[len("output-") :]: v for k, v in row.items() if k.startswith("output-")}
        return [ins, outs]

    @staticmethod
    def _make(cls: type[Type], values: Mapping[str, Any], i: int) -> Type:
        try:
            return cls(**values)
        except ValueError as exc:
            raise DataError(f"item {i + 1}: not a valid {cls.__name__}: {exc}", source="data") from None


def _as_list(data: Any) -> list[Any]:
    if not isinstance(data, list | tuple) or not data:
        raise DataError("expected a non-empty list", source="data")
    return list(data)


def _get(row: Any, key: str, i: int) -> Any:
    if not isinstance(row, Mapping) or not isinstance(row.get(key), Mapping):
        raise DataError(f"item {i + 1}: expected a dict with a dict under {key!r}", source="data")
    return row[key]


class LlamaV2Runner(BasicModelRunner):
    """Llama 2 chat: each input is wrapped as ``[INST] <<SYS>> system <</SYS>> user [/INST]``.

    ``system_prompt`` defaults to 2023's; a call may pass its own, a ``cue``
    (text the answer starts with) and an ``output_type`` for a typed answer.
    """

    TEMPLATE = LLAMA_V2_TEMPLATE
    DEFAULT_SYSTEM_PROMPT = LLAMA_V2_SYSTEM_PROMPT

    def __init__(
        self,
        model_name: str | None = None,
        task_name: str | None = None,
        system_prompt: str | None = None,
        enable_peft: bool = False,
        config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InvalidInputError(f"system_prompt must be a string, got {type(system_prompt).__name__}")
        self.system_prompt = system_prompt or self.DEFAULT_SYSTEM_PROMPT
        super().__init__(model_name, task_name, enable_peft, config, **kwargs)

    def chat_prompt(self, user: str, system_prompt: str | None = None, cue: str = "") -> str:
        """The prompt for one user message, in this runner's chat format."""
        if not isinstance(user, str) or not user.strip():
            raise InvalidInputError(f"the user message must be a non-empty string, got {user!r}")
        values = {"system": system_prompt or self.system_prompt, "user": user, "cue": cue}
        return fill_2023_template(self.TEMPLATE, values)

    def __call__(  # type: ignore[override]
        self,
        prompt: Any = None,
        system_prompt: str | None = None,
        output_type: Any = None,
        cue: str = "",
        **kwargs: Any,
    ) -> Any:
        inputs = pick_input(prompt, kwargs.pop("input", None), kwargs.pop("inputs", None))
        if isinstance(inputs, list | tuple):
            prompts = [self.chat_prompt(u, system_prompt, cue) for u in inputs]
            out = self.generate(prompts, output_type, **kwargs)
            return out if output_type is not None else [Text(o, u) for o, u in zip(out, inputs, strict=True)]
        return self.generate(self.chat_prompt(inputs, system_prompt, cue), output_type, **kwargs)

    def load_data(
        self, data: Any, verbose: bool = False, user_key: str = "user", output_key: str = "output"
    ) -> None:
        """Add ``{"user": ..., "output": ...}`` dicts (an optional ``"system"`` per row)."""
        rows = []
        for i, row in enumerate(_as_list(data)):
            if not isinstance(row, Mapping) or user_key not in row or output_key not in row:
                raise DataError(
                    f"item {i + 1}: needs the keys {user_key!r} and {output_key!r}", source="data"
                )
            rows.append(
                {"input": self.chat_prompt(row[user_key], row.get("system")), "output": row[output_key]}
            )
        super().load_data(rows, verbose)

    def load_data_from_jsonlines(
        self, file_path: str | Path, verbose: bool = False, user_key: str = "user", output_key: str = "output"
    ) -> None:
        examples = data_module.load_jsonlines(file_path, user_key, output_key)
        self.load_data([{"user": e.prompt, "output": e.completion} for e in examples], verbose)

    def load_data_from_csv(
        self, file_path: str | Path, verbose: bool = False, user_key: str = "user", output_key: str = "output"
    ) -> None:
        examples = data_module.load_csv(file_path, user_key, output_key)
        self.load_data([{"user": e.prompt, "output": e.completion} for e in examples], verbose)

    def load_data_from_dataframe(
        self, df: Any, verbose: bool = False, user_key: str = "user", output_key: str = "output"
    ) -> None:
        examples = data_module.load_dataframe(df, user_key, output_key)
        self.load_data([{"user": e.prompt, "output": e.completion} for e in examples], verbose)


class MistralRunner(LlamaV2Runner):
    """Mistral instruct: each input is wrapped as ``[INST] system user [/INST]``."""

    TEMPLATE = MISTRAL_TEMPLATE
    DEFAULT_SYSTEM_PROMPT = MISTRAL_SYSTEM_PROMPT


class AutocompleteRunner(_TaskRunner):
    """2023's autocomplete runner: continue text; training splits each text at a random point.

    The split point comes from :mod:`random` (seed it for repeatable data), at
    least one character on each side.
    """

    def load_data(self, data: Any, verbose: bool = False, *args: Any, **kwargs: Any) -> None:
        """Add every string field of each Type value (or of each dict) as text to complete."""
        if args or kwargs:
            raise InvalidInputError("AutocompleteRunner.load_data takes Type values (or dicts) and verbose")
        texts = []
        for item in data if isinstance(data, list) else [data]:
            values = item.model_dump() if isinstance(item, Type) else item
            if not isinstance(values, Mapping):
                raise DataError(f"expected Type values or dicts, got {type(item).__name__}", source="data")
            texts += [v for v in values.values() if isinstance(v, str)]
        self.load_data_from_strings(texts, verbose)

    def load_data_from_strings(self, data: Any, verbose: bool = False) -> None:
        """Add texts to complete."""
        texts = [data] if isinstance(data, str) else list(data)
        rows = []
        for i, text in enumerate(texts):
            if not isinstance(text, str) or len(text.strip()) < 2:
                raise DataError(
                    f"item {i + 1}: needs a string of at least 2 characters, got {text!r}", source="data"
                )
            prompt, target = _split(text)
            rows.append({"input": prompt, "output": target})
        super().load_data(rows, verbose)

    def load_data_from_jsonlines(  # type: ignore[override]
        self, file_path: str | Path, keys: list[str] | None = None, verbose: bool = False
    ) -> None:
        with open(file_path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        self.load_data_from_strings(
            [str(v) for r in rows for k, v in r.items() if keys is None or k in keys], verbose
        )

    def load_data_from_dataframe(  # type: ignore[override]
        self, df: Any, columns: list[str] | None = None, verbose: bool = False
    ) -> None:
        values = (df if columns is None else df[columns]).values
        self.load_data_from_strings([str(v) for row in values for v in row], verbose)

    def load_data_from_csv(  # type: ignore[override]
        self, file_path: str | Path, columns: list[str] | None = None, verbose: bool = False
    ) -> None:
        with open(file_path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        self.load_data_from_strings(
            [v for r in rows for k, v in r.items() if columns is None or k in columns], verbose
        )

    def evaluate_autocomplete(self, data: str | list[str], **options: Any) -> list[dict[str, str]]:
        """Split each text at a random point and compare the model's continuation with the rest."""
        texts = [data] if isinstance(data, str) else data
        if not isinstance(texts, list) or not all(isinstance(t, str) and len(t) >= 2 for t in texts):
            raise InvalidInputError(
                "evaluate_autocomplete takes a string or a list of strings (2+ characters)"
            )
        splits = [_split(t) for t in texts]
        predictions = self.generate([p for p, _ in splits], **options)
        return [
            {"input": p, "target_output": t, "predicted_output": o}
            for (p, t), o in zip(splits, predictions, strict=True)
        ]


def _split(text: str) -> tuple[str, str]:
    cut = random.randint(1, len(text) - 1)
    return text[:cut], text[cut:]
