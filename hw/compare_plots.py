"""The efficiency study's plots: resources, Fmax and energy per head of both cores, as PNGs.

:func:`write_plots` draws them from the rows of the sweep
(:func:`inhibitron.hw.compare.run_study`; LUT4 sites, flip-flops and DSPs
counted per core, Fmax in MHz) and from the operation counts of
:mod:`inhibitron.hw.opcount` (energy in nJ per head); it runs no tool.
"""

from __future__ import annotations

from pathlib import Path

from .compare import KINDS
from .opcount import baseline_ops, energy_pj, inhibitor_ops, summarize

__all__ = ["write_plots"]


def write_plots(rows, img_dir: Path, stem: str) -> list[str]:
    """Write ``<stem>_resources.png``, ``<stem>_fmax.png``, ``<stem>_energy.png`` into
    ``img_dir`` (created if needed); return their file names in that order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    files = []

    def save(fig, what: str) -> None:
        fig.tight_layout()
        f = img_dir / f"{stem}_{what}.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f.name)
    dims = sorted({r["d"] for r in rows})
    styles = {"inhibitor": ("tab:blue", "o"), "baseline": ("tab:red", "s")}

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for kind in KINDS:
        color, marker = styles[kind]
        for d, ls in zip(dims, ("-", "--", ":")):
            pts = sorted((r["size"], r) for r in rows
                         if r["kind"] == kind and r["d"] == d and r.get("fits"))
            if not pts:
                continue
            xs = [s * s for s, _ in pts]
            for ax, key in zip(axes, ("lut4_sites", "ff", "dsp")):
                ax.plot(xs, [r[key] for _, r in pts], ls, color=color, marker=marker,
                        label=f"{kind}, d={d}")
    for ax, title in zip(axes, ("LUT4 sites", "flip-flops", "DSP (MULT18X18D)")):
        ax.set_xlabel("PEs per array (size x size)")
        ax.set_title(title)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[2].axhline(156, color="gray", lw=0.8)
    axes[2].text(4, 160, "ECP5-85F: 156 DSPs", fontsize=8, color="gray")
    axes[0].legend(fontsize=8)
    save(fig, "resources")

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in KINDS:
        color, marker = styles[kind]
        for d, ls in zip(dims, ("-", "--", ":")):
            pts = sorted((r["size"], r["fmax_mhz"]) for r in rows
                         if r["kind"] == kind and r["d"] == d and r.get("fmax_mhz"))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, color=color, marker=marker,
                        label=f"{kind}, d={d}")
    ax.set_xlabel("array size (size x size)")
    ax.set_ylabel("achieved Fmax (MHz)")
    ax.set_title("Fmax on ECP5-85F, speed 6")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:      # no Fmax without place-and-route (--no-pnr)
        ax.legend(fontsize=8)
    save(fig, "fmax")

    # energy per head: independent of the array size; by sequence length and stage
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ns = [16, 32, 64, 128, 256, 512]
    for kind in KINDS:
        color, marker = styles[kind]
        for d, ls in zip(dims, ("-", "--", ":")):
            fn = inhibitor_ops if kind == "inhibitor" else baseline_ops
            axes[0].plot(ns, [energy_pj(fn(n=n, d=d)) / 1e3 for n in ns], ls, color=color,
                         marker=marker, label=f"{kind}, d={d}")
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("sequence length n")
    axes[0].set_ylabel("arithmetic energy per head (nJ)")
    axes[0].set_title("Energy per head (Horowitz 45 nm)")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    n0 = rows[0]["n"] if rows else 64
    stages = ["score", "rowstats", "softmax", "mix", "output"]
    x = 0
    labels = []
    labelled: set[str] = set()
    for d in dims:
        for kind in KINDS:
            fn = inhibitor_ops if kind == "inhibitor" else baseline_ops
            by = summarize(fn(n=n0, d=d))["by_stage"]
            bottom = 0.0
            for st, c in zip(stages, ("tab:blue", "tab:green", "tab:orange", "tab:purple",
                                      "tab:gray")):
                val = by.get(st, 0.0) / 1e3
                show = val > 0 and st not in labelled
                if show:
                    labelled.add(st)
                axes[1].bar(x, val, bottom=bottom, color=c, label=st if show else None)
                bottom += val
            labels.append(f"{kind[:4]}.\nd={d}")
            x += 1
    axes[1].set_xticks(range(len(labels)), labels, fontsize=8)
    axes[1].set_ylabel("nJ per head")
    axes[1].set_title(f"Energy by stage, n={n0}")
    axes[1].legend(fontsize=8)
    save(fig, "energy")
    return files

