"""The metric log of a training run: read ``metrics.jsonl``, plot ``losses.png``.

``metrics.jsonl`` has one JSON object per optimizer step, written by
:func:`inhibitron.model.training.train`: ``step`` (global, from 1),
``phase``, ``layer``, ``phase_step``, ``loss`` (of the global batch),
``lr``, ``epoch``, ``tokens``, ``grad_norm`` (when clipping) and one value
per loss term (e.g. ``context_mse``, ``kd``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["plot_losses", "read_metrics"]


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_losses(history: list[dict], path: str | os.PathLike, *, title: str = "") -> Path:
    """Plot the loss per optimizer step (log scale, one colour per phase) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    phases: dict[str, list[tuple[int, float]]] = {}
    for r in history:
        phases.setdefault(r["phase"], []).append((r["step"], r["loss"]))
    for name, pts in phases.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="." if len(xs) < 40 else None, label=name)
    if history and all(r["loss"] > 0 for r in history):
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (global batch)")
    ax.set_title(title or "distillation loss")
    ax.grid(True, alpha=0.3)
    if len(phases) > 1 or phases:
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
