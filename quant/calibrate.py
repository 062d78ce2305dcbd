"""Calibration: range observers, per-channel weight quantization, folding.

* Observers (:class:`MinMaxObserver`, :class:`PercentileObserver`,
  :class:`MSEObserver`) watch real activations (numpy arrays or CPU torch
  tensors), per tensor or per head, and report a symmetric range ``amax``
  (the float value that maps to the largest code).
* :func:`quantize_weight_per_channel` quantizes a projection weight
  (``nn.Linear`` layout ``(out, in)``) symmetrically per output channel.
* :func:`fold_layer` turns per-head ``gamma``, ``eta``, ``delta`` and the
  observed ranges of Q, K, V (and optionally of the float output H) into a
  :class:`~inhibitron.quant.formats.LayerQuant`, following the policy of
  ``docs/numerics.md`` (section "Folding policy").

numpy only; torch tensors are accepted duck-typed (``.detach().cpu().numpy()``).

This module gathers the calibration API; each part has its own module:
:mod:`inhibitron.quant.observers` (the observers, :func:`observe_layer`),
:mod:`inhibitron.quant.weight_quant` (weights) and
:mod:`inhibitron.quant.folding` (:func:`fold_layer`).
"""

from __future__ import annotations

from .folding import FormatTooNarrowError, choose_shared_exponent, fold_layer
from .observers import MinMaxObserver, MSEObserver, Observer, PercentileObserver, observe_layer
from .weight_quant import quantize_weight_per_channel

__all__ = [
    "FormatTooNarrowError",
    "MSEObserver",
    "MinMaxObserver",
    "Observer",
    "PercentileObserver",
    "choose_shared_exponent",
    "fold_layer",
    "observe_layer",
    "quantize_weight_per_channel",
]
