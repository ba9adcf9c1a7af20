"""2023's ``DocsToQA``: write questions about documents, answer them, fine-tune on the pairs.

A thin layer over :class:`~llmrun.compat.engines.BasicModelRunner`: chunks of
the documents go into Llama-2 chat prompts; one runner writes questions and
answers, a second one is fine-tuned on the pairs (and answers afterwards).
Files are laid out as 2023 did (``questions.json``, ``questions_prompt.json``,
``answers_prompt.json``, ``qa.json``, ``docs_dirpath.txt`` in a folder under
``outputs/``), so saved work moves between the two.
"""

from __future__ import annotations

import csv
import datetime
import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from llmrun.compat.engines import BasicModelRunner
from llmrun.compat.prompts import LLAMA_V2_TEMPLATE, fill_2023_template
from llmrun.errors import DataError, InvalidInputError

PROMPT_SEP = "\n"
#: Rows read from a CSV or JSON-lines document, and characters from a text one (2023's limits).
MAX_ROWS, MAX_TEXT_CHARS = 100, 1_000_000


class DocsToQA:
    """Question/answer pairs from the documents under ``docs_dirpath`` (see the module docstring).

    ``qa_path`` is a CSV with ``Question``/``Answer`` columns whose rows are shown
    as examples. ``model_name`` defaults to llmrun's model setting (2023:
    Llama-2-13b-chat); extra keywords go to the runners (``backend=`` ...).
    """

    def __init__(
        self,
        docs_dirpath: str | None = None,
        qa_path: str | None = None,
        model_name: str | None = None,
        **options: Any,
    ) -> None:
        self.docs: dict[int, str] = {}
        self.docs_dirpath = docs_dirpath
        if docs_dirpath:
            self._chunk_docs()
        self.question_examples: list[str] = []
        self.answer_examples: list[str] = []
        if qa_path:
            self._read_examples(qa_path)
        self.question_system_prompt = (
            "You are a focused assistant who only asks questions, no chit chat. You only ask factually "
            "coherent questions about the reference text. Do not repeat the request, just ask questions."
        )
        self.answer_system_prompt = (
            "You are an expert. You answer questions factually, grounded in given reference material. "
            "Answer concisely."
        )
        self.qa_system_prompt = "You are an assistant who answers questions and holds a conversation."
        self.question_prompt_suffix = "Write 5 questions about the above:"
        self.answer_prompt_suffix = "Answer the above question, based solely on the reference material above:"
        self.prompt_sep = PROMPT_SEP
        self.question_llm = BasicModelRunner(model_name, **options)
        self.answer_llm = self.question_llm
        self.qa_llm = BasicModelRunner(model_name, **options)
        self.questions: dict[int, list[str]] = defaultdict(list)
        self.qa: dict[int, list[list[str]]] = defaultdict(list)

    # ----------------------------------------------------------------- documents
    def _chunk_docs(self, char_chunk_size: int = 5000) -> None:
        folder = Path(str(self.docs_dirpath))
        if not folder.is_dir():
            raise InvalidInputError(f"docs_dirpath {folder} is not a directory")
        index = 0
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            for text in _texts(path):
                for start in range(0, len(text), char_chunk_size):
                    self.docs[index] = text[start : start + char_chunk_size]
                    index += 1

    def _read_examples(self, qa_path: str) -> None:
        with open(qa_path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("Question"):
                    self.question_examples.append(row["Question"])
                if row.get("Answer"):
                    self.answer_examples.append(row["Answer"])

    def _examples(self, kind: str, pool: list[str], n: int = 3) -> str:
        chosen = random.sample(pool, min(n, len(pool)))
        return f"Example {kind}:\n" + "".join(f"{e}\n" for e in chosen) + "Task:\n" if chosen else ""

    def _make_prompt(self, system_prompt: str, user_prompt: str, cue: str = "") -> str:
        return fill_2023_template(
            LLAMA_V2_TEMPLATE, {"system": system_prompt, "user": user_prompt, "cue": cue}
        )

    def _add_doc_to_question(self, question: str, doc_id: int) -> str:
        return f"{self.docs[doc_id]}{self.prompt_sep}{question}"

    # ----------------------------------------------------------------- questions and answers
    def prompt_engineer_questions(
        self,
        system_prompt: str | None = None,
        prompt_suffix: str | None = None,
        start_index: int = 0,
        save: bool = False,
        verbose: bool = True,
    ) -> dict[int, list[str]]:
        """Ask the model for questions about each chunk; ``{doc_id: [question, ...]}``."""
        self.question_system_prompt = system_prompt or self.question_system_prompt
        self.question_prompt_suffix = (
            prompt_suffix if prompt_suffix is not None else self.question_prompt_suffix
        )
        if not self.docs:
            raise InvalidInputError(
                "no documents: pass DocsToQA(docs_dirpath=...) with .txt, .csv or .jsonl files"
            )
        dirpath = _new_dir("questions") if save else None
        for doc_id, chunk in list(self.docs.items())[start_index:]:
            ask = (
                f"{chunk}{self.prompt_sep}{self.question_prompt_suffix}"
                if self.question_prompt_suffix
                else chunk
            )
            ask = self._examples("Questions", self.question_examples) + ask
            output = _tidy(self.question_llm(self._make_prompt(self.question_system_prompt, ask, cue="1.")))
            found = re.findall(
                r"\d+\.\s*(.*)", output if output.lstrip().startswith("1.") else f"1. {output}"
            )
            self.questions[doc_id] = [q.strip() for q in found if q.strip()] or [output.strip()]
            if verbose:
                print(f"=== questions for document {doc_id} ===\n" + "\n".join(self.questions[doc_id]))
        if dirpath is not None:
            self._save_questions(dirpath)
            print(f"Saved questions to {dirpath}/questions.json")
        return dict(self.questions)

    def prompt_engineer_answers(
        self,
        system_prompt: str | None = None,
        prompt_suffix: str | None = None,
        start_index: int = 0,
        questions: dict[int, list[str]] | None = None,
        save: bool = False,
        verbose: bool = True,
    ) -> dict[int, list[list[str]]]:
        """Answer every question from its chunk; ``{doc_id: [[question, answer], ...]}``."""
        self.answer_system_prompt = system_prompt or self.answer_system_prompt
        self.answer_prompt_suffix = prompt_suffix if prompt_suffix is not None else self.answer_prompt_suffix
        if questions is not None:
            self.questions = defaultdict(list, questions)
        if not self.questions:
            raise InvalidInputError(
                "no questions: run prompt_engineer_questions() or load_questions(dirpath) first"
            )
        jobs = [(d, q) for d, qs in self.questions.items() if d in self.docs for q in qs][start_index:]
        for doc_id, question in jobs:
            ask = f"{self.docs[doc_id]}{self.prompt_sep}{question}"
            ask += f"{self.prompt_sep}{self.answer_prompt_suffix}" if self.answer_prompt_suffix else ""
            ask = self._examples("Answers", self.answer_examples) + ask
            answer = _tidy(self.answer_llm(self._make_prompt(self.answer_system_prompt, ask))).strip()
            self.qa[doc_id].append([question, answer])
            if verbose:
                print(f"=== {question}\n{answer}")
        if save:
            dirpath = _new_dir("qa")
            self._save_questions(dirpath)
            _write_json(dirpath / "answers_prompt.json", self._prompt("answer"))
            _write_json(dirpath / "qa.json", self.qa)
            print(f"Saved answers to {dirpath}/qa.json")
        return dict(self.qa)

    # ----------------------------------------------------------------- tuning and answering
    def train(self, is_public: bool = False, use_retrieval: bool = True) -> str:
        """Fine-tune the QA model on the pairs (also with their chunk in front, with ``use_retrieval``)."""
        rows = []
        for doc_id, pairs in self.qa.items():
            for question, answer in pairs:
                rows.append({"input": self._make_prompt(self.qa_system_prompt, question), "output": answer})
                if use_retrieval and doc_id in self.docs:
                    with_doc = self._add_doc_to_question(question, doc_id)
                    rows.append(
                        {"input": self._make_prompt(self.qa_system_prompt, with_doc), "output": answer}
                    )
        if not rows:
            raise InvalidInputError(
                "no question/answer pairs: run prompt_engineer_answers() or load_qa(dirpath)"
            )
        self.qa_llm.clear_data()
        self.qa_llm.load_data(rows)
        self.qa_llm.train(is_public=is_public)
        return self.qa_llm.model_name

    def run(self, user_input: str, doc_id: int | None = None, verbose: bool = False) -> str:
        """The QA model's answer (with chunk ``doc_id`` in front when given)."""
        if doc_id is not None:
            user_input = self._add_doc_to_question(user_input, doc_id)
        prompt = self._make_prompt(self.qa_system_prompt, user_input)
        if verbose:
            print(f"=== prompt\n{prompt}")
        return _tidy(self.qa_llm(prompt))

    # ----------------------------------------------------------------- files
    def _prompt(self, kind: str) -> dict[str, str]:
        return {
            "system_prompt": getattr(self, f"{kind}_system_prompt"),
            "prompt_suffix": getattr(self, f"{kind}_prompt_suffix"),
        }

    def _save_questions(self, dirpath: Path) -> None:
        _write_json(dirpath / "questions.json", self.questions)
        _write_json(dirpath / "questions_prompt.json", self._prompt("question"))
        (dirpath / "docs_dirpath.txt").write_text(str(self.docs_dirpath or ""), encoding="utf-8")

    def load_questions(self, dirpath: str | Path) -> None:
        """Read questions (and their prompt, and the documents' folder) saved by ``save=True``."""
        folder = Path(dirpath)
        self.questions = defaultdict(list, _int_keys(_read_json(folder / "questions.json")))
        prompt = _read_json(folder / "questions_prompt.json")
        self.question_system_prompt, self.question_prompt_suffix = (
            prompt["system_prompt"],
            prompt["prompt_suffix"],
        )
        self._docs_from(folder)

    def load_qa(self, dirpath: str | Path) -> None:
        """Read question/answer pairs saved by ``prompt_engineer_answers(save=True)``."""
        folder = Path(dirpath)
        self.load_questions(folder)
        self.qa = defaultdict(list, _int_keys(_read_json(folder / "qa.json")))
        prompt = _read_json(folder / "answers_prompt.json")
        self.answer_system_prompt, self.answer_prompt_suffix = (
            prompt["system_prompt"],
            prompt["prompt_suffix"],
        )

    def _docs_from(self, folder: Path) -> None:
        saved = (
            (folder / "docs_dirpath.txt").read_text(encoding="utf-8")
            if (folder / "docs_dirpath.txt").is_file()
            else ""
        )
        if not self.docs and saved:
            self.docs_dirpath = saved
            self._chunk_docs()


def _texts(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [path.read_text(encoding="utf-8", errors="replace")[:MAX_TEXT_CHARS]]
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            rows = [r for _, r in zip(range(MAX_ROWS), csv.DictReader(f), strict=False)]
        return ["\n".join(f"{k}: {v}" for k, v in r.items()) for r in rows]
    if suffix in (".jsonl", ".jsonlines", ".json"):
        texts = []
        with path.open(encoding="utf-8") as f:
            for n, line in zip(range(MAX_ROWS), f, strict=False):
                try:
                    row = json.loads(line)
                except ValueError:
                    raise DataError(f"{path}, line {n + 1}: not valid JSON", str(path), n + 1) from None
                texts.append(
                    "\n".join(f"{k}: {v}" for k, v in row.items()) if isinstance(row, dict) else str(row)
                )
        return texts
    return []  # other files are skipped, as 2023 did


def _tidy(text: str) -> str:
    """Drop repeated punctuation and immediately repeated words, as 2023 did."""
    text = re.sub(r"(\W)(?=\1)", "", text)
    return re.sub(r"\b(\w+)( \1\b)+", r"\1", text)


def _new_dir(kind: str) -> Path:
    folder = Path("outputs") / f"{kind}_{datetime.datetime.now():%Y%m%d_%H%M%S}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist; save with save=True first")
    return json.loads(path.read_text(encoding="utf-8"))


def _int_keys(data: dict[str, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in data.items()}


def load_model(
    docs_dirpath: str | None = None, qa_path: str | None = None, model_name: str | None = None
) -> DocsToQA:
    """A :class:`DocsToQA` (2023's helper)."""
    return DocsToQA(docs_dirpath, qa_path, model_name)


def run_prompt_engineer_questions(
    docs_dirpath: str,
    qa_path: str | None = None,
    model_name: str | None = None,
    system_prompt: str | None = None,
    prompt_suffix: str | None = None,
    start_index: int = 0,
    save: bool = True,
    verbose: bool = True,
) -> dict[int, list[str]]:
    """Questions about each chunk of the documents (saved under ``outputs/`` by default)."""
    llm = load_model(docs_dirpath, qa_path, model_name)
    return llm.prompt_engineer_questions(system_prompt, prompt_suffix, start_index, save, verbose)


def run_prompt_engineer_answers(
    questions_dirpath: str,
    docs_dirpath: str | None = None,
    qa_path: str | None = None,
    model_name: str | None = None,
    system_prompt: str | None = None,
    prompt_suffix: str | None = None,
    start_index: int = 0,
    save: bool = True,
    verbose: bool = True,
) -> dict[int, list[list[str]]]:
    """Answers to saved questions (saved under ``outputs/`` by default)."""
    llm = load_model(docs_dirpath, qa_path, model_name)
    llm.load_questions(questions_dirpath)
    return llm.prompt_engineer_answers(system_prompt, prompt_suffix, start_index, None, save, verbose)


def finetune_qa(
    qa_dirpath: str,
    docs_dirpath: str | None = None,
    model_name: str | None = None,
    is_public: bool = False,
    use_retrieval: bool = True,
) -> str:
    """Fine-tune on saved pairs; returns the tuned model's name."""
    llm = load_model(docs_dirpath, model_name=model_name)
    llm.load_qa(qa_dirpath)
    return llm.train(is_public=is_public, use_retrieval=use_retrieval)


def run_model(
    question: str,
    docs_dirpath: str | None = None,
    model_name: str | None = None,
    doc_id: int | None = None,
    verbose: bool = False,
) -> str:
    """The answer of ``model_name`` (e.g. the name :func:`finetune_qa` returned) to ``question``."""
    llm = load_model(docs_dirpath, model_name=model_name)
    output = llm.run(question, doc_id, verbose=verbose)
    if verbose:
        print(f"=== answer\n{output}")
    return output
