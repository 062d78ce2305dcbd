"""Bit-accuracy report of a quantized checkpoint on real inputs (Markdown + PNG plots).

:func:`build_report` compares, layer by layer and head by head, the integer
model of a quantized checkpoint (:mod:`inhibitron.quant.export`, the golden
model of :mod:`inhibitron.quant.golden`) with the float model it came from, on
real activations, and writes ``report.md``, ``report.json`` and PNG plots::

    <out>/report.md            the sections below, linking the plots
    <out>/report.json          every number of the report (machine-readable)
    <out>/ranges.png           value ranges vs formats (hls4ml-style)
    <out>/sweep.png            SQNR vs bit width, per layer
    <out>/errors_layer_XX.png  error histograms per head, in output LSBs

Sections
--------
1. **Core error** per layer and head: the integer attention core (float Q/K/V
   quantized, golden model, dequantized) against the float64 reference of
   Eq. 1-3 with the student's float gamma/eta/delta, over the valid query
   rows: max and mean absolute error (float units and output LSBs), SQNR.
2. **Block error** per layer: the integer self-attention block (integer
   Q/K/V/O projections + core) against the float block, both before the
   residual and LayerNorm.
3. **Saturation and overflow** per tensor: Q/K/V inputs clipped by their
   formats, output codes saturated, projection inputs (hidden states,
   context) clipped by their activation format; internal values (scores,
   row sums, accumulators) beyond their derived widths (must be 0).
4. **Value ranges vs formats**: the distribution of ``log2 |value|`` in units
   of each tensor's LSB against the range its format represents.
5. **Bit-width sweep**: SQNR of the core per layer for ``qk = v = out`` bits
   from the sweep (re-calibrated and re-folded at each width,
   :func:`inhibitron.quant.sqnr.sqnr_report`).
6. **RTL vs golden**: the mismatch count of a cosimulation (the JSON of
   ``inhibitron sim --json``), when given.

Inputs come from :func:`capture_report_inputs` (runs a float student on
sentences; needs torch) or any list of per-layer dicts of the same form.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .formats import AttentionFormats, IntFormat
from .golden import golden_from_float, valid_len_from_mask
from .sqnr import sqnr_db, sqnr_report

__all__ = ["ReportError", "build_report", "capture_report_inputs", "read_cosim_summary", "SECTIONS"]

#: Section titles of report.md, in order (tests check every one is present).
SECTIONS = (
    "Summary",
    "Core error per layer and head",
    "Attention block error per layer",
    "Saturation and overflow per tensor",
    "Value ranges vs formats",
    "Bit-width sweep",
    "RTL vs golden (cosimulation)",
    "Error histograms",
)


class ReportError(ValueError):
    """Inputs of the report are missing, inconsistent, or the output folder is taken."""


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def capture_report_inputs(student, sentences: Sequence[str] | None = None, tokenizer=None, *,
                          input_ids=None, attention_mask=None, max_length: int = 128) -> list[dict]:
    """Run a float inhibitor student on ``sentences`` (or token ids) and record what the report needs.

    Pass ``sentences`` and ``tokenizer``, or ``input_ids`` (B, n) and
    ``attention_mask`` (B, n) (right padding).

    Returns
    -------
    list (one per layer, bottom-up) of dicts of numpy float64 arrays:
    ``hidden`` (B, n, D) the self-attention input, ``q``/``k``/``v`` (B, H, n, d),
    ``h`` (B, H, n, d) the float core output, ``block`` (B, n, D) the float
    output projection (before residual and LayerNorm), ``mask`` (B, n) bool,
    and the float ``gamma``, ``eta``, ``delta`` (H,) of the layer.
    """
    import torch

    from inhibitron.model.capture import capture_qkv, tokenize
    from inhibitron.model.surgery import attention_modules, iter_inhibitors

    if input_ids is not None:
        ids, mask = input_ids, attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    else:
        if not sentences:
            raise ReportError("the report needs at least one input sentence")
        if tokenizer is None:
            raise ReportError("capture_report_inputs needs the tokenizer of the sentences")
        ids, mask = tokenize(tokenizer, list(sentences), max_length=max_length)
    mods = attention_modules(student)
    inhibs = [m for _, m in iter_inhibitors(student)]
    rec: list[dict] = [{} for _ in mods]
    handles = []
    for i, (parent, _, mod) in enumerate(mods):
        def pre(_m, args, kwargs, i=i):
            rec[i]["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach()

        def core(_m, _a, out, i=i):
            rec[i]["h"] = out.detach()

        def block(_m, _a, out, i=i):
            rec[i]["block"] = out.detach()

        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(inhibs[i].register_forward_hook(core))
        o_proj = mod.out_lin if hasattr(mod, "out_lin") else parent.output.dense
        handles.append(o_proj.register_forward_hook(block))
    try:
        layers = capture_qkv(student, ids, mask)
    finally:
        for h in handles:
            h.remove()
    out = []
    for i, (layer, r, inhib) in enumerate(zip(layers, rec, inhibs)):
        with torch.no_grad():
            params = {"gamma": inhib.gamma, "eta": inhib.eta, "delta": inhib.effective_delta()}
        d = {k: layer[k].double().cpu().numpy() for k in ("q", "k", "v")}
        d.update({k: r[k].double().cpu().numpy() for k in ("hidden", "h", "block")})
        d.update({k: v.detach().double().cpu().numpy() for k, v in params.items()})
        d["mask"] = mask.bool().cpu().numpy()
        d["mean_over"] = inhib.mean_over
        out.append(d)
    return out


def read_cosim_summary(path: str | os.PathLike) -> dict:
    """Read the JSON of ``inhibitron sim --json`` (a list of runs, ``{"runs": [...]}``, or one run).

    Returns
    -------
    dict with ``runs`` (name, elements compared, mismatches, passed, simulator),
    ``elements_compared`` and ``mismatches`` (totals).

    Raises
    ------
    ReportError
        Missing file, not JSON, or runs without ``mismatches``/``elements_compared``.
    """
    p = Path(path)
    if not p.is_file():
        raise ReportError(f"cosimulation summary {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"cosimulation summary {p} is not JSON: {exc}") from None
    runs = data.get("runs", data) if isinstance(data, dict) else data
    runs = [runs] if isinstance(runs, dict) else runs
    if not isinstance(runs, list) or not runs:
        raise ReportError(f"{p}: expected the JSON of 'inhibitron sim --json' (a list of runs)")
    clean = []
    for i, r in enumerate(runs):
        if not isinstance(r, dict) or "mismatches" not in r or "elements_compared" not in r:
            raise ReportError(f"{p}: run {i} has no 'mismatches'/'elements_compared' "
                              "(expected the JSON of 'inhibitron sim --json')")
        clean.append({"name": r.get("name", f"run {i}"), "elements_compared": int(r["elements_compared"] or 0),
                      "mismatches": None if r["mismatches"] is None else int(r["mismatches"]),
                      "passed": bool(r.get("passed", r["mismatches"] == 0)),
                      "simulator": r.get("simulator"), "first_mismatches": r.get("first_mismatches", [])[:5]})
    total = sum(r["mismatches"] for r in clean if r["mismatches"] is not None)
    failed = [r["name"] for r in clean if r["mismatches"] is None]
    return {"runs": clean, "elements_compared": sum(r["elements_compared"] for r in clean),
            "mismatches": total, "incomplete_runs": failed}


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """Per-layer arrays, checked."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    mask: np.ndarray
    length: np.ndarray
    gamma: np.ndarray
    eta: np.ndarray
    delta: np.ndarray
    hidden: np.ndarray | None
    block: np.ndarray | None
    mean_over: str


