"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

The recipes shard every global micro-batch across processes
(``rank::world_size``), compute the loss of each shard divided by counts of
the *global* batch (known to every process, because all of them hold the
same deterministic data order), and sum the gradients across processes with
one ``all_reduce`` per optimizer step: exactly the gradient of the global
batch, as ``DistributedDataParallel`` would give with ``no_sync`` during
gradient accumulation. We do not wrap the model in
``DistributedDataParallel`` because the layer-wise recipe changes the
trainable set per layer and stops forward passes early, which DDP's reducer
does not allow.

Backend: ``nccl`` when CUDA is available, ``gloo`` otherwise (CPU; tested
with 2 processes). Launch::

    torchrun --nproc_per_node 2 -m inhibitron distill --recipe layerwise ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "setup", "teardown", "all_reduce_grads", "all_reduce_sum", "barrier"]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size``, and its device."""

    rank: int = 0  # this process
    world_size: int = 1  # number of processes
    device: str = "cpu"  # torch device of this process

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> DistEnv:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ...).

    Without those variables (a plain ``python`` run) this is a single process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend=backend)
    return DistEnv(rank=rank, world_size=world, device=device)


def teardown() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_grads(params: list[torch.nn.Parameter], env: DistEnv) -> None:
    """Sum the gradients of ``params`` over all processes (one flat all-reduce)."""
    if not env.distributed:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_reduce_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum a tensor over all processes (returns a new tensor on the device of ``values``).

    The collective runs on ``env.device`` (nccl reduces only GPU tensors)."""
    out = values.detach().clone()
    if env.distributed:
        moved = out.to(env.device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        out = moved.to(values.device)
    return out
