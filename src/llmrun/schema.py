"""Typed inputs and outputs: ``Type``, ``Context``, prompt rendering and JSON Schema.

A ``Type`` is a pydantic model whose every field carries a description, given
with ``Context("...")`` as in Lamini's 2023 ``llama`` package::

    class Answer(Type):
        answer: str = Context("a short factual answer")
        confidence: float = Context("how sure the answer is, 0 to 1", ge=0, le=1)

Every backend renders prompts with :func:`render_prompt`, so the same input
always becomes the same prompt, whatever runs it.
"""

from __future__ import annotations

import builtins
import enum
import functools
import json
import string
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, ValidationError
from pydantic._internal._model_construction import ModelMetaclass, build_lenient_weakvaluedict
from pydantic._internal._typing_extra import parent_frame_namespace
from pydantic_core import SchemaError as CoreSchemaError
from pydantic_core import SchemaValidator, core_schema

from llmrun.errors import InvalidInputError, OutputValidationError, SchemaError

__all__ = [
    "DEFAULT_TEMPLATE",
    "Context",
    "Type",
    "check_output_type",
    "check_template",
    "describe_output",
    "output_json_schema",
    "parse_output",
    "render_input",
    "render_prompt",
]

T = TypeVar("T", bound="Type")

#: Constraints ``Context`` passes on to pydantic.
_CONSTRAINTS = frozenset(
    {"ge", "gt", "le", "lt", "multiple_of", "min_length", "max_length", "pattern", "default", "examples"}
)

#: The default prompt template. ``{input}`` is the rendered input (a plain
#: prompt, or one ``name (description): value`` line per field of a ``Type``);
#: ``{output}`` describes the requested output type (empty for text calls).
DEFAULT_TEMPLATE = "{input}{output}"


def Context(description: str = "", **constraints: Any) -> Any:  # noqa: N802 - the 2023 name
    """Describe a field of a :class:`Type`, with optional pydantic constraints.

    ``constraints`` may be ``ge``, ``gt``, ``le``, ``lt``, ``multiple_of``,
    ``min_length``, ``max_length``, ``pattern``, ``default`` and ``examples``.

    An empty description (``Context("")``, as 2023 code often wrote) is allowed;
    it costs the model its only hint: the prompt then shows the bare field name
    (``answer: ...``) and the output description says nothing about what the
    field should hold, so say what it holds whenever you can. A field whose type
    is a nested Type may have no ``Context`` at all (2023 allowed it): its own
    fields' descriptions stand for it.
    """
    if not isinstance(description, str):
        raise SchemaError(
            f"Context() takes a description string that says what the field holds, got "
            f'{type(description).__name__}; e.g. Context("a short factual answer")'
        )
    unknown = sorted(set(constraints) - _CONSTRAINTS)
    if unknown:
        raise SchemaError(
            f"Context() got unknown constraint(s) {', '.join(unknown)}; "
            f"supported are: {', '.join(sorted(_CONSTRAINTS))}"
        )
    pattern = constraints.get("pattern")
    if pattern is not None:
        _check_pattern(pattern)
    return Field(description=description, **constraints)


def _check_pattern(pattern: object) -> None:
    """The pattern must compile with the regex engine pydantic validates with."""
    if not isinstance(pattern, str):
        raise SchemaError(f"Context(pattern={pattern!r}): a pattern must be a str regular expression")
    try:
        SchemaValidator(core_schema.str_schema(pattern=pattern))
    except CoreSchemaError as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise SchemaError(
            f"Context(pattern={pattern!r}): pattern={pattern!r} is not a valid regular expression "
            f"({detail}); escape literal brackets and parentheses with a backslash"
        ) from None