def _check_inputs(inputs, ckpt) -> list[_Layer]:
    if len(inputs) != len(ckpt.layers):
        raise ReportError(f"the checkpoint has {len(ckpt.layers)} layers, the inputs {len(inputs)}")
    out = []
    for i, (d, layer) in enumerate(zip(inputs, ckpt.layers)):
        lq = layer.attention
        for key in ("q", "k", "v", "mask"):
            if key not in d:
                raise ReportError(f"inputs of layer {i} lack {key!r}")
        q, k, v = (np.asarray(d[x], dtype=np.float64) for x in ("q", "k", "v"))
        if q.ndim != 4 or q.shape[1] != lq.num_heads or q.shape[-1] != lq.head_dim:
            raise ReportError(f"layer {i}: q has shape {q.shape}, the checkpoint's core needs "
                              f"(B, {lq.num_heads}, n, {lq.head_dim})")
        mask = np.asarray(d["mask"], dtype=bool)
        if q.shape[2] > layer.seq_len:
            raise ReportError(f"layer {i}: inputs have {q.shape[2]} tokens, the checkpoint's core "
                              f"is sized for n = {layer.seq_len}")
        try:
            length = valid_len_from_mask(mask)
        except ValueError as exc:
            raise ReportError(f"layer {i}: {exc}") from None
        params = {}
        for name in ("gamma", "eta", "delta"):
            params[name] = np.asarray(d[name], dtype=np.float64) if name in d else getattr(lq, name)
        out.append(_Layer(q, k, v, mask, length, params["gamma"], params["eta"], params["delta"],
                          None if d.get("hidden") is None else np.asarray(d["hidden"], dtype=np.float64),
                          None if d.get("block") is None else np.asarray(d["block"], dtype=np.float64),
                          d.get("mean_over", "valid")))
    return out


