"""``InhibitorAttention``: the PyTorch module of inhibitor attention (Eq. 1-3).

It computes, per head h and with q, k, v shaped ``(B, H, n, d)``::

    Z  = gamma_h / sqrt(d) * cdist_L1(q, k)                       # (B, H, n_q, n_k)   Eq. 1
    Zb = relu(Z - mean_valid(Z) - delta_h)                        # (B, H, n_q, n_k)   Eq. 3
    H  = eta_h * sum_j softthreshold(v[j], Zb[:, j])              # (B, H, n_q, d_v)   Eq. 2

The sum of Eq. 2 uses the identity (for z >= 0)::

    relu(v+ - z) + min(v- + z, 0) = 0.5 * (v + |z - v+| - |z - |v-||)

so ``sum_j`` becomes two L1 ``cdist`` calls between the score rows and the
value columns: memory ``O(n^2)`` per head instead of ``O(n^2 d)``, which is
what makes distillation of a real model fit on a CPU. Padded keys (and keys
dropped by dropout) get a score ``M > max|v|``, which makes each of their
summands exactly zero.

Two variants:

``variant="valid"`` (default, this project's semantics)
    Learnable ``delta`` per head; the row mean runs over valid keys only.
``variant="thesis"``
    Reproduces the thesis code (tonytonfisk2/MSc2024, ``iMultiHeadSelfAttention``):
    learnable ``alpha`` per head with ``delta = -alpha`` applied only while
    ``alpha > 0``, and a row mean over *all* keys, padded ones included.

Length normalisation (``length_norm``, off by default). Eq. 2 **sums** over
the ``L`` valid keys of a sequence where softmax averages, so a head's output
grows with ``L``. ``length_norm="pow2"`` multiplies each sequence's output by
``2**-e(L)``, ``e(L) = round(log2 L)`` (:func:`length_exponent`): a power of
two, i.e. a right shift in the integer core::

    H = eta_h * 2**-e(L) * sum_j softthreshold(v[j], Zb[:, j])

``L`` counts the valid keys of ``key_mask`` (all ``n_k`` without a mask);
dropped keys (dropout) do not change it. Measured in ``docs/distillation.md``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .length_norm import LENGTH_NORMS, length_exponent, length_thresholds

__all__ = ["LENGTH_NORMS", "InhibitorAttention", "VARIANTS", "length_exponent", "length_exponents"]

#: Supported behaviours, see the module docstring.
VARIANTS = ("valid", "thesis")


def length_exponents(length: torch.Tensor) -> torch.Tensor:
    """:func:`length_exponent` of every element of an integer tensor of lengths (any shape), int64.

    Exact (integer comparisons against the thresholds, no floating-point log).
    """
    length = length.to(torch.int64)
    if bool((length < 1).any()):
        raise ValueError(f"lengths must be >= 1, got a minimum of {int(length.min())}")
    top = max(int(length.max()).bit_length(), 1)
    thresholds = torch.tensor(length_thresholds(top), dtype=torch.int64, device=length.device)  # (top,)
    return (length.unsqueeze(-1) >= thresholds).sum(-1)


def _check_positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


class InhibitorAttention(nn.Module):
    """Inhibitor attention over pre-projected, head-split q, k, v.

    Parameters
    ----------
    num_heads : int
        Number of heads H; each has its own gamma, eta and delta (or alpha).
    head_dim : int
        Head dimension d of q and k (the ``1/sqrt(d)`` of Eq. 1).
    dropout : float
        Probability, in training mode, that a (query, key) pair is dropped:
        the key is fully inhibited for that query and the output is rescaled
        by ``1 / (1 - dropout)``, as with attention-probability dropout.
    variant : {"valid", "thesis"}
        See the module docstring.
    gamma_init, eta_init : float
        Initial score scale gamma and output scale eta (thesis: 1.0, 1.0).
    delta_init : float
        Initial threshold shift delta (``variant="valid"``). The default -0.5
        equals the thesis initialisation ``alpha = 0.5``.
    alpha_init : float
        Initial alpha (``variant="thesis"``), default 0.5 as in the thesis.
    length_norm : {"none", "pow2"}
        Per-sequence output factor: none (the paper), or ``2**-round(log2 L)``
        with ``L`` the valid keys (see the module docstring).

    Members
    -------
    gamma, eta : nn.Parameter, shape (H,)
    delta : nn.Parameter, shape (H,)   (``variant="valid"``)
    alpha : nn.Parameter, shape (H,)   (``variant="thesis"``)

    Raises
    ------
    ValueError
        For a non-positive size, a dropout outside [0, 1), an unknown variant
        or an unknown length normalisation.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        *,
        dropout: float = 0.0,
        variant: str = "valid",
        gamma_init: float = 1.0,
        eta_init: float = 1.0,
        delta_init: float = -0.5,
        alpha_init: float = 0.5,
        length_norm: str = "none",
    ):
        super().__init__()
        self.num_heads = _check_positive_int("num_heads", num_heads)
        self.head_dim = _check_positive_int("head_dim", head_dim)
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be a float in [0, 1), not {dropout!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        if length_norm not in LENGTH_NORMS:
            raise ValueError(f"length_norm must be one of {LENGTH_NORMS}, not {length_norm!r}")
        self.length_norm = length_norm
        self.dropout = float(dropout)
        self.variant = variant
        self.gamma = nn.Parameter(torch.full((num_heads,), float(gamma_init)))
        self.eta = nn.Parameter(torch.full((num_heads,), float(eta_init)))
        if variant == "valid":
            self.delta = nn.Parameter(torch.full((num_heads,), float(delta_init)))
        else:
            self.alpha = nn.Parameter(torch.full((num_heads,), float(alpha_init)))

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, "
            f"variant={self.variant!r}, dropout={self.dropout}"
            + (f", length_norm={self.length_norm!r}" if self.length_norm != "none" else "")
        )

    def length_factor(self, key_mask: torch.Tensor | None, batch: int, n_k: int, device=None) -> torch.Tensor:
        """The per-sequence output factor, float32 (B,): ``2**-round(log2 L)``, or ones.

        ``L`` is the number of valid keys of each row of ``key_mask`` (B, n_k),
        ``n_k`` without a mask.
        """
        if self.length_norm == "none":
            return torch.ones(batch, device=device)
        if key_mask is None:
            length = torch.full((batch,), n_k, dtype=torch.int64, device=device)
        else:
            length = key_mask.bool().sum(-1)
        return torch.exp2(-length_exponents(length).to(torch.float32))

    @property
    def mean_over(self) -> str:
        """Keys the row mean of Eq. 3 runs over: ``"valid"`` or ``"all"``."""
        return "valid" if self.variant == "valid" else "all"

    def effective_delta(self) -> torch.Tensor:
        """The delta of Eq. 3 per head, shape (H,): ``delta``, or ``-relu(alpha)`` (thesis)."""
        if self.variant == "valid":
            return self.delta
        return -torch.relu(self.alpha)

    def _check_inputs(self, q, k, v, key_mask):
        for name, t in (("q", q), ("k", k), ("v", v)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must be a tensor shaped (B, H, n, d), got {shape}")
            if t.shape[1] != self.num_heads:
                raise ValueError(
                    f"{name} has {t.shape[1]} heads in dimension 1, the module has {self.num_heads}"
                )
        if q.shape[-1] != self.head_dim or k.shape[-1] != self.head_dim:
            raise ValueError(
                f"q and k must have head dimension d={self.head_dim}: "
                f"q has {q.shape[-1]}, k has {k.shape[-1]}"
            )
        if k.shape[-2] != v.shape[-2]:
            raise ValueError(
                f"k and v must have the same number of keys: k has {k.shape[-2]}, v has {v.shape[-2]}"
            )
        if q.shape[0] != k.shape[0] or k.shape[0] != v.shape[0]:
            raise ValueError(f"q, k, v batch sizes differ: {q.shape[0]}, {k.shape[0]}, {v.shape[0]}")
        if key_mask is not None:
            if key_mask.shape != (k.shape[0], k.shape[-2]):
                raise ValueError(
                    f"key_mask must be shaped (B, n_k) = {(k.shape[0], k.shape[-2])}, "
                    f"got {tuple(key_mask.shape)}"
                )
            empty = ~key_mask.bool().any(dim=-1)
            if bool(empty.any()):
                b = int(torch.nonzero(empty)[0, 0])
                raise ValueError(f"key_mask has no valid key for batch item {b}")
        for name, t in (("q", q), ("k", k), ("v", v)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or Inf; inhibitor attention needs finite inputs")

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        *,
        check: bool = True,
    ) -> torch.Tensor:
        """Apply inhibitor attention.

        Parameters
        ----------
        q : Tensor (B, H, n_q, d)
        k : Tensor (B, H, n_k, d)
        v : Tensor (B, H, n_k, d_v)
        key_mask : bool Tensor (B, n_k), optional
            True marks a valid key. Every batch item needs one.
        check : bool
            Validate shapes and finiteness (a host sync; training loops that
            already trust their inputs may pass False).

        Returns
        -------
        Tensor (B, H, n_q, d_v), same dtype as ``v``; with ``length_norm="pow2"``
        each batch item is scaled by :meth:`length_factor`.
        """
        if check:
            self._check_inputs(q, k, v, key_mask)
        H = self.num_heads
        gamma = self.gamma.to(q.dtype).view(1, H, 1, 1)
        eta = self.eta.to(q.dtype).view(1, H, 1, 1)
        delta = self.effective_delta().to(q.dtype).view(1, H, 1, 1)

        # Eq. 1: (B, H, n_q, n_k)
        z = gamma / math.sqrt(self.head_dim) * torch.cdist(q, k, p=1)
        if key_mask is None:
            valid = torch.ones(z.shape[0], 1, 1, z.shape[-1], dtype=torch.bool, device=z.device)
        else:
            valid = key_mask.bool()[:, None, None, :]  # (B, 1, 1, n_k)
        if self.mean_over == "valid":
            validf = valid.to(z.dtype)
            mean = (z * validf).sum(-1, keepdim=True) / validf.sum(-1, keepdim=True)
        else:
            mean = z.mean(-1, keepdim=True)
        # Eq. 3: (B, H, n_q, n_k)
        zb = torch.relu(z - mean - delta)

        keep = valid.expand_as(zb)
        if self.training and self.dropout > 0.0:
            keep = keep & (torch.rand_like(zb) >= self.dropout)
        if key_mask is not None:
            # Padded keys contribute exactly nothing, and get exactly zero gradient
            # (otherwise the two halves of the identity below cancel only to rounding).
            v = torch.where(valid.transpose(-1, -2), v, torch.zeros((), dtype=v.dtype))  # (B, H, n_k, d_v)
        # Fully inhibit padded / dropped keys with a score above max|v|.
        big = v.detach().abs().amax() + 1.0
        zb = torch.where(keep, zb, big)

        # Eq. 2 via the cdist identity: (B, H, n_q, d_v)
        v_pos = torch.relu(v)  # (B, H, n_k, d_v)
        v_neg_abs = torch.relu(-v)
        v_sum = v.sum(dim=-2, keepdim=True)  # (B, H, 1, d_v): padded keys cancel below
        pos_t = v_pos.transpose(-1, -2)  # (B, H, d_v, n_k)
        neg_t = v_neg_abs.transpose(-1, -2)
        h = 0.5 * (v_sum + torch.cdist(zb, pos_t, p=1) - torch.cdist(zb, neg_t, p=1))
        if self.training and self.dropout > 0.0:
            h = h / (1.0 - self.dropout)
        if self.length_norm != "none":
            factor = self.length_factor(key_mask, h.shape[0], k.shape[-2], h.device)  # (B,)
            h = h * factor.to(h.dtype).view(-1, 1, 1, 1)  # exact: a power of two
        return eta * h
