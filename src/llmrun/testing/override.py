"""``override``: swap the runners that ``llmrun.load``, ``BasicModelRunner`` and ``LLMEngine`` build.

Application code builds its runners itself (``llmrun.load("m", backend="lamini")``,
``LLMEngine(id=...)``); a test replaces them for the duration of a ``with`` block::

    fake = FakeRunner(responses=["Paris"])
    with override(fake):
        assert my_app.capital_of("France") == "Paris"   # my_app calls llmrun.load(...)
    assert fake.last_request is not None

The target is a runner instance (returned by every build), a ``ModelRunner``
subclass (built with the requested model name) or a factory called with a
:class:`RunnerSpec`. A factory may call :meth:`RunnerSpec.build` to get what
would have been built without it (the real runner, or the next outer
override's), which is how a cassette wraps a runner. ``backend="lamini"``
limits an override to builds of that backend.

Overrides nest (the innermost one that matches wins), are process-wide (a
runner built in another thread is swapped too), and each is removed when its
block ends, whatever the order. It hooks one place, the registry's build path,
which ``load`` and the 2023 facades go through; a runner class instantiated
directly is not swapped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import ContextDecorator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from llmrun.errors import InvalidInputError
from llmrun.runner import ModelRunner

__all__ = ["RunnerSpec", "apply_overrides", "override"]


@dataclass(frozen=True)
class RunnerSpec:
    """What application code asked the registry to build.

    ``backend`` and ``model`` are resolved (argument > env > config file >
    default); ``options`` are the keyword options as passed, unresolved.
    """

    backend: str
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    _build: Callable[[], ModelRunner] | None = field(default=None, repr=False, compare=False)

    def build(self) -> ModelRunner:
        """Build what would be built without the current override."""
        if self._build is None:
            raise InvalidInputError(f"{self!r} has no builder; only specs from the registry can build")
        return self._build()


Factory = Callable[[RunnerSpec], ModelRunner]


@dataclass(frozen=True, eq=False)
class _Layer:
    factory: Factory
    backend: str | None


_lock = threading.Lock()
_layers: list[_Layer] = []


def apply_overrides(spec: RunnerSpec, build: Callable[[], ModelRunner]) -> ModelRunner:
    """Build ``spec`` through the active overrides; ``build`` makes the real runner.

    The registry's one hook: every ``llmrun.load`` (and so every facade) ends here.
    """
    with _lock:
        layers = tuple(_layers)
    return _resolve(spec, build, layers)


def _resolve(spec: RunnerSpec, build: Callable[[], ModelRunner], layers: tuple[_Layer, ...]) -> ModelRunner:
    while layers and layers[-1].backend not in (None, spec.backend):
        layers = layers[:-1]
    if not layers:
        return build()
    layer, outer = layers[-1], layers[:-1]
    runner = layer.factory(
        RunnerSpec(spec.backend, spec.model, spec.options, lambda: _resolve(spec, build, outer))
    )
    if not isinstance(runner, ModelRunner):
        raise InvalidInputError(
            f"the override factory {layer.factory!r} returned a {type(runner).__name__}, "
            "not a llmrun ModelRunner"
        )
    return runner


class override(ContextDecorator):  # noqa: N801 - used like a function: `with override(...)`
    """Make the registry build ``target`` instead of the requested runner, within a block or a test.

    Usable as a context manager or a decorator; the same object can be entered again
    after it is left, but not twice at once.
    """

    def __init__(
        self, target: ModelRunner | type[ModelRunner] | Factory, *, backend: str | None = None
    ) -> None:
        if backend is not None and (not isinstance(backend, str) or not backend):
            raise InvalidInputError(
                f"backend must be a backend name such as 'lamini', or None; got {backend!r}"
            )
        self._layer = _Layer(_factory(target), backend)
        self._active = False

    def __enter__(self) -> override:
        with _lock:
            if self._active:
                raise InvalidInputError("this override is already active; build a new override(...) to nest")
            _layers.append(self._layer)
            self._active = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with _lock:
            if self._active:
                _layers[:] = [layer for layer in _layers if layer is not self._layer]
                self._active = False


def _factory(target: object) -> Factory:
    if isinstance(target, ModelRunner):
        runner = target
        return lambda spec: runner
    if isinstance(target, type) and issubclass(target, ModelRunner):
        runner_cls = target
        return lambda spec: runner_cls(spec.model)
    if callable(target):
        return target
    raise InvalidInputError(
        f"override() takes a ModelRunner instance, a ModelRunner subclass or a factory "
        f"(spec -> ModelRunner); got {type(target).__name__}"
    )