def _reference(L: _Layer) -> np.ndarray:
    from inhibitron.model.reference import inhibitor_attention

    return inhibitor_attention(L.q, L.k, L.v, L.gamma, L.eta, L.delta, mask=L.mask[:, None, :],
                               mean_over=L.mean_over)


def _count_clipped(x: np.ndarray, scale, fmt: IntFormat) -> int:
    r = np.rint(np.asarray(x, dtype=np.float64) / scale)
    return int(((r > fmt.qmax) | (r < fmt.qmin)).sum())


def _layer_measure(i: int, L: _Layer, layer) -> dict:
    lq = layer.attention
    fmt = lq.formats
    H = lq.num_heads
    ref = _reference(L)  # (B, H, n, d)
    est, trace = golden_from_float(L.q, L.k, L.v, L.length[:, None], lq, return_trace=True)
    rows = L.mask[:, None, :, None]  # valid query rows (B, 1, n, 1)
    lsb = np.abs(lq.s_h)  # (H,)
    heads = []
    errs = []
    for h in range(H):
        m = np.broadcast_to(rows[:, 0], ref[:, h].shape)
        e = (est[:, h] - ref[:, h])[m]
        r = ref[:, h][m]
        e_lsb = e / lsb[h]
        heads.append({
            "head": h,
            "max_abs": float(np.abs(e).max()), "mean_abs": float(np.abs(e).mean()),
            "rms": float(np.sqrt(np.mean(e**2))),
            "max_abs_lsb": float(np.abs(e_lsb).max()), "mean_abs_lsb": float(np.abs(e_lsb).mean()),
            "ref_max_abs": float(np.abs(r).max()),
            "sqnr_db": sqnr_db(r, r + e),
        })
        errs.append(e_lsb)
    allm = np.broadcast_to(rows, ref.shape)
    layer_sqnr = sqnr_db(ref[allm], est[allm])

    # Saturation / overflow per tensor (valid tokens and rows only).
    valid_tok = L.mask[:, None, :, None]  # (B, 1, n, 1)
    s_qk = lq.s_qk[None, :, None, None]
    s_v = lq.s_v[None, :, None, None]
    sat = {}
    for name, x, s, f in (("q", L.q, s_qk, fmt.q), ("k", L.k, s_qk, fmt.k), ("v", L.v, s_v, fmt.v)):
        xv = np.where(valid_tok, x, 0.0)
        per_head = [_count_clipped(xv[:, h], s[:, h], f) for h in range(H)]
        sat[name] = {"format": str(f), "count": int(sum(per_head)), "per_head": per_head,
                     "of": int(valid_tok.sum() * H * x.shape[-1])}
    r_sh = lq.out_shift[None, :, None, None]
    half = np.where(r_sh > 0, np.left_shift(np.ones_like(r_sh), np.maximum(r_sh - 1, 0)), 0)
    pre_sat = np.right_shift(trace.acc + half, r_sh)  # (B, H, n, d) before saturation
    out_clip = (pre_sat > fmt.out.qmax) | (pre_sat < fmt.out.qmin)
    out_clip = out_clip & valid_tok
    sat["h"] = {"format": str(fmt.out), "count": int(out_clip.sum()),
                "per_head": [int(out_clip[:, h].sum()) for h in range(H)],
                "of": int(valid_tok.sum() * H * L.v.shape[-1])}
    widths = lq.widths(layer.seq_len)
    kmask = L.mask[:, None, None, :]  # (B, 1, 1, n) valid keys
    overflow = {
        "z": int(((trace.z >= (1 << widths.z_bits)) & kmask).sum()),
        "row_sum": int((trace.row_sum >= (1 << widths.sum_bits)).sum()),
        "acc": int(((trace.acc >= (1 << (widths.acc_bits - 1))) | (trace.acc < -(1 << (widths.acc_bits - 1)))).sum()),
    }
    if L.hidden is not None:
        qlin = layer.projections["q"]
        act = IntFormat(qlin.act_bits)
        hv = L.hidden[L.mask]
        sat["hidden (projection input)"] = {"format": str(act), "count": _count_clipped(hv, qlin.input_scale, act),
                                            "per_head": None, "of": int(hv.size)}
        olin = layer.projections["o"]
        ctx = np.swapaxes(est, 1, 2)[L.mask]  # (tokens, H, d) dequantized core output
        act_o = IntFormat(olin.act_bits)
        sat["context (O input)"] = {"format": str(act_o), "count": _count_clipped(ctx, olin.input_scale, act_o),
                                    "per_head": None, "of": int(ctx.size)}

    # Ranges in units of each tensor's LSB (log2 |x / lsb| of non-zero values).
    ranges = {}

    def rng(name, vals, bits, signed=True):
        vals = np.abs(np.asarray(vals, dtype=np.float64))
        vals = vals[vals > 0]
        top = bits - 1 if signed else bits
        if vals.size == 0:
            ranges[name] = {"log2": np.zeros(0), "top": top}
            return
        ranges[name] = {"log2": np.log2(vals), "top": top}

    rng("q", (L.q / s_qk)[np.broadcast_to(valid_tok, L.q.shape)], fmt.qk_bits)
    rng("k", (L.k / s_qk)[np.broadcast_to(valid_tok, L.k.shape)], fmt.qk_bits)
    rng("v", (L.v / s_v)[np.broadcast_to(valid_tok, L.v.shape)], fmt.v_bits)
    vz = np.broadcast_to(kmask, trace.z.shape) & np.broadcast_to(L.mask[:, None, :, None], trace.z.shape)
    rng("z", trace.z[vz], widths.z_bits, signed=False)
    rng("acc", trace.acc[np.broadcast_to(valid_tok, trace.acc.shape)], widths.acc_bits)
    rng("h", pre_sat[np.broadcast_to(valid_tok, pre_sat.shape)], fmt.out_bits)

    block = None
    if L.hidden is not None and L.block is not None:
        got = layer.attention_block(L.hidden, L.mask)  # (B, n, D)
        m = L.mask[..., None]
        e = (got - L.block)[np.broadcast_to(m, got.shape)]
        r = L.block[np.broadcast_to(m, got.shape)]
        block = {"max_abs": float(np.abs(e).max()), "mean_abs": float(np.abs(e).mean()),
                 "ref_max_abs": float(np.abs(r).max()), "sqnr_db": sqnr_db(r, r + e)}
    return {"layer": i, "formats": fmt.to_dict(), "sqnr_db": layer_sqnr, "heads": heads,
            "saturation": sat, "overflow": overflow, "block": block,
            "_errs": errs, "_ranges": ranges}


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_histograms(res: dict, bins: np.ndarray, path: Path) -> None:
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


