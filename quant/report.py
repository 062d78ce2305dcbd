"""Bit-accuracy report of a quantized checkpoint on real inputs (Markdown + PNG plots).

:func:`build_report` compares, layer by layer and head by head, the integer
model of a quantized checkpoint (:mod:`inhibitron.quant.checkpoint`, the golden
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

This module gathers the inputs and writes the files; the numbers are
computed in :mod:`inhibitron.quant.report_tables`, drawn by
:mod:`inhibitron.quant.report_plots` and rendered by
:mod:`inhibitron.quant.report_markdown`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from inhibitron.model.reference import check_quantizable

from .atomic_folder import publish_folder, remove_empty_folders, temp_folder_beside
from .report_markdown import SECTIONS, render_markdown
from .report_plots import plot_histograms, plot_ranges, plot_sweep
from .report_tables import ReportError, bit_width_sweep, check_inputs, measure_layer

__all__ = ["ReportError", "build_report", "capture_report_inputs", "check_report_folder", "read_cosim_summary",
           "SECTIONS"]

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
# The report
# ---------------------------------------------------------------------------


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
        Created atomically (written in a temporary folder next to it, renamed
        at the end: an error or an interrupt leaves nothing behind); an
        existing non-empty folder is refused unless ``force``, and even then
        unless it holds an earlier report.
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
        Replace an existing report folder (only one this function wrote).
    progress : bool
        tqdm bar over layers.

    Returns
    -------
    Path of ``report.md``.

    Raises
    ------
    ReportError
        Output folder taken (or a foreign folder with ``force``), inputs
        inconsistent with the checkpoint, NaN/Inf in the inputs or the float
        parameters (naming layer and tensor), gamma <= 0 or eta = 0, bad cosim JSON.
    CheckpointError
        The checkpoint does not verify (:func:`inhibitron.quant.checkpoint.load_checkpoint`).
    """
    from .checkpoint import QuantizedCheckpoint, load_checkpoint

    out = Path(out_dir)
    check_report_folder(out, force=force)
    ckpt = checkpoint if isinstance(checkpoint, QuantizedCheckpoint) else load_checkpoint(checkpoint)
    layers = check_inputs(inputs, ckpt)
    check_finite_inputs(layers)
    cos = None
    if cosim is not None:
        cos = cosim if isinstance(cosim, dict) else read_cosim_summary(cosim)
    sweep_bits = [int(b) for b in sweep_bits]
    if any(b < 2 or b > 32 for b in sweep_bits):
        raise ReportError(f"sweep_bits must be widths in 2..32, got {sweep_bits}")

    # Everything is written to a temporary folder next to ``out`` and renamed into
    # place at the end: an error or an interrupt leaves neither a half-written
    # report nor the temporary folder (and an earlier report stays as it was).
    tmp, created = temp_folder_beside(out)
    try:
        path = _write_report(tmp, ckpt, layers, cos, sweep_bits, hist_range, title, input_description,
                             progress)
        publish_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty_folders(created)
        raise
    return out / path.name


#: Files by which a folder is recognised as a report this module wrote (what ``force`` may replace).
REPORT_MARKERS = ("report.md", "report.json")


def check_report_folder(out: Path, *, force: bool) -> None:
    """Raise ReportError unless ``out`` may be written: new, empty, or (with ``force``) an earlier report."""
    if not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir() or out.is_symlink():
        raise ReportError(f"report folder {str(out)!r} exists and is not a folder; refusing to replace it")
    if not any(out.iterdir()):
        return
    if not force:
        raise ReportError(f"report folder {str(out)!r} exists and is not empty; pass --force (force=True) "
                          "to replace it")
    if not any((out / m).is_file() for m in REPORT_MARKERS):
        raise ReportError(f"report folder {str(out)!r} does not hold an earlier report (no report.md or "
                          "report.json); refusing to replace it, choose another folder")


def check_finite_inputs(layers) -> None:
    """Raise ReportError naming the layer, tensor and index of the first NaN/Inf, and gamma <= 0 or eta = 0."""
    for i, L in enumerate(layers):
        for name in ("q", "k", "v", "hidden", "block", "gamma", "eta", "delta"):
            arr = getattr(L, name)
            if arr is None:
                continue
            bad = ~np.isfinite(arr)
            if bad.any():
                idx = tuple(int(j) for j in np.argwhere(bad)[0])
                raise ReportError(f"layer {i}: the float student's {name} contains NaN or Inf (first at index "
                                  f"{idx}); check the student's parameters")
        try:
            check_quantizable(L.gamma, L.eta, name=f"layer {i}")
        except ValueError as exc:
            raise ReportError(str(exc)) from None


def _write_report(out: Path, ckpt, layers, cos, sweep_bits, hist_range, title, input_description,
                  progress) -> Path:
    """Compute and write every file of the report into ``out`` (an existing empty folder)."""
    from tqdm.auto import tqdm

    results = [measure_layer(i, L, layer) for i, (L, layer) in
               enumerate(tqdm(list(zip(layers, ckpt.layers)), desc="report", unit="layer", disable=not progress))]
    if hist_range is None:
        worst = max(h["max_abs_lsb"] for r in results for h in r["heads"])
        hist_range = float(min(64, max(1, math.ceil(worst))))
    bins = np.linspace(-hist_range, hist_range, 65)
    for res in results:
        plot_histograms(res, bins, out / f"errors_layer_{res['layer']:02d}.png")
    plot_ranges(results, out / "ranges.png")

    sweep = bit_width_sweep(layers, sweep_bits)
    if sweep_bits:
        plot_sweep(sweep, out / "sweep.png")

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
    path.write_text(render_markdown(record, results, sweep, cos, title, ckpt))
    return path


def _finite(obj):
    """``obj`` with non-finite floats as strings (``report.json`` is strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else "-inf" if obj < 0 else "nan"
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
