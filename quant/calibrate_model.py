"""Calibration of a whole PyTorch student on real inputs, in one forward pass.

:func:`calibrate_student` records, per layer, what the quantized checkpoint
needs (Q/K/V of the attention core, its float output H, the hidden states
entering Q/K/V and the context entering O), folds each layer into a
:class:`~inhibitron.quant.formats.LayerQuant` with the observers and
:func:`~inhibitron.quant.calibrate.fold_layer` of :mod:`inhibitron.quant.calibrate`
(one layer's arrays in, one record out), picks the activation scales of the
projections and measures the SQNR of the golden model against the float core.

Imports torch (through the model package) when called.
"""

from __future__ import annotations

import numpy as np

from .calibrate import MinMaxObserver, fold_layer, observe_layer
from .formats import AttentionFormats, IntFormat
from .golden import golden_from_float, valid_len_from_mask
from .sqnr import sqnr_db

__all__ = ["calibrate_student"]


def calibrate_student(
    model,
    input_ids,
    attention_mask,
    *,
    formats=None,
    seq_len: int = 128,
    act_bits: int = 8,
    observer: str = "minmax",
    shared_shifts: bool | str = "ab",
    progress: bool = False,
) -> dict:
    """Calibrate every layer of a student on real inputs (one forward pass).

    Records, per layer, the Q/K/V of the attention core, its float output H,
    the hidden states entering Q/K/V and the context entering O (valid tokens
    only); folds each layer with :func:`inhibitron.quant.calibrate.fold_layer`
    (a :class:`~inhibitron.quant.qat.QATInhibitorAttention` keeps its own
    record: what it trained with is what is exported); measures the SQNR of
    the golden model against the float H.

    Parameters
    ----------
    model : student (``to_inhibitor``), possibly with QAT layers
    input_ids : LongTensor (B, n)
    attention_mask : Tensor (B, n), 1 for real tokens (right padding)
    formats : AttentionFormats, default 8/8/8
    seq_len : int
        ``n`` of the core the records are sized for.
    act_bits : int
        Width of the projection input activations.
    observer : {"minmax", "percentile", "mse"}
        Range observer of Q, K, V.
    shared_shifts : "ab", True or False
        Shift policy of :func:`~inhibitron.quant.calibrate.fold_layer`: per-head
        ``r`` with ``a``/``b`` shared (default: one generated core serves the
        layer), one ``(a, b, r)`` per layer, or all per head.
    progress : bool
        Show a tqdm bar over layers.

    Returns
    -------
    dict with ``layer_quants``, ``input_scales``, ``context_scales`` (lists,
    one per layer) and ``sqnr_db`` (float per layer, golden vs float H).

    Raises
    ------
    FormatTooNarrowError
        A format is too narrow for the data (names it, suggests a width).
    """
    import torch
    from tqdm.auto import tqdm

    from inhibitron.model.capture import capture_qkv
    from inhibitron.model.surgery import attention_modules, iter_inhibitors

    from .qat import QATInhibitorAttention

    formats = AttentionFormats() if formats is None else formats
    if input_ids.shape[1] > seq_len:
        raise ValueError(f"calibration inputs have {input_ids.shape[1]} tokens, more than seq_len={seq_len}")
    act_qmax = IntFormat(act_bits).qmax
    inhibitors = [m for _, m in iter_inhibitors(model)]
    records: list[dict] = [{} for _ in inhibitors]
    handles = []
    for i, ((_, _, mod), inhib) in enumerate(zip(attention_modules(model), inhibitors)):
        def pre(_m, args, kwargs, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            records[i]["hidden"] = x.detach()

        def post(_m, _inp, out, i=i):
            records[i]["h"] = out.detach()

        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(inhib.register_forward_hook(post))
    try:
        captured = capture_qkv(model, input_ids, attention_mask)
    finally:
        for h in handles:
            h.remove()

    mask = attention_mask.bool()
    mask_np = mask.cpu().numpy()
    length = valid_len_from_mask(mask_np)[:, None]  # (B, 1)
    out = {"layer_quants": [], "input_scales": [], "context_scales": [], "sqnr_db": []}
    bar = tqdm(list(enumerate(zip(captured, inhibitors, records))), desc="calibrating", unit="layer",
               disable=not progress)
    for i, (layer, inhib, rec) in bar:
        name = f"layer {i}"
        if isinstance(inhib, QATInhibitorAttention):
            lq = inhib.current_layer_quant()
        else:
            q_obs, k_obs, v_obs = observe_layer(layer, observer=observer, bits=formats, name=name)
            h_obs = MinMaxObserver(name=f"{name} h", head_axis=-3).update(rec["h"], mask)
            with torch.no_grad():
                lq = fold_layer(inhib.gamma, inhib.eta, inhib.effective_delta(), q_obs, k_obs, v_obs, h_obs,
                                formats, head_dim=inhib.head_dim, seq_len=seq_len,
                                shared_shifts=shared_shifts, name=name)
        hid = rec["hidden"].double().cpu().numpy()[mask_np]  # (tokens, hidden)
        hq = rec["h"].double().cpu().numpy()  # (B, H, n, d)
        ctx = np.swapaxes(hq, 1, 2)[mask_np]  # (tokens, H, d)
        for what, arr in (("hidden states", hid), ("context", ctx)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: the {what} contain NaN or Inf; the model's weights are broken")
        s_in = float(np.abs(hid).max()) / act_qmax or 1.0
        s_ctx = float(np.abs(ctx).max()) / act_qmax or 1.0
        gold = golden_from_float(layer["q"], layer["k"], layer["v"], length, lq,
                                 length_norm=inhib.length_norm)  # (B, H, n, d)
        qmask = mask_np[:, None, :, None]
        sq = sqnr_db(np.where(qmask, hq, 0.0), np.where(qmask, gold, 0.0))
        out["layer_quants"].append(lq)
        out["input_scales"].append(s_in)
        out["context_scales"].append(s_ctx)
        out["sqnr_db"].append(sq)
    return out
