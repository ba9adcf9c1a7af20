"""Backends by name, and :func:`load`, the one way to build a runner from settings.

Built-in backends are ``local``, ``lamini``, ``openai`` and ``fake``. Third-party packages
add theirs through the entry-point group ``llmrun.backends``::

    [project.entry-points."llmrun.backends"]
    mycloud = "mypackage.runner:MyCloudRunner"

or at run time with :func:`register_backend`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from llmrun.config import read_config_file, resolve_backend_and_model, resolve_options
from llmrun.errors import BackendNotFoundError, ConfigurationError
from llmrun.runner import ModelRunner
from llmrun.testing.override import RunnerSpec, apply_overrides

ENTRY_POINT_GROUP = "llmrun.backends"

_BUILTIN: dict[str, str] = {
    "local": "llmrun.backends.local:LocalRunner",
    "lamini": "llmrun.backends.lamini:LaminiRunner",
    "openai": "llmrun.backends.openai:OpenAIRunner",
    "fake": "llmrun.testing.fake:FakeRunner",
}
_registered: dict[str, type[ModelRunner] | str] = {}


def register_backend(name: str, runner: type[ModelRunner] | str) -> None:
    """Register a backend class (or a ``"module:Class"`` path) under ``name``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigurationError(f"backend name must be an identifier like 'mycloud', got {name!r}")
    _registered[name] = runner


def available_backends() -> list[str]:
    """Names of all known backends: built-in, registered and from entry points."""
    names = set(_BUILTIN) | set(_registered) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def get_backend(name: str) -> type[ModelRunner]:
    """The runner class registered as ``name``."""
    target: type[ModelRunner] | str | None = _registered.get(name) or _BUILTIN.get(name)
    if target is None:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if found:
            target = found[0].value
    if target is None:
        raise BackendNotFoundError(
            f"unknown backend {name!r}; known backends are: {', '.join(available_backends())}"
        )
    runner = _import(target) if isinstance(target, str) else target
    if not (isinstance(runner, type) and issubclass(runner, ModelRunner)):
        raise BackendNotFoundError(
            f"backend {name!r} points to {runner!r}, which is not a ModelRunner subclass"
        )
    return runner


def _import(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def load(model: str | None = None, backend: str | None = None, **options: Any) -> ModelRunner:
    """Build a runner for ``model`` on ``backend``.

    Settings resolve as explicit arguments > ``LLMRUN_*`` environment variables >
    the config file > defaults (backend ``local``, model ``EleutherAI/pythia-70m``),
    and every value is validated before the runner is built (see :mod:`llmrun.config`).
    ``generation`` (a :class:`~llmrun.GenerationConfig`) and ``template`` go to
    every runner; other options belong to the backend (e.g. ``device``, ``dtype``,
    ``threads`` for ``local``; ``api_key``, ``timeout`` for ``lamini``).
    """
    return build_runner(model, backend, options)


def build_runner(
    model: str | None,
    backend: str | None,
    options: dict[str, Any],
    argument_label: Callable[[str], str] | None = None,
) -> ModelRunner:
    """:func:`load`, with ``argument_label`` naming explicit options in errors (the CLI's flags)."""
    file_settings = read_config_file()
    backend_name, model_name = resolve_backend_and_model(backend, model, file_settings)

    def build() -> ModelRunner:
        runner_cls = get_backend(backend_name)
        rest = dict(options)
        common = {k: rest.pop(k) for k in ("generation", "template") if k in rest}
        resolved = resolve_options(
            runner_cls, backend_name, rest, file_settings, argument_label=argument_label
        )
        return runner_cls(model_name, **common, **resolved)

    # the one hook of llmrun.testing.override (and cassettes): tests may swap what is built
    return apply_overrides(RunnerSpec(backend_name, model_name, dict(options)), build)
