"""The schedule of a run: steps per phase, learning rate per step, examples per step.

Pure functions of the configuration (no model, no state), so a resumed run
recomputes exactly the schedule of the interrupted one:

* :func:`phase_steps` -- global micro-batches per epoch and optimizer steps per phase;
* :func:`lr_factor` -- the multiplier of the peak learning rate at a step
  (linear warm-up, then cosine/linear decay or constant);
* :func:`step_indices` -- the example indices of each global micro-batch of a
  step, from the per-epoch permutation of :func:`~inhibitron.model.data.epoch_permutation`
  (a pure function of ``(seed, phase, epoch)``).
"""

from __future__ import annotations

import math

from .data import TokenDataset, epoch_permutation
from .distill_config import DistillConfig

__all__ = ["lr_factor", "phase_steps", "step_indices"]


def phase_steps(config: DistillConfig, num_examples: int) -> tuple[int, int]:
    """(global micro-batches per epoch, optimizer steps of one phase)."""
    n_batches = num_examples // config.batch_size
    if n_batches == 0:
        raise ValueError(
            f"the training data has {num_examples} sequences, fewer than one batch "
            f"(batch_size={config.batch_size})"
        )
    micro = max(1, math.ceil(config.epochs * n_batches))
    steps = math.ceil(micro / config.grad_accum)
    if config.max_steps is not None:
        steps = min(steps, config.max_steps)
    return n_batches, steps


def lr_factor(step: int, total: int, warmup_ratio: float, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` of ``total``.

    Linear warm-up over ``w = ceil(total * warmup_ratio)`` steps, then cosine or
    linear decay to 0 at ``total`` (as ``transformers.get_*_schedule_with_warmup``),
    or constant. Unlike transformers, the warm-up rises as ``(step + 1) / (w + 1)``:
    the first step does not run at learning rate 0 (a wasted step; 10% of a
    10-step phase).

    >>> [round(lr_factor(s, 10, 0.2, "cosine"), 3) for s in (0, 1, 2, 6, 10)]
    [0.333, 0.667, 1.0, 0.5, 0.0]
    """
    warmup = math.ceil(total * warmup_ratio)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, 1.0 - progress)


def step_indices(data: TokenDataset, config: DistillConfig, p_idx: int, step: int, n_batches: int) -> list[list[int]]:
    """Example indices of the global micro-batches of optimizer step ``step`` of phase ``p_idx``.

    Returns ``grad_accum`` lists of ``batch_size`` indices (each process takes its
    shard ``idx[rank::world_size]``).
    """
    B, A = config.batch_size, config.grad_accum
    out, perms = [], {}
    for m in range(step * A, (step + 1) * A):
        epoch, pos = divmod(m, n_batches)
        if epoch not in perms:
            perms[epoch] = epoch_permutation(len(data), seed=config.seed, phase=p_idx, epoch=epoch)
        out.append(perms[epoch][pos * B : (pos + 1) * B].tolist())
    return out
