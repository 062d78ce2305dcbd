"""Quantization-aware training: a fake-quantized ``InhibitorAttention``.

:class:`QATInhibitorAttention` computes, in float64 on integer-valued
tensors, exactly the integer contract of ``docs/numerics.md`` (steps 1-6, as
:func:`inhibitron.quant.golden.inhibitor_attention_int`) and dequantizes the
result, so that **in evaluation its output equals**
``golden_from_float(q, k, v, L, layer_quant)`` **bit for bit** (tested in
float64): a model trained with it loses nothing when exported. Every
intermediate is an integer below ``2**53`` (checked), so float64 holds it
exactly; rounding, flooring and clamping steps use straight-through
estimators (STE) for the gradient::

    q  = clamp(rint(Q / s_qk))            STE, zero gradient where saturated   (B, H, n, d)
    z  = cdist_L1(q, k)                   exact                                (B, H, n, n)
    m  = floor((2 S + L) / (2 L))         forward exact (int64), backward S / L (B, H, n, 1)
    zb = relu(z - m - theta)              exact
    c  = relu(x - y) + min(x + y, 0),  x = v * 2**a, y = zb * 2**b   (soft-threshold, y >= 0)
    h  = clamp(floor((sum_j c + 2**(r-1)) / 2**r))   STE                       (B, H, n, d_v)
         (length_norm="pow2": r = r_h + round(log2 L) per sequence)
    H  = s_h * h

Two ways to hold the quantization constants:

``frozen=True``
    The constants are those of :attr:`QATInhibitorAttention.layer_quant`
    (e.g. from calibration or a loaded checkpoint); gradients reach q, k, v
    (the projections) only.
``frozen=False`` (learnable, the default for training)
    The *grid* of ``layer_quant`` is kept (score LSB ``s_z``, ``s_v``, the
    shifts ``a, b, r``, the formats) and the module's own ``gamma``, ``eta``,
    ``delta`` are folded into it at every step, with gradients::

        s_qk  = s_z * sqrt(d) / gamma            (gamma/sqrt(d) folded into the Q/K scale)
        theta = clamp(rint(delta / s_z))         (STE)
        s_h   = eta * s_w * 2**r                 (eta folded into the output scale)

    These are the expressions of :func:`inhibitron.quant.calibrate.fold_layer`,
    so right after ``from_float(module, fold_layer(module's parameters, ...))``
    :meth:`QATInhibitorAttention.current_layer_quant` equals the folded record
    (tested); :meth:`QATInhibitorAttention.freeze` stores it for export.

Masks: the integer core supports key-padding masks only; the valid length
``L`` of each batch item is derived from ``key_mask`` (a clear error if a row
is not a prefix). The thesis variant averages over all keys, which the
integer contract cannot express with padding: it is accepted without padding
only.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from inhibitron.model.attention import InhibitorAttention, length_exponent, length_exponents

from .formats import HeadQuant, LayerQuant

__all__ = [
    "QATInhibitorAttention",
    "valid_lengths",
    "to_qat",
    "qat_layer_quants",
]

#: Largest integer every intermediate must stay below for float64 to be exact.
FLOAT64_EXACT_BITS = 53


class _StraightThrough(torch.autograd.Function):
    """Forward: the exact value; backward: the gradient of a surrogate.

    ``apply(surrogate, exact)`` returns ``exact`` (bit for bit) and sends the
    incoming gradient to ``surrogate`` unchanged.
    """

    @staticmethod
    def forward(ctx, surrogate, exact):
        return exact.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _ste(surrogate: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    return _StraightThrough.apply(surrogate, exact.detach())


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """``rint(x)`` (half to even, as numpy) with identity gradient."""
    return _ste(x, torch.round(x.detach()))


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` with identity gradient."""
    return _ste(x, torch.floor(x.detach()))


def valid_lengths(key_mask: torch.Tensor | None, batch: int, n_k: int, device=None) -> torch.Tensor:
    """Valid lengths ``L`` (int64, shape (B,)) of a key-padding mask.

    Parameters
    ----------
    key_mask : bool Tensor (B, n_k) or None
        True marks a valid key; each row must be a prefix (True... then
        False...). ``None`` means every key is valid.
    batch, n_k : int
        Expected shape.

    Raises
    ------
    ValueError
        Wrong shape, a row that is not a prefix (naming the batch item), or a
        row without a valid key.
    """
    if key_mask is None:
        return torch.full((batch,), n_k, dtype=torch.int64, device=device)
    if tuple(key_mask.shape) != (batch, n_k):
        raise ValueError(f"key_mask must be shaped (B, n_k) = {(batch, n_k)}, got {tuple(key_mask.shape)}")
    m = key_mask.bool()
    length = m.sum(dim=-1)  # (B,)
    prefix = torch.arange(n_k, device=m.device)[None, :] < length[:, None]
    bad = (prefix != m).any(dim=-1)
    if bool(bad.any()):
        b = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"key_mask row {b} is not a prefix mask (valid keys first, padding last): "
            "the integer core and its QAT model support key-padding masks only"
        )
    if bool((length == 0).any()):
        b = int(torch.nonzero(length == 0)[0, 0])
        raise ValueError(f"key_mask has no valid key for batch item {b}")
    return length.to(torch.int64)


