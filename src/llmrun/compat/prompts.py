"""2023 prompt templates (``{input:field}`` placeholders) and the chat formats of the 2023 runners."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from llmrun.errors import InvalidInputError
from llmrun.schema import Context, Type

_PLACEHOLDER = re.compile(r"\{input:([A-Za-z_][A-Za-z0-9_]*)\}")

#: Llama 2 chat format, as 2023's ``LlamaV2Prompt`` (the ``<s>`` BOS is left to the tokenizer).
LLAMA_V2_TEMPLATE = "[INST] <<SYS>>\n{input:system}\n<</SYS>>\n\n{input:user} [/INST]{input:cue}"
#: Mistral instruct format, as 2023's ``MistralPrompt``.
MISTRAL_TEMPLATE = "[INST] {input:system} {input:user} [/INST]"
#: 2023's ``QuestionAnswerModel`` template.
QA_TEMPLATE = "{input:question}"

LLAMA_V2_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while "
    "being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, "
    "or illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information."
)
MISTRAL_SYSTEM_PROMPT = (
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid harmful, "
    "unethical, prejudiced, or negative content. Ensure replies promote fairness and positivity."
)


def check_2023_template(template: object) -> str:
    """A 2023 template: text with ``{input:field}`` placeholders."""
    if not isinstance(template, str) or not _PLACEHOLDER.search(template):
        raise InvalidInputError(
            f"prompt_template must be a str with {{input:field}} placeholders, e.g. '{{input:question}}'; "
            f"got {template!r}"
        )
    return template


def fill_2023_template(template: str, values: Mapping[str, Any]) -> str:
    """Replace each ``{input:field}`` with ``values[field]`` (None: empty)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise InvalidInputError(
                f"the prompt template uses {{input:{name}}} but the input has no field {name!r} "
                f"(it has {', '.join(sorted(values)) or 'none'})"
            )
        value = values[name]
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(one, template)


class BasePrompt:
    """2023's ``llama.prompts.prompt.BasePrompt``: a class holding a ``prompt_template``.

    Subclass it with a ``{input:field}`` template and pass an instance as
    ``LLMEngine(prompt=...)``; calls and training pairs then use that template.
    """

    prompt_template: str = ""
    input: type[Type] | None = None
    output: type[Type] | None = None

    def construct_prompt(self, input: Type, output_type: type[Type] | None = None) -> str:
        """The prompt ``input`` makes (the output type does not change it)."""
        if not isinstance(input, Type):
            raise InvalidInputError(f"construct_prompt takes a Type instance, got {type(input).__name__}")
        return fill_2023_template(check_2023_template(self.prompt_template), input.model_dump())


class BlankInput(Type):
    input: str = Context("input")


class BlankOutput(Type):
    output: str = Context("output")


class BlankPrompt(BasePrompt):
    """2023's ``llama.prompts.blank_prompt.BlankPrompt``: the input text is the whole prompt."""

    prompt_template = "{input:input}"
    input = BlankInput
    output = BlankOutput


class LlamaV2Input(Type):
    """2023's ``llama.prompts.llama_v2_prompt.LlamaV2Input``."""

    system: str = Context(" ")
    user: str = Context(" ")
    cue: str | None = Context(" ", default=None)


class LlamaV2Output(Type):
    """2023's ``LlamaV2Output``."""

    output: str = Context(" ")


class LlamaV2Prompt(BasePrompt):
    """2023's ``LlamaV2Prompt``: Llama 2's chat format (the ``<s>`` BOS is left to the tokenizer)."""

    prompt_template = LLAMA_V2_TEMPLATE
    input = LlamaV2Input
    output = LlamaV2Output