class _TypeMeta(ModelMetaclass):
    """Turns pydantic's refusal of a v1 ``__root__`` field into a :class:`SchemaError`."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> type:
        # pydantic reads the class body's enclosing namespace (for local forward references) from
        # the frame that calls its metaclass; that frame is now this one, so hand it the right one
        kwargs.setdefault("__pydantic_reset_parent_namespace__", False)
        namespace.setdefault(
            "__pydantic_parent_namespace__", build_lenient_weakvaluedict(parent_frame_namespace())
        )
        try:
            return super().__new__(mcs, name, bases, namespace, **kwargs)
        except PydanticUserError as e:
            if "__root__" not in str(e):
                raise
            raise SchemaError(
                f"{name} has a `__root__` field (pydantic v1's custom root type, which 2023 allowed); "
                f"llmrun's Type is pydantic v2 and has named fields only: use the value's type directly "
                f'where {name} was used (e.g. `keywords: dict[str, X] = Context("...")`)'
            ) from None


class Type(BaseModel, metaclass=_TypeMeta):
    """Base class of typed inputs and outputs. Every field needs a ``Context``.

    Field types: ``str``, ``int``, ``float``, ``bool``, ``Literal``, ``Enum``,
    ``Optional`` of those, ``list`` of those, nested ``Type`` subclasses, and as
    2023 allowed a bare ``list`` (items of any JSON type) and ``dict`` (a JSON
    object with free keys; ``dict[str, X]`` for typed values).

    The pydantic-v1 names 2023 code calls keep working: ``.dict()``, ``.json()``,
    ``parse_obj()``, ``schema()``, and ``value["field"]``; fields can be assigned.
    """

    model_config = ConfigDict(extra="forbid")

    def dict(self, **kwargs: Any) -> builtins.dict[str, Any]:
        """The fields as a dict (pydantic v1's name for ``model_dump``)."""
        return self.model_dump(**kwargs)

    def json(self, **kwargs: Any) -> str:
        """The fields as JSON text (pydantic v1's name for ``model_dump_json``)."""
        return self.model_dump_json(**kwargs)

    @classmethod
    def parse_obj(cls: type[T], obj: Any) -> T:
        """Validate ``obj`` into this Type (pydantic v1's name for ``model_validate``)."""
        return cls.model_validate(obj)

    @classmethod
    def schema(cls, **kwargs: Any) -> builtins.dict[str, Any]:  # type: ignore[override]
        """The JSON Schema (pydantic v1's name for ``model_json_schema``)."""
        return cls.model_json_schema(**kwargs)

    def __getitem__(self, name: str) -> Any:
        """``value["field"]``, as 2023's ``Type`` allowed."""
        if not isinstance(name, str) or name not in type(self).model_fields:
            raise KeyError(f"{type(self).__name__} has no field {name!r}")
        return getattr(self, name)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, info in cls.model_fields.items():
            if info.description is None and not _is_type(info.annotation):
                raise SchemaError(
                    f"{cls.__name__}.{name} has no description; every field of a Type needs one: "
                    f'declare it as `{name}: {_type_name(info.annotation)} = Context("what {name} holds")`'
                )
        if cls.__pydantic_complete__:  # else a forward reference: checked once the class is complete
            _check_fields(cls)

    @classmethod
    def __pydantic_on_complete__(cls) -> None:
        """Check field types and bounds once forward references are resolved (pydantic >= 2.12)."""
        super().__pydantic_on_complete__()
        if cls.model_fields:  # not for Type itself, completed before this module's helpers exist
            _check_fields(cls)


def _check_fields(cls: type[Type]) -> None:
    """Every field has a supported type and bounds that leave some value."""
    for name, info in cls.model_fields.items():
        problem = _unsupported(info.annotation)
        if problem:
            raise SchemaError(
                f"{cls.__name__}.{name} has the unsupported type {_type_name(info.annotation)} "
                f"({problem}); use str, int, float, bool, Literal, Enum, Optional, list of those, "
                "a nested Type, dict or dict[str, X]"
            )
        bounds = {
            attr: value
            for m in info.metadata
            for attr in ("ge", "gt", "le", "lt", "min_length", "max_length")
            if (value := getattr(m, attr, None)) is not None
        }
        for low, high in (
            ("ge", "le"),
            ("gt", "lt"),
            ("ge", "lt"),
            ("gt", "le"),
            ("min_length", "max_length"),
        ):
            if low in bounds and high in bounds:
                inclusive = low in ("ge", "min_length") and high in ("le", "max_length")
                if bounds[low] > bounds[high] or (not inclusive and bounds[low] == bounds[high]):
                    raise SchemaError(
                        f"{cls.__name__}.{name}: {low}={bounds[low]} and {high}={bounds[high]} leave no "
                        "value; make the lower bound smaller than the upper one"
                    )


def _unsupported(annotation: Any, in_list: bool = False) -> str | None:
    """Why ``annotation`` cannot be a Type field, or None when it can."""
    if annotation in (str, int, float, bool):
        return None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        bad = [m.name for m in annotation if not isinstance(m.value, str | int)]
        return f"enum members {bad} are not str or int" if bad else None
    if isinstance(annotation, type) and issubclass(annotation, Type):
        return None
    if annotation is dict or (annotation is list and not in_list):
        return None  # 2023's bare containers: a free-key JSON object, a list of any JSON values
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is dict:
        if len(args) != 2 or args[0] is not str:
            return "a dict needs str keys, e.g. dict[str, int]"
        return _unsupported(args[1], in_list=True)
    if origin is Literal:
        bad = [a for a in args if not isinstance(a, str | int | bool)]
        return f"Literal values {bad} are not str, int or bool" if bad else None
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            return "only Optional[X] (X | None) unions are supported"
        return _unsupported(rest[0], in_list)
    if origin is list:
        if in_list:
            return "lists of lists are not supported"
        if len(args) != 1:
            return "a list needs an item type, e.g. list[str]"
        return _unsupported(args[0], in_list=True)
    return "not a supported field type"


def _is_type(annotation: Any) -> bool:
    """Whether ``annotation`` is a nested :class:`Type` (its own fields describe it)."""
    return isinstance(annotation, type) and issubclass(annotation, Type)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def check_output_type(output_type: object) -> type[Type]:
    """Return ``output_type`` if it is a usable :class:`Type` subclass, else raise :class:`SchemaError`.

    Usable means complete (forward references resolved) and finite: a recursive
    Type has no bounded JSON shape to generate.
    """
    if isinstance(output_type, type) and issubclass(output_type, Type) and output_type is not Type:
        _check_finite(output_type)
        return output_type
    if isinstance(output_type, Type):
        hint = f"pass the class {type(output_type).__name__}, not an instance of it"
    elif isinstance(output_type, type) and issubclass(output_type, BaseModel):
        hint = f"make {output_type.__name__} subclass llmrun.Type instead of pydantic.BaseModel"
    else:
        hint = "define `class Answer(Type): answer: str = Context('...')` and pass output_type=Answer"
    raise SchemaError(f"output_type must be a subclass of llmrun.Type, got {output_type!r}; {hint}")


@functools.cache
def _check_finite(output_type: type[Type]) -> None:
    found = _find_cycle(output_type, [])
    if found:
        cycle, target = found
        steps = " -> ".join(f"{cls.__name__}.{field}" for cls, field in cycle)
        raise SchemaError(
            f"{output_type.__name__} is recursive ({steps} refers back to {target.__name__}), so it has "
            "no bounded JSON shape to generate; as an output_type, spell out the levels you need with "
            "separate Types (Node -> Child -> Leaf)"
        )


def _find_cycle(
    cls: type[Type], path: list[tuple[type[Type], str]]
) -> tuple[list[tuple[type[Type], str]], type[Type]] | None:
    if not cls.__pydantic_complete__:
        try:
            cls.model_rebuild()
        except Exception as exc:  # pydantic's error for a name it cannot resolve
            reason = str(exc).splitlines()[0]
            raise SchemaError(
                f"{cls.__name__} refers to a class that is not defined ({reason}); define it, then call "
                f"{cls.__name__}.model_rebuild()"
            ) from None
    for name, info in cls.model_fields.items():
        for nested in _nested_types(info.annotation):
            here = [*path, (cls, name)]
            if nested in [c for c, _ in here]:
                return here, nested
            found = _find_cycle(nested, here)
            if found:
                return found
    return None


def _nested_types(annotation: Any) -> list[type[Type]]:
    if isinstance(annotation, type) and issubclass(annotation, Type):
        return [annotation]
    return [t for arg in get_args(annotation) for t in _nested_types(arg)]


def check_prompt_text(index: int, text: str) -> str:
    """``text`` if it can be encoded as UTF-8 (no lone surrogates), else :class:`InvalidInputError`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"prompt {index} holds a lone surrogate ({text[exc.start]!r}) at position {exc.start}, which is "
            "not text any model can read; it usually comes from decoding bytes with errors='surrogateescape' "
            "or from a broken JSON escape: decode the input as UTF-8 first"
        ) from None
    return text


def check_template(template: str | None) -> str:
    """Validate a prompt template: it must contain ``{input}`` and may contain ``{output}``."""
    if template is None:
        return DEFAULT_TEMPLATE
    if not isinstance(template, str):
        raise SchemaError(
            f"template must be a str with an {{input}} placeholder, got {type(template).__name__}"
        )
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise SchemaError(f"template {template!r} is not a valid format string: {exc}") from None
    unknown = names - {"input", "output"}
    if "input" not in names or unknown:
        raise SchemaError(
            f"template {template!r} must contain the placeholder {{input}} and may contain {{output}}; "
            f"found {sorted(names) or 'none'} (write literal braces as {{{{ and }}}})"
        )
    return template


def render_input(value: str | Type) -> str:
    """Render a prompt or a :class:`Type` instance as the input part of a prompt."""
    if isinstance(value, str):
        return value
    lines = []
    for name, info in type(value).model_fields.items():
        described = f"{name} ({info.description})" if info.description else name
        lines.append(f"{described}: {_render_value(getattr(value, name))}")
    return "\n".join(lines)


def _render_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, list):
        return json.dumps([json.loads(v.model_dump_json()) if isinstance(v, BaseModel) else v for v in value])
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


@functools.cache
def describe_output(output_type: type[Type]) -> str:
    """The part of a prompt that asks for ``output_type``: one line per field."""
    lines = [f"Respond with a JSON object ({output_type.__name__}) with these fields:"]
    lines += _describe_fields(output_type, indent="")
    return "\n".join(lines) + "\n"


def _describe_fields(cls: type[Type], indent: str) -> list[str]:
    lines = []
    for name, info in cls.model_fields.items():
        kind, nested = _describe_annotation(info.annotation)
        bounds = [label for m in info.metadata if (label := _bound_label(m))]
        extra = f", {', '.join(bounds)}" if bounds else ""
        described = f": {info.description}" if info.description else ""
        lines.append(f"{indent}- {name} ({kind}{extra}){described}")
        if nested is not None:
            lines += _describe_fields(nested, indent + "  ")
    return lines


_BOUND_LABELS = {
    "ge": ">= {}",
    "gt": "> {}",
    "le": "<= {}",
    "lt": "< {}",
    "multiple_of": "a multiple of {}",
    "min_length": "at least {} long",
    "max_length": "at most {} long",
    "pattern": "matching {}",
}


def _bound_label(metadata: Any) -> str:
    for attr, label in _BOUND_LABELS.items():
        if getattr(metadata, attr, None) is not None:
            return label.format(getattr(metadata, attr))
    return ""


def _describe_annotation(annotation: Any) -> tuple[str, type[Type] | None]:
    names = {str: "string", int: "integer", float: "number", bool: "true or false"}
    if annotation in names:
        return names[annotation], None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(json.dumps(m.value) for m in annotation), None
    if isinstance(annotation, type) and issubclass(annotation, Type):
        return f"object {annotation.__name__}", annotation
    if annotation is dict:
        return "JSON object", None
    if annotation is list:
        return "list", None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict:
        kind, _ = _describe_annotation(args[1])
        return f"JSON object of {kind} values", None
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args), None
    if origin is list:
        kind, nested = _describe_annotation(args[0])
        return f"list of {kind}", nested
    rest = [a for a in args if a is not type(None)]
    kind, nested = _describe_annotation(rest[0])
    return f"{kind} or null", nested


def render_prompt(
    value: str | Type, output_type: type[Type] | None = None, template: str | None = None
) -> str:
    """Render the full prompt for ``value``, asking for ``output_type`` when given.

    The same arguments always give the same prompt. ``template`` defaults to
    :data:`DEFAULT_TEMPLATE`.
    """
    output = "\n\n" + describe_output(output_type) if output_type is not None else ""
    return check_template(template).format(input=render_input(value), output=output)


@functools.cache
def output_json_schema(output_type: type[Type]) -> dict[str, Any]:
    """The JSON Schema of ``output_type`` (cached; do not mutate the result)."""
    return output_type.model_json_schema()


def parse_output(text: str, output_type: type[T]) -> T:
    """Validate a backend's JSON text into ``output_type``.

    Raises :class:`~llmrun.errors.OutputValidationError` carrying the raw text.
    """
    try:
        return output_type.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise OutputValidationError(
            f"the model's output is not a valid {output_type.__name__} ({problems}); "
            f"raw output: {text[:200]!r}",
            raw_text=text,
        ) from None
