"""The loss curve of a local training run, saved as a PNG next to it."""

from __future__ import annotations

import logging
from pathlib import Path

from llmrun.backends.local.training_loop import Progress

log = logging.getLogger("llmrun.training")


def plot_losses(state: Progress, dest: Path) -> None:
    """Save the loss curve as a PNG (matplotlib's Agg canvas; no global backend change)."""
    if not state.losses:
        return
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is part of the local extra
        log.warning("matplotlib is not installed: no loss curve saved")
        return
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps, values = zip(*state.losses, strict=True)
    ax.plot(steps, values, label="train loss", linewidth=1)
    if state.eval_losses:
        e_steps, e_values = zip(*state.eval_losses, strict=True)
        ax.plot(e_steps, e_values, "o-", label="held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per completion token")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = dest.with_name(f".tmp-{dest.name}")
    fig.savefig(str(tmp), format="png")
    tmp.replace(dest)
