"""The bit-accuracy report's PNG plots (matplotlib, Agg backend).

* :func:`plot_histograms` -- error histograms of the core per head, in output LSBs;
* :func:`plot_ranges` -- value ranges of every tensor vs its format (hls4ml-style);
* :func:`plot_sweep` -- SQNR of the core vs bit width, per layer.

They draw what :mod:`inhibitron.quant.report_tables` computed; matplotlib
is imported when a plot is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["plot_histograms", "plot_ranges", "plot_sweep"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_histograms(res: dict, bins: np.ndarray, path: Path) -> None:
    """Error histograms of one layer's heads (``res`` of ``measure_layer``), clipped to ``bins``."""
    plt = _plt()
    H = len(res["_errs"])
    cols = min(4, H)
    rows = math.ceil(H / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.2 * rows), dpi=100, squeeze=False)
    centers = 0.5 * (bins[1:] + bins[:-1])
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h >= H:
            ax.axis("off")
            continue
        counts = np.histogram(np.clip(res["_errs"][h], bins[0], bins[-1]), bins=bins)[0]
        ax.bar(centers, counts, width=bins[1] - bins[0], color="tab:blue")
        hd = res["heads"][h]
        ax.set_title(f"head {h}: SQNR {hd['sqnr_db']:.1f} dB", fontsize=8)
        ax.set_yscale("symlog")
        ax.tick_params(labelsize=7)
    fig.suptitle(f"layer {res['layer']}: integer - float error of the core, in output LSBs "
                 f"(clipped to [{bins[0]:g}, {bins[-1]:g}])", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_ranges(results: list[dict], path: Path) -> None:
    """Box plot of ``log2 |value / LSB|`` per layer and tensor against the format's range."""
    plt = _plt()
    labels, data, tops = [], [], []
    for res in results:
        for name, r in res["_ranges"].items():
            labels.append(f"L{res['layer']} {name}")
            vals = r["log2"]
            if vals.size > 20000:
                vals = np.sort(vals)[:: max(1, vals.size // 20000)]
            data.append(vals if vals.size else np.array([np.nan]))
            tops.append(r["top"])
    n = len(labels)
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * n + 1.2), dpi=100)
    for y, top in enumerate(tops):
        ax.add_patch(plt.Rectangle((0, y + 0.6), top, 0.8, color="0.85", zorder=0))
    ax.boxplot(data, orientation="horizontal", positions=np.arange(1, n + 1), widths=0.6, whis=(0, 100),
               showfliers=False, manage_ticks=False)
    ax.set_yticks(np.arange(1, n + 1))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("log2 |value / LSB|   (grey: range of the format, LSB .. max code)")
    ax.set_title("value ranges vs formats (whiskers: min..max of non-zero values)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_sweep(sweep: dict, path: Path) -> None:
    """SQNR of the core vs bit width, one line per layer (``bit_width_sweep``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    bits = sweep["bits"]
    for layer, vals in sweep["sqnr_db"].items():
        ax.plot(bits, [v if math.isfinite(v) else np.nan for v in vals], marker="o", label=f"layer {layer}")
    ax.set_xlabel("bits (qk = v = out)")
    ax.set_ylabel("SQNR of the core (dB)")
    ax.set_title("bit-width sweep (re-calibrated at each width)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
