"""Distance of the golden model from the float reference: error bound and SQNR.

Two measurements (``docs/numerics.md``, section "Error bound"):

(a) on *already-quantized* inputs: :func:`reference_lsb` runs the float64
    reference :func:`inhibitron.model.reference.inhibitor_attention` on the
    dequantized codes with the *folded* gamma/eta/delta of a
    :class:`~inhibitron.quant.formats.LayerQuant` and expresses its output in
    output LSBs, saturated to the output format; the golden model is within
    :func:`error_bound_lsb` of it, elementwise.
(b) end to end, float inputs: :func:`sqnr_report` calibrates and folds each
    captured layer, runs :func:`~inhibitron.quant.golden.golden_from_float`
    and compares with the float reference on the float inputs (signal to
    quantization-noise ratio in dB over the valid query rows).

numpy only (the float reference is numpy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from inhibitron.model.reference import inhibitor_attention
from .calibrate import MinMaxObserver, fold_layer, observe_layer
from .formats import AttentionFormats, LayerQuant
from .golden import golden_from_float, valid_len_from_mask

__all__ = [
    "SqnrRow",
    "error_bound_lsb",
    "format_sqnr_table",
    "reference_lsb",
    "sqnr_db",
    "sqnr_report",
]


def error_bound_lsb(valid_len, z_shift, out_shift, *, delta_rounding: bool = False) -> np.ndarray:
    """Worst-case ``|h_golden - clamp(H_ref / s_h)|`` in output LSBs.

    ``E(L) = 1/2 + floor(L/2) * 2**(b - r)``: half an LSB of output rounding,
    plus the mean rounding (``|m - S/L| <= floor(L/2)/L`` score LSBs, shared by
    the ``L`` valid keys of a row, each summand of Eq. 2 1-Lipschitz in
    ``zb``; one score LSB is ``2**(b - r)`` output LSBs). With
    ``delta_rounding`` (reference run with the *unrounded* delta), add the
    threshold rounding ``L/2 * 2**(b - r)``.

    >>> error_bound_lsb([1, 2, 3, 128], 0, 4).tolist()
    [0.5, 0.5625, 0.5625, 4.5]
    """
    L = np.asarray(valid_len, dtype=np.float64)
    lsb = np.exp2(np.asarray(z_shift, dtype=np.float64) - np.asarray(out_shift, dtype=np.float64))
    bound = 0.5 + np.floor(L / 2) * lsb
    if delta_rounding:
        bound = bound + L / 2 * lsb
    return bound


def _mask_from_len(valid_len, lead, n_k) -> np.ndarray:
    L = np.broadcast_to(np.asarray(valid_len), lead)
    return np.arange(n_k) < L[..., None]  # (..., n_k)


def reference_lsb(q, k, v, valid_len, layer_quant: LayerQuant, *, delta=None, saturate: bool = True):
    """Float reference on dequantized codes, in output LSBs (float64).

    Parameters
    ----------
    q, k, v : int array_like, shape (..., H, n, d)
        Codes (as fed to the golden model).
    valid_len : int array_like broadcastable to ``(..., H)``
    layer_quant : LayerQuant
        Supplies the scales and the folded ``gamma``, ``eta`` and
        ``delta = theta * s_z``.
    delta : (H,) array_like, optional
        Use this (unrounded) delta instead of the folded one.
    saturate : bool
        Clamp to the output format (the golden model saturates).

    Returns
    -------
    (..., H, n, d_v) float64: ``H_ref / s_h``.
    """
    lq = layer_quant
    s_qk = lq.s_qk[:, None, None]
    Q = np.asarray(q, dtype=np.float64) * s_qk
    K = np.asarray(k, dtype=np.float64) * s_qk
    V = np.asarray(v, dtype=np.float64) * lq.s_v[:, None, None]
    lead = np.broadcast_shapes(Q.shape[:-2], K.shape[:-2], V.shape[:-2])
    mask = _mask_from_len(valid_len, lead, K.shape[-2])
    h = inhibitor_attention(Q, K, V, lq.gamma, lq.eta, lq.delta if delta is None else delta, mask=mask)
    h = h / lq.s_h[:, None, None]
    if saturate:
        h = np.clip(h, lq.formats.out.qmin, lq.formats.out.qmax)
    return h


def sqnr_db(reference, estimate, mask=None) -> float:
    """``10 log10(sum ref**2 / sum (est - ref)**2)`` over ``mask`` (inf if exact)."""
    ref = np.asarray(reference, dtype=np.float64)
    err = np.asarray(estimate, dtype=np.float64) - ref
    if mask is not None:
        m = np.broadcast_to(mask, ref.shape)
        ref, err = ref[m], err[m]
    noise = float(np.sum(err**2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


@dataclass(frozen=True)
class SqnrRow:
    """One (layer, formats) entry of :func:`sqnr_report`.

    Members
    -------
    layer : int
    formats : AttentionFormats
    shifts : str
        The layer's shifts: ``"a=2 b=0 r=6"``, per-head values as ``r=5..7``.
    sqnr_db : float
        Over all heads and valid query rows of the layer.
    min_head_sqnr_db : float
        The worst head's SQNR.
    saturated : float
        Fraction of valid outputs at ``qmin``/``qmax`` of the output format.
    """

    layer: int
    formats: AttentionFormats
    shifts: str
    sqnr_db: float
    min_head_sqnr_db: float
    saturated: float


def _per_layer(value, num_layers: int, what: str) -> list:
    """A Python list gives one entry per layer; anything else applies to every layer."""
    if isinstance(value, list):
        if len(value) != num_layers:
            raise ValueError(f"{what}: a list must have one entry per layer ({num_layers}), got {len(value)}")
        return value
    return [value] * num_layers


def sqnr_report(
    layers: Sequence[dict],
    formats: Sequence[AttentionFormats] = (AttentionFormats(8, 8, 8), AttentionFormats(16, 16, 16)),
    *,
    gamma=1.0,
    eta=1.0,
    delta=-0.5,
    observer: str = "minmax",
    shared_shifts: bool | str = "ab",
    progress: bool = False,
) -> list[SqnrRow]:
    """End-to-end SQNR of the quantized golden model vs the float reference, per layer.

    For every captured layer and every format: observe Q, K, V and the float
    output per head on the same data (``observer``: ``"minmax"``,
    ``"percentile"`` or ``"mse"``), :func:`~inhibitron.quant.calibrate.fold_layer`,
    quantize the float inputs, run the golden model, dequantize, compare with
    the float reference on the float inputs over the valid query rows.

    Parameters
    ----------
    layers : sequence of dict
        ``{"q","k","v": (B, H, n, d) float, "mask": (B, n) bool prefix mask}``
        as returned by :func:`inhibitron.model.capture.capture_qkv` (torch
        tensors or numpy arrays).
    formats : sequence of AttentionFormats
    gamma, eta, delta : float, (H,) ndarray, or a Python list of those (one per layer)
        Inhibitor parameters; the defaults are the student's initialisation
        (thesis: gamma 1, eta 1, alpha 0.5 i.e. delta -0.5).
    observer : str
    shared_shifts : True, False or "ab"
        See :func:`~inhibitron.quant.calibrate.fold_layer`.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    list of :class:`SqnrRow`, layer-major.
    """
    rows = []
    n_layers = len(layers)
    gammas = _per_layer(gamma, n_layers, "gamma")
    etas = _per_layer(eta, n_layers, "eta")
    deltas = _per_layer(delta, n_layers, "delta")
    todo = [(i, f) for i in range(n_layers) for f in formats]
    if progress:
        from tqdm import tqdm

        todo = tqdm(todo, desc="sqnr", unit="layer-format")
    cache: dict[int, tuple] = {}
    for i, fmt in todo:
        layer = layers[i]
        if i not in cache:
            q, k, v = (np.asarray(layer[x].detach().cpu().numpy() if hasattr(layer[x], "detach")
                                  else layer[x], dtype=np.float64) for x in ("q", "k", "v"))
            mask = layer["mask"]
            mask = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask, dtype=bool)
            length = valid_len_from_mask(mask)  # (B,)
            ref = inhibitor_attention(q, k, v, gammas[i], etas[i], deltas[i], mask=mask[:, None, :])
            h_obs = MinMaxObserver(name=f"layer {i} h", head_axis=-3).update(ref, mask)
            cache = {i: (q, k, v, mask, length, ref, h_obs)}
        q, k, v, mask, length, ref, h_obs = cache[i]
        q_obs, k_obs, v_obs = observe_layer(dict(q=q, k=k, v=v, mask=mask), observer=observer, bits=fmt,
                                            name=f"layer {i}")
        lq = fold_layer(gammas[i], etas[i], deltas[i], q_obs, k_obs, v_obs, h_obs, fmt,
                        shared_shifts=shared_shifts, min_levels=0, name=f"layer {i}")
        est, trace = golden_from_float(q, k, v, length[:, None], lq, return_trace=True)
        rows_valid = mask[:, None, :, None]  # (B, 1, n, 1) valid query rows
        per_head = [sqnr_db(ref[:, h], est[:, h], mask[:, :, None]) for h in range(q.shape[1])]
        sat = (trace.h == fmt.out.qmin) | (trace.h == fmt.out.qmax)
        rows.append(SqnrRow(
            layer=i, formats=fmt, shifts=_shifts_str(lq),
            sqnr_db=sqnr_db(ref, est, rows_valid), min_head_sqnr_db=min(per_head),
            saturated=float(np.broadcast_to(rows_valid, sat.shape)[sat].sum() / np.broadcast_to(rows_valid, sat.shape).sum()),
        ))
    return rows


def _shifts_str(lq: LayerQuant) -> str:
    parts = []
    for name, arr in (("a", lq.v_shift), ("b", lq.z_shift), ("r", lq.out_shift)):
        lo, hi = int(arr.min()), int(arr.max())
        parts.append(f"{name}={lo}" if lo == hi else f"{name}={lo}..{hi}")
    return " ".join(parts)


def format_sqnr_table(rows: Sequence[SqnrRow]) -> str:
    """Markdown table: one line per layer, SQNR (all heads / worst head) per format."""
    fmts = list(dict.fromkeys(r.formats for r in rows))
    layers = sorted({r.layer for r in rows})
    head = "| layer | " + " | ".join(
        f"q{f.qk_bits}/v{f.v_bits}/o{f.out_bits}: SQNR dB (worst head) | shifts" for f in fmts) + " |"
    sep = "|---:|" + "---:|---|" * len(fmts)
    lines = [head, sep]
    by = {(r.layer, r.formats): r for r in rows}
    for layer in layers:
        cells = []
        for f in fmts:
            r = by.get((layer, f))
            cells += ["-", "-"] if r is None else [f"{r.sqnr_db:.1f} ({r.min_head_sqnr_db:.1f})", r.shifts]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - needs torch and the teacher
    """``python -m inhibitron.quant.sqnr``: the SQNR table of docs/numerics.md on the MiniLM teacher."""
    import argparse

    from inhibitron.model.capture import capture_qkv, tokenize
    from inhibitron.model.corpus import embedded_sentences
    from inhibitron.model.surgery import load_teacher

    parser = argparse.ArgumentParser(prog="python -m inhibitron.quant.sqnr", description=main.__doc__)
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--observer", default="minmax", choices=("minmax", "percentile", "mse"))
    parser.add_argument("--shared-shifts", default="ab", choices=("true", "ab", "false"))
    args = parser.parse_args(argv)
    model, tokenizer = load_teacher()
    ids, attention_mask = tokenize(tokenizer, embedded_sentences(args.sentences, seed=args.seed),
                                   max_length=args.max_tokens)
    layers = [{key: rec[key].double().numpy() if key != "mask" else rec[key].numpy() for key in rec}
              for rec in capture_qkv(model, ids, attention_mask)]
    shared = {"true": True, "ab": "ab", "false": False}[args.shared_shifts]
    rows = sqnr_report(layers, [AttentionFormats(b, b, b) for b in args.bits], observer=args.observer,
                       shared_shifts=shared, progress=True)
    print(f"all-MiniLM-L6-v2, {args.sentences} sentences (seed {args.seed}), {tuple(ids.shape)} tokens, "
          f"observer {args.observer}, shared_shifts={args.shared_shifts}, gamma=1 eta=1 delta=-0.5")
    print(format_sqnr_table(rows))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
