"""Tokenizers for tests and benchmarks: GPT-NeoX-like and Llama-like ones trained on the spot on a
small built-in corpus (:data:`CORPUS`), and loaders for the real pythia and Llama 2 tokenizer files.

Offline, in seconds; tokenizers and transformers are imported inside the functions.
"""

from __future__ import annotations

import json
import shutil
import string
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrun.checks import is_int_at_least
from llmrun.errors import ConfigurationError, DependencyError, InvalidInputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = [
    "CORPUS",
    "load_llama2_tokenizer",
    "load_pythia_tokenizer",
    "train_byte_level_bpe_tokenizer",
    "train_sentencepiece_style_tokenizer",
]

NEOX_EOS = "<|endoftext|>"
LLAMA_UNK, LLAMA_BOS, LLAMA_EOS = "<unk>", "<s>", "</s>"
SPIECE_UNDERLINE = "▁"
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


def _check_vocab_size(vocab_size: int, minimum: int, what: str) -> None:
    if not is_int_at_least(vocab_size, minimum):
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
