"""Settings, resolved and validated in one place.

Precedence: explicit arguments > environment > config file > the runner's defaults
(backend ``local`` and model ``EleutherAI/pythia-70m`` when none is chosen).

Environment variables are ``LLMRUN_<OPTION>`` (``LLMRUN_BACKEND``,
``LLMRUN_MODEL``, ``LLMRUN_DEVICE``, ``LLMRUN_THREADS``, or any other option the
chosen backend accepts, upper-cased); their text is parsed into the option's
type (booleans accept exactly ``1/0``, ``true/false``, ``yes/no``, ``on/off``).
The config file is TOML, found at ``$LLMRUN_CONFIG``, else ``./llmrun.toml``,
else ``~/.config/llmrun/config.toml``::

    backend = "local"          # top-level keys: backend, model, and options the chosen backend takes
    model = "EleutherAI/pythia-70m"

    [local]                    # a table per backend, read only when that backend is chosen
    device = "cpu"

    [lamini]
    timeout = 30

Every value, whatever its source, is checked against one settings model per
runner class (:func:`options_model`), built from the types of its constructor's
keyword options: a string is never taken for a boolean or a number, an unknown
key is an error naming the closest known one, and each error names the option,
where its value came from and how to fix it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, create_model

from llmrun.errors import ConfigurationError

ENV_PREFIX = "LLMRUN_"
DEFAULT_BACKEND = "local"
DEFAULT_MODEL = "EleutherAI/pythia-70m"
#: Options every runner takes, handled by ``ModelRunner`` itself (arguments only).
_RUNNER_OPTIONS = ("generation", "template")
#: Options never read from ``LLMRUN_<OPTION>``: ``LLMRUN_CONFIG`` names the config file.
_NOT_FROM_ENV = frozenset({"config"})
#: Top-level config-file keys that are not backend options.
_SELECTORS = ("backend", "model")
#: Tables of the config file that belong to a tool, not a backend (each reads its own).
TOOL_TABLES = frozenset({"serve"})
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

F = TypeVar("F", bound=Callable[..., None])


# --------------------------------------------------------------------------- the config file
def config_file() -> Path | None:
    """The config file in force, or None when there is none."""
    explicit = os.environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigurationError(
                f"LLMRUN_CONFIG points to {path}, which is not a file; fix the path or unset LLMRUN_CONFIG"
            )
        return path
    for candidate in (Path("llmrun.toml"), Path.home() / ".config" / "llmrun" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """Parse the config file (``path`` or the one in force); {} when there is none."""
    path = path or config_file()
    if path is None:
        return {}
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"config file {path} cannot be read: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"config file {path} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None


# --------------------------------------------------------------------------- backend and model
def resolve_backend_and_model(
    backend: str | None, model: str | None, file_settings: Mapping[str, Any]
) -> tuple[str, str]:
    """Pick the backend name and model from the explicit value, env, file, default.

    An explicit or configured model name that is empty is an error, not the default.
    """
    chosen_backend = _first(backend, os.environ.get(ENV_PREFIX + "BACKEND"), file_settings.get("backend"))
    for value, where in ((model, "argument"), (file_settings.get("model"), "config file")):
        if isinstance(value, str) and not value.strip():
            raise ConfigurationError(
                f"the model name is empty ({where}); name a model such as 'EleutherAI/pythia-70m' or a "
                "checkpoint folder, or leave it out to use the configured default"
            )
    chosen_model = _first(model, os.environ.get(ENV_PREFIX + "MODEL"), file_settings.get("model"))
    for name, value in (("backend", chosen_backend), ("model", chosen_model)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"setting {name!r} must be a string, got {value!r}")
    return str(chosen_backend or DEFAULT_BACKEND), str(chosen_model or DEFAULT_MODEL)


# --------------------------------------------------------------------------- the settings model
@dataclass(frozen=True)
class Option:
    """One keyword option of a runner's constructor."""

    name: str
    annotation: Any
    default: Any


def runner_options(runner_cls: type) -> dict[str, Option]:
    """The keyword options of ``runner_cls``'s constructor (not ``generation``/``template``)."""
    return _function_options(inspect.unwrap(runner_cls.__init__))  # type: ignore[misc]


def accepted_options(runner_cls: type) -> dict[str, Any]:
    """The keyword options of a runner's constructor, with their defaults."""
    return {name: option.default for name, option in runner_options(runner_cls).items()}


