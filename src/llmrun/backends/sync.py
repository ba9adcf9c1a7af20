"""Running an HTTP backend's coroutines from synchronous code, with a Ctrl-C that always lands."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make()`` to completion from synchronous code.

    Outside an event loop it runs on a fresh one in this thread; a Ctrl-C raises
    KeyboardInterrupt here at once, abandoning the call. Inside a running loop (a notebook) it
    runs on a helper thread's own loop while this thread waits.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with _ctrl_c_raises_at_once():
            return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


@contextlib.contextmanager
def _ctrl_c_raises_at_once() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt where the main thread is, as outside asyncio.

    ``asyncio.run`` otherwise turns the first Ctrl-C into a cancellation of its task, and a
    cancellation that lands while ``asyncio.wait_for`` is finishing can be swallowed (the call then
    returns normally and the Ctrl-C is lost: a tuning job's polling went on forever). With a
    handler of our own in place, ``asyncio.run`` leaves SIGINT alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        yield  # someone else handles Ctrl-C here (or it is ignored): leave it to them
        return
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