def _plot_ranges(results: list[dict], path: Path) -> None:
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


def _plot_sweep(sweep: dict, path: Path) -> None:
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


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


def _fmt_db(x: float) -> str:
    return "exact" if x == math.inf else f"{x:.1f}"


def build_report(
    checkpoint,
    inputs: Sequence[dict],
    out_dir: str | os.PathLike,
    *,
    cosim: str | os.PathLike | dict | None = None,
    sweep_bits: Sequence[int] = (4, 6, 8, 10, 12, 16),
    hist_range: float | None = None,
    title: str | None = None,
    input_description: str = "",
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write the bit-accuracy report of ``checkpoint`` on ``inputs`` to ``out_dir``.

    Parameters
    ----------
    checkpoint : path-like or QuantizedCheckpoint
        A quantized checkpoint (``inhibitron export``; verified on load).
    inputs : sequence of dict
        One per layer, from :func:`capture_report_inputs` (``q``, ``k``,
        ``v``, ``mask`` required; ``hidden``, ``block``, ``gamma``, ``eta``,
        ``delta`` optional: without the parameters the checkpoint's folded
        values are the float reference's, without ``hidden``/``block`` the
        block section is skipped).
    out_dir : path-like
        Created; an existing non-empty folder is refused unless ``force``.
    cosim : path-like or dict, optional
        The JSON of ``inhibitron sim --json`` (or its parsed
        :func:`read_cosim_summary`): the RTL-vs-golden mismatch count.
    sweep_bits : sequence of int
        Widths of the bit-width sweep.
    hist_range : float, optional
        Error histograms span ``[-hist_range, hist_range]`` output LSBs
        (default: the largest error, rounded up, at least 1).
    title, input_description : str
        Shown in the summary.
    force : bool
        Replace an existing report folder.
    progress : bool
        tqdm bar over layers.

    Returns
    -------
    Path of ``report.md``.

    Raises
    ------
    ReportError
        Output folder taken, inputs inconsistent with the checkpoint, bad cosim JSON.
    CheckpointError
        The checkpoint does not verify (:func:`inhibitron.quant.export.load_checkpoint`).
    """
    from tqdm.auto import tqdm

    from .export import QuantizedCheckpoint, load_checkpoint

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ReportError(f"report folder {str(out)!r} exists and is not empty; pass --force (force=True) "
                          "to replace it")
    ckpt = checkpoint if isinstance(checkpoint, QuantizedCheckpoint) else load_checkpoint(checkpoint)
    layers = _check_inputs(inputs, ckpt)
    cos = None
    if cosim is not None:
        cos = cosim if isinstance(cosim, dict) else read_cosim_summary(cosim)
    sweep_bits = [int(b) for b in sweep_bits]
    if any(b < 2 or b > 32 for b in sweep_bits):
        raise ReportError(f"sweep_bits must be widths in 2..32, got {sweep_bits}")

    if out.exists() and force:
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)
    results = [_layer_measure(i, L, layer) for i, (L, layer) in
               enumerate(tqdm(list(zip(layers, ckpt.layers)), desc="report", unit="layer", disable=not progress))]
    if hist_range is None:
        worst = max(h["max_abs_lsb"] for r in results for h in r["heads"])
        hist_range = float(min(64, max(1, math.ceil(worst))))
    bins = np.linspace(-hist_range, hist_range, 65)
    for res in results:
        _plot_histograms(res, bins, out / f"errors_layer_{res['layer']:02d}.png")
    _plot_ranges(results, out / "ranges.png")

    sweep = {"bits": sweep_bits, "sqnr_db": {}}
    if sweep_bits:
        rows = sqnr_report(
            [dict(q=L.q, k=L.k, v=L.v, mask=L.mask) for L in layers],
            [AttentionFormats(b, b, b) for b in sweep_bits],
            gamma=[L.gamma for L in layers], eta=[L.eta for L in layers], delta=[L.delta for L in layers],
        )
        for r in rows:
            sweep["sqnr_db"].setdefault(r.layer, []).append(r.sqnr_db)
        _plot_sweep(sweep, out / "sweep.png")

    record = {
        "checkpoint": str(ckpt.path) if ckpt.path is not None else None,
        "inputs": input_description,
        "sequences": int(layers[0].mask.shape[0]), "tokens": int(layers[0].mask.sum()),
        "layers": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
        "sweep": {"bits": sweep_bits, "sqnr_db": {str(k): v for k, v in sweep["sqnr_db"].items()}},
        "cosim": cos,
    }
    (out / "report.json").write_text(json.dumps(_finite(record), indent=1))
    path = out / "report.md"
    path.write_text(_markdown(record, results, sweep, cos, title, ckpt))
    return path


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else "-inf" if obj < 0 else "nan"
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _markdown(record, results, sweep, cos, title, ckpt) -> str:
    L = []
    L.append(f"# {title or 'Bit-accuracy report'}\n")
    L.append(f"## {SECTIONS[0]}\n")
    L.append(f"- checkpoint: `{record['checkpoint']}`")
    if record["inputs"]:
        L.append(f"- inputs: {record['inputs']}")
    L.append(f"- {record['sequences']} sequences, {record['tokens']} valid tokens, "
             f"{len(results)} layers x {len(results[0]['heads'])} heads")
    fm = {json.dumps(r["formats"], sort_keys=True) for r in results}
    L.append(f"- formats: {', '.join(sorted(fm))}")
    worst = min(results, key=lambda r: r["sqnr_db"])
    L.append(f"- core SQNR per layer (dB): {', '.join(_fmt_db(r['sqnr_db']) for r in results)}; "
             f"worst layer {worst['layer']}")
    total_sat = sum(s["count"] for r in results for s in r["saturation"].values())
    total_ovf = sum(v for r in results for v in r["overflow"].values())
    L.append(f"- saturated values: {total_sat}; internal overflows: {total_ovf}")
    if cos is not None:
        L.append(f"- RTL vs golden: **{cos['mismatches']} mismatches** in {cos['elements_compared']} "
                 f"compared elements")
    else:
        L.append("- RTL vs golden: not measured (pass the JSON of `inhibitron sim --json`)")
    L.append("")

    L.append(f"## {SECTIONS[1]}\n")
    L.append("Integer core (float Q/K/V quantized, golden model, dequantized) against the float64 "
             "reference of Eq. 1-3 with the float gamma/eta/delta, over valid query rows. "
             "LSB = the head's output LSB `|s_h|`.\n")
    L.append("| layer | head | max abs err | mean abs err | max err (LSB) | mean err (LSB) | max abs ref | SQNR (dB) |")
    L.append("|---|---|---|---|---|---|---|---|")
    for r in results:
        for h in r["heads"]:
            L.append(f"| {r['layer']} | {h['head']} | {h['max_abs']:.3g} | {h['mean_abs']:.3g} | "
                     f"{h['max_abs_lsb']:.2f} | {h['mean_abs_lsb']:.3f} | {h['ref_max_abs']:.3g} | "
                     f"{_fmt_db(h['sqnr_db'])} |")
    L.append("")

    L.append(f"## {SECTIONS[2]}\n")
    if all(r["block"] is None for r in results):
        L.append("Not measured: the inputs carry no hidden states / float block outputs.\n")
    else:
        L.append("Integer Q/K/V projections + core + integer O projection against the float block "
                 "(both before the residual and LayerNorm).\n")
        L.append("| layer | max abs err | mean abs err | max abs ref | SQNR (dB) |")
        L.append("|---|---|---|---|---|")
        for r in results:
            b = r["block"]
            if b is not None:
                L.append(f"| {r['layer']} | {b['max_abs']:.3g} | {b['mean_abs']:.3g} | {b['ref_max_abs']:.3g} | "
                         f"{_fmt_db(b['sqnr_db'])} |")
        L.append("")

    L.append(f"## {SECTIONS[3]}\n")
    L.append("Values clipped by their format (valid tokens only), and internal values beyond the "
             "widths derived in `quant.formats` (must be 0: the widths are exact bounds).\n")
    L.append("| layer | tensor | format | clipped | of | per head |")
    L.append("|---|---|---|---|---|---|")
    for r in results:
        for name, s in r["saturation"].items():
            ph = "" if s["per_head"] is None else ", ".join(str(x) for x in s["per_head"])
            L.append(f"| {r['layer']} | {name} | {s['format']} | {s['count']} | {s['of']} | {ph} |")
        for name, c in r["overflow"].items():
            L.append(f"| {r['layer']} | {name} (overflow) | derived width | {c} | | |")
    L.append("")

    L.append(f"## {SECTIONS[4]}\n")
    L.append("Distribution of `log2 |value / LSB|` of the non-zero values of each tensor against its "
             "format (grey): values left of 0 round to zero, right of the grey bar saturate.\n")
    L.append("![value ranges](ranges.png)\n")

    L.append(f"## {SECTIONS[5]}\n")
    if sweep["sqnr_db"]:
        L.append("SQNR of the integer core per layer with `qk_bits = v_bits = out_bits` = the width, "
                 "re-calibrated (min/max) and re-folded at each width.\n")
        L.append("![bit-width sweep](sweep.png)\n")
        L.append("| layer | " + " | ".join(f"{b} bits" for b in sweep["bits"]) + " |")
        L.append("|---|" + "---|" * len(sweep["bits"]))
        for layer, vals in sweep["sqnr_db"].items():
            L.append(f"| {layer} | " + " | ".join(_fmt_db(v) for v in vals) + " |")
    else:
        L.append("No sweep requested.")
    L.append("")

    L.append(f"## {SECTIONS[6]}\n")
    if cos is None:
        L.append("Not measured. Run `inhibitron sim --checkpoint ... --json > sim.json` and pass "
                 "`--cosim sim.json`.\n")
    else:
        L.append(f"**{cos['mismatches']} mismatches** in {cos['elements_compared']} output elements "
                 f"compared bit for bit.\n")
        L.append("| run | simulator | elements compared | mismatches | passed |")
        L.append("|---|---|---|---|---|")
        for r in cos["runs"]:
            L.append(f"| {r['name']} | {r['simulator'] or ''} | {r['elements_compared']} | {r['mismatches']} | "
                     f"{'yes' if r['passed'] else 'NO'} |")
        if cos.get("incomplete_runs"):
            L.append(f"\nIncomplete runs (no result): {', '.join(cos['incomplete_runs'])}")
        L.append("")

    L.append(f"## {SECTIONS[7]}\n")
    for r in results:
        L.append(f"![layer {r['layer']} errors](errors_layer_{r['layer']:02d}.png)\n")
    return "\n".join(L)
