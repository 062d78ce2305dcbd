"""Computation of the bit-accuracy report's tables (no plotting, no Markdown).

Per layer of a quantized checkpoint and its float inputs
(:func:`check_inputs`), :func:`measure_layer` computes: the core error per
head against the float64 reference of Eq. 1-3 (max/mean absolute error in
float units and output LSBs, SQNR), the error of the whole integer attention
block, saturation counts per tensor, internal overflows beyond the derived
widths, and the value ranges in LSBs; :func:`bit_width_sweep` the SQNR of the
core per layer over bit widths (:func:`inhibitron.quant.sqnr.sqnr_report`).
Every rounding and range test goes through :mod:`inhibitron.quant.rounding`,
so the counts are those of the datapath.

numpy only (the float reference is numpy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import rounding
from .formats import AttentionFormats, IntFormat
from .golden import golden_from_float, valid_len_from_mask
from .sqnr import sqnr_db, sqnr_report

__all__ = ["LayerInputs", "ReportError", "bit_width_sweep", "check_inputs", "measure_layer"]


class ReportError(ValueError):
    """Inputs of the report are missing, inconsistent, or the output folder is taken."""


@dataclass(frozen=True)
class LayerInputs:
    """Per-layer float inputs of the report, checked against the checkpoint (:func:`check_inputs`)."""

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


def check_inputs(inputs, ckpt) -> list[LayerInputs]:
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
        out.append(LayerInputs(q, k, v, mask, length, params["gamma"], params["eta"], params["delta"],
                          None if d.get("hidden") is None else np.asarray(d["hidden"], dtype=np.float64),
                          None if d.get("block") is None else np.asarray(d["block"], dtype=np.float64),
                          d.get("mean_over", "valid")))
    return out


def _reference(L: LayerInputs) -> np.ndarray:
    from inhibitron.model.reference import inhibitor_attention

    return inhibitor_attention(L.q, L.k, L.v, L.gamma, L.eta, L.delta, mask=L.mask[:, None, :],
                               mean_over=L.mean_over)


def _count_clipped(x: np.ndarray, scale, fmt: IntFormat) -> int:
    """How many values ``IntFormat.quantize(x, scale)`` saturates (rint, then out of range)."""
    r = rounding.round_half_even(np.asarray(x, dtype=np.float64) / scale)
    return int(rounding.out_of_range(r, fmt.bits, signed=fmt.signed).sum())


def measure_layer(i: int, L: LayerInputs, layer) -> dict:
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
    pre_sat = rounding.round_half_up_shift(trace.acc, lq.out_shift[None, :, None, None])  # (B, H, n, d) unsaturated
    out_clip = rounding.out_of_range(pre_sat, fmt.out_bits) & valid_tok
    sat["h"] = {"format": str(fmt.out), "count": int(out_clip.sum()),
                "per_head": [int(out_clip[:, h].sum()) for h in range(H)],
                "of": int(valid_tok.sum() * H * L.v.shape[-1])}
    widths = lq.widths(layer.seq_len)
    kmask = L.mask[:, None, None, :]  # (B, 1, 1, n) valid keys
    overflow = {  # z and S are unsigned, acc signed
        "z": int((rounding.out_of_range(trace.z, widths.z_bits, signed=False) & kmask).sum()),
        "row_sum": int(rounding.out_of_range(trace.row_sum, widths.sum_bits, signed=False).sum()),
        "acc": int(rounding.out_of_range(trace.acc, widths.acc_bits).sum()),
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


def bit_width_sweep(layers: Sequence[LayerInputs], sweep_bits: Sequence[int]) -> dict:
    """SQNR of the core per layer for ``qk = v = out`` bits in ``sweep_bits`` (re-calibrated at each width).

    Returns ``{"bits": [...], "sqnr_db": {layer: [dB per width]}}`` (empty
    ``sqnr_db`` when ``sweep_bits`` is empty).
    """
    sweep = {"bits": list(sweep_bits), "sqnr_db": {}}
    if sweep_bits:
        rows = sqnr_report(
            [dict(q=L.q, k=L.k, v=L.v, mask=L.mask) for L in layers],
            [AttentionFormats(b, b, b) for b in sweep_bits],
            gamma=[L.gamma for L in layers], eta=[L.eta for L in layers], delta=[L.delta for L in layers],
        )
        for r in rows:
            sweep["sqnr_db"].setdefault(r.layer, []).append(r.sqnr_db)
    return sweep