def options_model(runner_cls: type) -> type[BaseModel]:
    """The validated settings model of ``runner_cls``'s options (built once per class).

    Booleans, integers, floats and strings are strict: ``"no"`` is not a boolean,
    ``"4"`` not an integer; a float must be finite; a string option also takes a
    path. Options of other types are passed through for the runner to check.
    """
    return _function_model(inspect.unwrap(runner_cls.__init__))  # type: ignore[misc]


@functools.cache
def _function_options(init: Callable[..., Any]) -> dict[str, Option]:
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # unresolvable annotations (a third-party runner): check nothing
        hints = {}
    params = inspect.signature(init).parameters
    return {
        name: Option(name, hints.get(name, Any), p.default)
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _RUNNER_OPTIONS
    }


@functools.cache
def _function_model(init: Callable[..., Any]) -> type[BaseModel]:
    fields: dict[str, Any] = {
        name: (_field_type(option.annotation), None) for name, option in _function_options(init).items()
    }
    config = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
    model: type[BaseModel] = create_model(
        f"{init.__qualname__.split('.')[0]}Options", __config__=config, **fields
    )
    return model


def _to_str(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


_STR = Annotated[str, BeforeValidator(_to_str)]
_SIMPLE = (bool, int, float)


def _field_type(annotation: Any) -> Any:
    """The strict pydantic type for an option's annotation; Any for what the runner checks itself."""
    if annotation is str:
        return _STR
    if annotation in _SIMPLE:
        return annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return annotation
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and (rest[0] is str or rest[0] in _SIMPLE or get_origin(rest[0]) is Literal):
            return _field_type(rest[0]) | None
    return Any


def _kind(annotation: Any) -> str:
    """What an option takes, in words."""
    if annotation is bool:
        return "True or False"
    names = {int: "an integer", float: "a finite number", str: "a string"}
    if annotation in names:
        return names[annotation]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    rest = [a for a in args if a is not type(None)]
    if len(rest) == 1:
        return f"{_kind(rest[0])}, or None"
    return "a valid value"


def _fix(option: Option, source: str) -> str:
    base = _kind_base(option.annotation)
    if source.startswith("config file"):
        if base is bool:
            return f"write {option.name} = false or {option.name} = true (TOML booleans take no quotes)"
        if base in (int, float):
            return f"write {option.name} = <number> without quotes"
        if base is str:
            return f'write {option.name} = "<text>" in quotes'
        return "fix the value in the config file"
    if source.startswith("environment"):
        return f"set {ENV_PREFIX}{option.name.upper()} to a valid value"
    if base is bool:
        return f"pass {option.name}=True or {option.name}=False"
    return f"pass {option.name} as {_kind(option.annotation)}"


def _kind_base(annotation: Any) -> Any:
    rest = [a for a in get_args(annotation) if a is not type(None)]
    return (
        rest[0]
        if get_origin(annotation) in (typing.Union, types.UnionType) and len(rest) == 1
        else annotation
    )


def validate_options(
    runner_cls: type, values: Mapping[str, Any], sources: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Check ``values`` against :func:`options_model`; return them with numbers normalised.

    ``sources`` says where each value came from (``"argument"`` when absent), for the error.
    """
    return _validate(inspect.unwrap(runner_cls.__init__), values, sources or {})  # type: ignore[misc]


def _validate(
    init: Callable[..., Any], values: Mapping[str, Any], sources: Mapping[str, str]
) -> dict[str, Any]:
    options = _function_options(init)
    try:
        checked = _function_model(init).model_validate(dict(values))
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0])
        option, value = options[name], values[name]
        source = sources.get(name, "argument")
        shown = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
        raise ConfigurationError(
            f"option {name}={shown} ({source}) is invalid: it must be {_kind(option.annotation)}, "
            f"not {type(value).__name__} {shown}; {_fix(option, source)}"
        ) from None
    out = {}
    for name, value in values.items():
        new = getattr(checked, name)
        # numbers and paths normalised (5 -> 5.0 for a float option); other values passed on as given
        out[name] = new if isinstance(value, int | float | os.PathLike) else value
    return out


def checked_options(init: F) -> F:
    """Decorate a runner's ``__init__`` so keyword options passed to it directly are validated too.

    :func:`llmrun.load` validates every source before the constructor runs; this
    covers ``LocalRunner("m", allow_pickle="no")`` built by hand.
    """
    accepted = _function_options(init)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        given = {k: v for k, v in kwargs.items() if k in accepted}
        if given:
            _validate(init, given, {})
        init(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- merging
def resolve_options(
    runner_cls: type,
    backend: str,
    explicit: Mapping[str, Any],
    file_settings: Mapping[str, Any],
    *,
    argument_label: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Merge and validate the options ``runner_cls`` accepts: explicit > env > file.

    Unknown explicit options and unknown config-file keys raise
    :class:`ConfigurationError` naming the closest known one. ``argument_label``
    names an explicit option in errors (the CLI passes its flag names).
    """
    accepted = runner_options(runner_cls)
    unknown = sorted(set(explicit) - set(accepted))
    if unknown:
        named = [argument_label(n) for n in unknown] if argument_label else unknown
        hint = _close(unknown[0], accepted)
        raise ConfigurationError(
            f"backend {backend!r} does not take option(s) {', '.join(named)}{hint}; "
            f"it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    path = config_file() if file_settings else None
    where = f"config file {path}" if path else "config file"
    section = _check_file_keys(runner_cls, backend, file_settings, where)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    label = argument_label or (lambda _name: "argument")
    for name, option in accepted.items():
        env_name = ENV_PREFIX + name.upper()
        env = os.environ.get(env_name) if name not in _NOT_FROM_ENV else None
        if name in explicit:
            merged[name], sources[name] = explicit[name], label(name)
        elif env:  # an empty variable counts as unset
            merged[name], sources[name] = from_env_text(option, env_name, env), f"environment {env_name}"
        elif name in section:
            merged[name], sources[name] = section[name], f"{where}, table [{backend}]"
        elif name in file_settings and name not in _SELECTORS:
            merged[name], sources[name] = file_settings[name], f"{where}, top level"
    return validate_options(runner_cls, merged, sources)


def _check_file_keys(
    runner_cls: type, backend: str, file_settings: Mapping[str, Any], where: str
) -> Mapping[str, Any]:
    """Reject unknown tables and keys; return the chosen backend's table."""
    from llmrun.registry import available_backends

    accepted = runner_options(runner_cls)
    backends = set(available_backends()) | {backend}
    for key, value in file_settings.items():
        if key in _SELECTORS or key in TOOL_TABLES:
            continue
        if isinstance(value, Mapping) and key not in accepted:
            if key not in backends:
                hint = _close(key, backends, "[{}]")
                raise ConfigurationError(
                    f"{where}: unknown table [{key}]{hint}; tables are named after backends "
                    f"({', '.join(sorted(backends))}) or tools ({', '.join(sorted(TOOL_TABLES))})"
                )
            continue
        if key not in accepted:
            raise ConfigurationError(
                f"{where}: unknown key {key!r} at the top level{_close(key, accepted)}; top-level keys are "
                f"backend, model and options of the chosen backend {backend!r} "
                f"({', '.join(sorted(accepted)) or 'none'}); put an option of another backend in its table"
            )
    section = file_settings.get(backend, {})
    if not isinstance(section, Mapping):
        raise ConfigurationError(f"{where}: [{backend}] must be a table, got {section!r}")
    for key in section:
        if key not in accepted:
            raise ConfigurationError(
                f"{where}, table [{backend}]: unknown key {key!r}{_close(key, accepted)}; "
                f"backend {backend!r} takes: {', '.join(sorted(accepted)) or 'none'}"
            )
    return section


def _close(word: str, known: Any, fmt: str = "{!r}") -> str:
    match = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {fmt.format(match[0])}?)" if match else ""


def from_env_text(option: Option, env_name: str, raw: str) -> Any:
    """Turn an env var's text into the option's type; the settings model checks the result."""
    base = _kind_base(option.annotation)
    if base is Any and option.default is not None and not isinstance(option.default, str):
        base = type(option.default)  # an unannotated option: its default says the type
    if base is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigurationError(f"{env_name}={raw!r} is not a boolean; use 1/0 or true/false")
    for kind in (int, float):
        if base is kind:
            try:
                return kind(raw)
            except ValueError:
                raise ConfigurationError(
                    f"{env_name}={raw!r} is not a valid {kind.__name__}; set it to a number"
                ) from None
    return raw


def _first(*values: Any) -> Any:
    for value in values:
        if value not in (None, ""):
            return value
    return None