class QATInhibitorAttention(InhibitorAttention):
    """Fake-quantized inhibitor attention whose eval output is the golden model's.

    A subclass of :class:`~inhibitron.model.attention.InhibitorAttention` with
    the same parameters (``gamma``, ``eta``, ``delta`` or ``alpha``, shape
    (H,)) and the same call signature, so it drops into a surgered model in
    place of the float module (:func:`to_qat`). Build it with
    :meth:`from_float`.

    Parameters
    ----------
    num_heads, head_dim : int
        Must match ``layer_quant``.
    layer_quant : LayerQuant
        The quantization record (formats, per-head scales, shifts, thresholds).
    frozen : bool
        Use ``layer_quant``'s constants as they are (True) or fold the
        module's current ``gamma``/``eta``/``delta`` into its grid at every
        step (False); see the module docstring.
    seq_len : int
        Longest sequence the module will see; every intermediate of that size
        must be exact in float64 (checked, with :meth:`LayerQuant.widths`).
    dropout, variant, gamma_init, eta_init, delta_init, alpha_init, length_norm
        As :class:`~inhibitron.model.attention.InhibitorAttention`. Dropout
        (training only) drops (query, key) pairs as the float module does.
        ``length_norm="pow2"`` adds ``e(L) = round(log2 L)`` to the output
        shift of each sequence (step 6: ``r = r_h + e(L)``), the integer form
        of the float factor ``2**-e(L)``, as ``golden_from_float(...,
        length_norm="pow2")``.

    Members
    -------
    layer_quant : LayerQuant
        The frozen record (the grid, and the constants when ``frozen``).
    frozen : bool

    Raises
    ------
    ValueError
        ``layer_quant`` disagrees with ``num_heads``/``head_dim``, or a
        datapath width for ``seq_len`` keys exceeds 53 bits (float64 would
        not be exact; use narrower formats or a shorter ``seq_len``).
    TypeError
        ``layer_quant`` is not a LayerQuant.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        layer_quant: LayerQuant,
        *,
        frozen: bool = False,
        seq_len: int = 512,
        dropout: float = 0.0,
        variant: str = "valid",
        gamma_init: float = 1.0,
        eta_init: float = 1.0,
        delta_init: float = -0.5,
        alpha_init: float = 0.5,
        length_norm: str = "none",
    ):
        super().__init__(
            num_heads, head_dim, dropout=dropout, variant=variant, gamma_init=gamma_init,
            eta_init=eta_init, delta_init=delta_init, alpha_init=alpha_init, length_norm=length_norm,
        )
        if not isinstance(frozen, bool):
            raise TypeError(f"frozen must be a bool, not {frozen!r}")
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, not {seq_len!r}")
        self.seq_len = seq_len
        self.frozen = frozen
        self._set_layer_quant(layer_quant)

    # -- construction -------------------------------------------------------

    @classmethod
    def from_float(
        cls, module: InhibitorAttention, layer_quant: LayerQuant, *, frozen: bool = False, seq_len: int = 512
    ) -> "QATInhibitorAttention":
        """A QAT twin of a float ``InhibitorAttention`` (parameters copied, same dtype/device).

        ``module`` is not modified. With ``layer_quant`` from
        :func:`~inhibitron.quant.calibrate.fold_layer` of the module's own
        parameters, :meth:`current_layer_quant` reproduces ``layer_quant``.
        """
        if not isinstance(module, InhibitorAttention):
            raise TypeError(f"module must be an InhibitorAttention, not {type(module).__name__}")
        qat = cls(
            module.num_heads, module.head_dim, layer_quant, frozen=frozen, seq_len=seq_len,
            dropout=module.dropout, variant=module.variant, length_norm=module.length_norm,
        )
        ref = next(module.parameters())
        qat.to(dtype=ref.dtype, device=ref.device)
        qat.load_state_dict(module.state_dict(), strict=True)
        qat.train(module.training)
        return qat

    def to_float(self) -> InhibitorAttention:
        """A plain float ``InhibitorAttention`` with this module's parameters."""
        out = InhibitorAttention(self.num_heads, self.head_dim, dropout=self.dropout, variant=self.variant,
                                 length_norm=self.length_norm)
        ref = next(self.parameters())
        out.to(dtype=ref.dtype, device=ref.device)
        out.load_state_dict(self.state_dict(), strict=True)
        out.train(self.training)
        return out

    def _set_layer_quant(self, lq: LayerQuant) -> None:
        if not isinstance(lq, LayerQuant):
            raise TypeError(f"layer_quant must be a LayerQuant, not {type(lq).__name__}")
        if lq.num_heads != self.num_heads or lq.head_dim != self.head_dim:
            raise ValueError(
                f"{lq.name}: layer_quant has {lq.num_heads} heads of dimension {lq.head_dim}, "
                f"the module has {self.num_heads} heads of dimension {self.head_dim}"
            )
        # with length normalisation the largest per-sequence shift is r_h + e(seq_len)
        extra = length_exponent(self.seq_len) if self.length_norm == "pow2" else 0
        widths = lq.widths(self.seq_len, extra_out_shift=extra)
        for field_name in ("sum_bits", "divider_bits", "acc_bits", "round_bits", "mix_bits"):
            bits = getattr(widths, field_name)
            if bits > FLOAT64_EXACT_BITS:
                raise ValueError(
                    f"{lq.name}: the datapath's {field_name} is {bits} bits for seq_len={self.seq_len}; "
                    f"QAT computes in float64, exact only up to {FLOAT64_EXACT_BITS} bits: use "
                    "narrower formats, smaller shifts or a shorter seq_len"
                )
        self.layer_quant = lq
        f64, i64 = torch.float64, torch.int64
        # Plain CPU tensors, not buffers: the student's state dict stays that of the float
        # model, and casting the module (.float(), .half()) never touches these float64
        # constants. forward() moves them to the input's device.
        self._consts = {
            name: torch.as_tensor(np.asarray(values), dtype=dtype)
            for name, values, dtype in (
                ("s_qk", lq.s_qk, f64), ("s_v", lq.s_v, f64), ("s_h", lq.s_h, f64),
                ("s_z", lq.s_z, f64), ("s_w", lq.s_w, f64), ("theta", lq.theta, f64),
                ("a", lq.v_shift, i64), ("b", lq.z_shift, i64), ("r", lq.out_shift, i64),
            )
        }
        self._theta_range = lq.formats.theta_range(self.head_dim)

    def _c(self, name: str, device) -> torch.Tensor:
        t = self._consts[name]
        return t if t.device == device else t.to(device)

    def extra_repr(self) -> str:
        f = self.layer_quant.formats
        return (
            super().extra_repr()
            + f", qk_bits={f.qk_bits}, v_bits={f.v_bits}, out_bits={f.out_bits}, frozen={self.frozen}"
        )

    # -- the constants ------------------------------------------------------

    def _constants(self, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(s_qk, theta, s_h)``, float64 (H,), with gradients when not frozen."""
        device = self.gamma.device if device is None else device
        if self.frozen:
            return self._c("s_qk", device), self._c("theta", device), self._c("s_h", device)
        f64 = torch.float64
        gamma = self.gamma.to(device=device, dtype=f64)
        if bool((gamma.detach() <= 0).any()):
            h = int(torch.nonzero(gamma.detach() <= 0)[0, 0])
            raise ValueError(
                f"{self.layer_quant.name} head {h}: gamma = {float(gamma.detach()[h])!r}; quantization needs "
                "gamma > 0 (gamma/sqrt(d) is folded into the positive Q/K scale)"
            )
        s_z = self._c("s_z", device)
        # The expressions of calibrate.fold_layer, in the same order (bit-identical).
        s_qk = s_z * math.sqrt(self.head_dim) / gamma
        lo, hi = self._theta_range
        theta = torch.clamp(_round_ste(self.effective_delta().to(device=device, dtype=f64) / s_z), lo, hi)
        s_h = self.eta.to(device=device, dtype=f64) * torch.ldexp(self._c("s_w", device),
                                                                   self._c("r", device).to(f64))
        return s_qk, theta, s_h

    def current_layer_quant(self) -> LayerQuant:
        """The LayerQuant this module computes with now (``layer_quant`` when frozen).

        When not frozen: the module's current ``gamma``, ``eta``, ``delta``
        folded into the grid; exporting it loses nothing.
        """
        if self.frozen:
            return self.layer_quant
        with torch.no_grad():
            s_qk, theta, s_h = (t.detach().cpu().numpy() for t in self._constants())
        lq = self.layer_quant
        heads = tuple(
            HeadQuant(s_qk=float(s_qk[h]), s_v=head.s_v, s_h=float(s_h[h]), theta=int(theta[h]),
                      v_shift=head.v_shift, z_shift=head.z_shift, out_shift=head.out_shift)
            for h, head in enumerate(lq.heads)
        )
        return LayerQuant(formats=lq.formats, head_dim=lq.head_dim, heads=heads, name=lq.name)

    def freeze(self) -> LayerQuant:
        """Fold the current parameters (:meth:`current_layer_quant`) and freeze; return the record."""
        lq = self.current_layer_quant()
        self._set_layer_quant(lq)
        self.frozen = True
        return lq

    def unfreeze(self) -> None:
        """Learn ``gamma``, ``eta``, ``delta`` again, on the grid of the frozen record."""
        self.frozen = False

    # -- forward ------------------------------------------------------------

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        *,
        check: bool = True,
    ) -> torch.Tensor:
        """Fake-quantized inhibitor attention.

        Parameters
        ----------
        q : Tensor (B, H, n_q, d)
        k : Tensor (B, H, n_k, d)
        v : Tensor (B, H, n_k, d_v), ``d_v = d``
        key_mask : bool Tensor (B, n_k), optional
            A prefix mask per batch item (True = valid key).
        check : bool
            Validate shapes and finiteness.

        Returns
        -------
        Tensor (B, H, n_q, d_v), dtype of ``v``: ``s_h * h``, with ``h`` the
        golden model's output codes (in eval, exactly; computed in float64).

        Raises
        ------
        ValueError
            Bad shapes or values (see the float module), a non-prefix mask,
            padding with the thesis variant, more keys than ``seq_len``.
        """
        if check:
            self._check_inputs(q, k, v, key_mask)
        B, H, n_q, d = q.shape
        n_k = k.shape[-2]
        if n_k > self.seq_len:
            raise ValueError(
                f"{n_k} keys exceed seq_len={self.seq_len} of this QAT module (its exactness was "
                "checked for seq_len keys); build it with a larger seq_len"
            )
        length = valid_lengths(key_mask, B, n_k, q.device)  # (B,)
        if self.variant == "thesis" and bool((length < n_k).any()):
            raise ValueError(
                "the thesis variant averages over all keys, padded ones included, which the integer "
                "contract (mean over the valid prefix) cannot express: quantize the 'valid' variant, "
                "or call without padding"
            )
        fmt = self.layer_quant.formats
        f64, dev = torch.float64, q.device
        s_qk, theta, s_h = self._constants(dev)
        hv = lambda t: t.view(1, H, 1, 1)  # noqa: E731  (H,) -> (1, H, 1, 1)
        a = hv(self._c("a", dev).to(f64))
        b = hv(self._c("b", dev).to(f64))
        r = hv(self._c("r", dev).to(f64))
        if self.length_norm == "pow2":
            # r = r_h + round(log2 L) per (sequence, head): golden.length_out_shift with r_ref = 0.
            r = r + length_exponents(length).to(f64).view(B, 1, 1, 1)  # (B, H, 1, 1)

        # Input codes: rint(X / s) saturated, as golden.quantize_inputs.
        qi = torch.clamp(_round_ste(q.to(f64) / hv(s_qk)), fmt.q.qmin, fmt.q.qmax)  # (B, H, n_q, d)
        ki = torch.clamp(_round_ste(k.to(f64) / hv(s_qk)), fmt.k.qmin, fmt.k.qmax)  # (B, H, n_k, d)
        vi = torch.clamp(_round_ste(v.to(f64) / hv(self._c("s_v", dev))), fmt.v.qmin, fmt.v.qmax)

        # 1. Manhattan scores (integer-valued; an L1 cdist sums |differences|, exact).
        z = torch.cdist(qi, ki, p=1)  # (B, H, n_q, n_k)
        valid = torch.arange(n_k, device=dev)[None, :] < length[:, None]  # (B, n_k)
        valid4 = valid[:, None, None, :]  # (B, 1, 1, n_k)
        zero = torch.zeros((), dtype=f64, device=dev)
        # 2. Masked row sum; mean rounded half up by an exact int64 division, STE S / L.
        row_sum = torch.where(valid4, z, zero).sum(-1, keepdim=True)  # (B, H, n_q, 1)
        L = length.view(B, 1, 1, 1)
        mean_exact = torch.div(2 * row_sum.detach().to(torch.int64) + L, 2 * L, rounding_mode="floor")
        mean = _ste(row_sum / L.to(f64), mean_exact.to(f64))  # (B, H, n_q, 1)
        # 3. Threshold.
        zb = torch.relu(z - (mean + hv(theta)))  # (B, H, n_q, n_k)
        # 4.-5. Mixing of x = v << a against y = zb << b. y is clipped to C = 2**(v_bits-1+a)
        # (value-identical: softthr(x, y) = 0 for y >= C >= |x|); padded and dropped keys get
        # y = C. The sum over keys uses, for y >= 0,
        #     softthr(x, y) = (x + |y - relu(x)| - |y - relu(-x)|) / 2
        # so it is two L1 cdist calls (memory O(n^2) per head); every term is an integer
        # and the bracket of each summand is even, so the halving is exact.
        clip = torch.exp2(a + (fmt.v_bits - 1))  # (1, H, 1, 1)
        y = torch.minimum(zb * torch.exp2(b), clip)  # (B, H, n_q, n_k)
        keep = valid4
        if self.training and self.dropout > 0.0:
            keep = keep & (torch.rand(zb.shape, device=dev) >= self.dropout)
        y = torch.where(keep, y, clip)
        x = vi * torch.exp2(a)  # (B, H, n_k, d_v)
        x_sum = x.sum(dim=-2, keepdim=True)  # (B, H, 1, d_v)
        pos_t = torch.relu(x).transpose(-1, -2)  # (B, H, d_v, n_k)
        neg_t = torch.relu(-x).transpose(-1, -2)
        acc = 0.5 * (x_sum + torch.cdist(y, pos_t, p=1) - torch.cdist(y, neg_t, p=1))  # (B, H, n_q, d_v)
        # 6. Round half up by 2**r, saturate.
        half = torch.where(r > 0, torch.exp2(r - 1), torch.zeros_like(r))
        hq = torch.clamp(_floor_ste((acc + half) / torch.exp2(r)), fmt.out.qmin, fmt.out.qmax)
        out = hq * hv(s_h)  # (B, H, n_q, d_v)
        if self.training and self.dropout > 0.0:
            out = out / (1.0 - self.dropout)
        return out.to(v.dtype)


def _self_attention_modules(model):
    from inhibitron.model.surgery import attention_modules

    mods = []
    for i, (_, _, mod) in enumerate(attention_modules(model)):
        if not isinstance(getattr(mod, "inhibitor", None), InhibitorAttention):
            raise TypeError(f"layer {i} has no inhibitor attention; convert the model with to_inhibitor()")
        mods.append(mod)
    return mods


def to_qat(
    model: nn.Module,
    layer_quants: Sequence[LayerQuant],
    *,
    frozen: bool = False,
    seq_len: int = 512,
    inplace: bool = False,
) -> nn.Module:
    """Swap the float ``InhibitorAttention`` of every layer of a student for its QAT twin.

    Parameters
    ----------
    model : a student from :func:`inhibitron.model.surgery.to_inhibitor`
        (its self-attention modules hold ``.inhibitor``).
    layer_quants : sequence of LayerQuant
        One per layer, bottom-up.
    frozen, seq_len
        See :class:`QATInhibitorAttention`.
    inplace : bool
        Modify ``model`` (True) or a deep copy (default).

    Returns
    -------
    The model with :class:`QATInhibitorAttention` modules; its state dict keys
    are unchanged (the QAT buffers are not persistent), so
    :func:`~inhibitron.model.surgery.save_student` still works.

    Raises
    ------
    ValueError
        The number of records differs from the number of layers.
    TypeError
        The model is not a converted student.
    """
    if not inplace:
        model = copy.deepcopy(model)
    mods = _self_attention_modules(model)
    layer_quants = list(layer_quants)
    if len(layer_quants) != len(mods):
        raise ValueError(f"the model has {len(mods)} layers, {len(layer_quants)} LayerQuant records were given")
    for mod, lq in zip(mods, layer_quants):
        old = mod.inhibitor
        if isinstance(old, QATInhibitorAttention):
            old = old.to_float()
        mod.inhibitor = QATInhibitorAttention.from_float(old, lq, frozen=frozen, seq_len=seq_len)
    return model


def qat_layer_quants(model: nn.Module, *, freeze: bool = False) -> list[LayerQuant]:
    """The current LayerQuant of every QAT layer of a model, bottom-up (``freeze`` them too)."""
    out = []
    for i, mod in enumerate(_self_attention_modules(model)):
        inhib = mod.inhibitor
        if not isinstance(inhib, QATInhibitorAttention):
            raise TypeError(f"layer {i} is not a QAT inhibitor attention; call to_qat() first")
        out.append(inhib.freeze() if freeze else inhib.current_layer_quant())
    return out
