"""Chat messages to a prompt: the tokenizer's chat template, or Llama 2's ``[INST] <<SYS>>`` format.

A model with neither (a base model such as pythia) cannot take chat requests: :func:`render_chat`
raises a 400 that points at ``/v1/completions``.
"""

from __future__ import annotations

import re
from typing import Any

from llmrun.serve.errors import ServeError, bad_request

ROLES = ("system", "developer", "user", "assistant")
_LLAMA2_CHAT = re.compile(r"llama-?2.*chat", re.IGNORECASE)


def check_messages(raw: object) -> list[dict[str, str]]:
    """``messages`` as ``[{"role", "content"}]`` with text content (parts of type text are joined)."""
    if not isinstance(raw, list) or not raw:
        raise bad_request('messages must be a non-empty list of {"role": ..., "content": ...}', "messages")
    messages = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with role and content", where)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(
                f"{where}.role={role!r} is not supported; use one of {', '.join(ROLES)} "
                "(tools are not supported by llmrun serve)",
                f"{where}.role",
            )
        messages.append(
            {"role": "system" if role == "developer" else str(role), "content": _text(message, where)}
        )
    if messages[-1]["role"] == "assistant":
        raise bad_request("the last message must not be the assistant's: end with a user message", "messages")
    return messages


def _text(message: dict[str, Any], where: str) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise bad_request(
        f"{where}.content must be a string or a list of text parts; images and audio are not supported",
        f"{where}.content",
    )


def is_llama2_chat(names: list[str], model_type: str | None) -> bool:
    """A Llama 2 chat model, judged by its names (``...Llama-2-7b-chat...``) and architecture."""
    return model_type == "llama" and any(_LLAMA2_CHAT.search(n) for n in names if n)


def render_chat(tokenizer: Any, messages: list[dict[str, str]], *, llama2: bool, model: str) -> str:
    """The prompt for ``messages``: the chat template, else Llama 2's format when ``llama2``, else 400."""
    if getattr(tokenizer, "chat_template", None):
        try:
            text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # a template raising (e.g. "roles must alternate") is the request's fault
            raise bad_request(f"the model's chat template rejected the messages: {exc}", "messages") from None
        return _without_leading_bos(tokenizer, text)
    if llama2:
        return llama2_prompt(
            messages, bos=str(getattr(tokenizer, "bos_token", None) or "<s>"), eos=_eos(tokenizer)
        )
    raise ServeError(
        400,
        f"model {model!r} has no chat template and is not a Llama 2 chat model, so it cannot take chat "
        "messages; send a plain prompt to /v1/completions instead",
        code="no_chat_template",
        param="messages",
    )


def llama2_prompt(messages: list[dict[str, str]], *, bos: str = "<s>", eos: str = "</s>") -> str:
    """Meta's Llama 2 chat format; the first BOS is left to the tokenizer, which adds it.

    ``[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]``
    """
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise bad_request(
                "Llama 2 chat needs user and assistant messages to alternate, starting with the user's",
                "messages",
            )
    parts = []
    for i in range(0, len(turns), 2):
        user = turns[i]["content"].strip()
        if i == 0 and system:
            user = f"<<SYS>>\n{system.strip()}\n<</SYS>>\n\n{user}"
        text = ("" if i == 0 else bos) + f"[INST] {user} [/INST]"
        if i + 1 < len(turns):
            text += f" {turns[i + 1]['content'].strip()} {eos}"
        parts.append(text)
    return "".join(parts)


def _eos(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "eos_token", None) or "</s>")


def _without_leading_bos(tokenizer: Any, text: str) -> str:
    """Drop the template's BOS when the tokenizer adds one itself (else it would appear twice)."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        ids = tokenizer("", add_special_tokens=True)["input_ids"]
        if tokenizer.bos_token_id in ids:
            return text[len(bos) :]
    return text
