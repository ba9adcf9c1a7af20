"""How many CPU threads torch uses: the ``threads`` option, or a default that does not oversubscribe.

torch starts with one thread per physical core. On a machine that other
processes keep busy, those threads wait on each other at every operation, and a
call gets many times slower than with one thread (measured on a busy 2-core
machine: see the speed guide). The default therefore takes the cores that are
free now (the CPUs this process may use minus the 1-minute load average), never
more than torch's own default, and never fewer than one. ``OMP_NUM_THREADS``,
when set, is left to torch. The setting is process-wide, as torch's is.
"""

from __future__ import annotations

import logging
import os

import torch

from llmrun.errors import ConfigurationError

log = logging.getLogger("llmrun.local")


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_threads(current: int | None = None) -> int:
    """The free cores now, at most ``current`` (torch's count), at least 1."""
    current = current or torch.get_num_threads()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0.0
    free = max(1, round(usable_cpus() - busy))
    return max(1, min(current, free))


def check_threads(threads: object) -> int | None:
    """``threads`` if it is None or a positive integer, else :class:`ConfigurationError`."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigurationError(
            f"threads={threads!r} is invalid: use a positive integer (CPU threads for torch), "
            "or leave it unset for a default that does not oversubscribe a busy machine"
        )
    return threads


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count to ``threads`` or the default; return the count in force."""
    threads = check_threads(threads)
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()
        threads = default_threads()
    if threads != torch.get_num_threads():
        log.debug("torch threads: %d -> %d", torch.get_num_threads(), threads)
        torch.set_num_threads(threads)
    return threads
