"""``run_sync``: the Lamini backend's coroutines from synchronous code, and Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading

import pytest

from llmrun.backends.sync import run_sync


def _ctrl_c_in(seconds: float) -> threading.Timer:
    main = threading.main_thread()
    timer = threading.Timer(seconds, lambda: signal.pthread_kill(main.ident or 0, signal.SIGINT))
    timer.start()
    return timer


def test_returns_the_coroutines_result() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_sync(answer) == 42


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_is_not_lost_when_a_coroutine_swallows_its_cancellation() -> None:
    """asyncio.wait_for can swallow a cancellation in a race; the Ctrl-C must still reach the caller."""

    async def stubborn() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as in the race
            await asyncio.sleep(5)
        return "finished normally"

    timer = _ctrl_c_in(0.2)
    with pytest.raises(KeyboardInterrupt):
        run_sync(stubborn)
    timer.join()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back afterwards


def test_a_custom_ctrl_c_handler_is_left_alone() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:

        async def nap() -> str:
            await asyncio.sleep(0.4)
            return "done"

        timer = _ctrl_c_in(0.1)
        assert run_sync(nap) == "done"
        timer.join()
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_inside_a_running_loop_it_runs_on_a_helper_thread() -> None:
    async def in_a_notebook() -> int:
        async def inner() -> int:
            return threading.get_ident()

        return run_sync(inner)

    assert run_sync(in_a_notebook) != threading.get_ident()
