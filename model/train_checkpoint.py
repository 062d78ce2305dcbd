"""Resumable checkpoints of a training run: write, find, check and restore them.

A run folder (``out_dir``) holds::

    run.json, metrics.jsonl, losses.png        (written by the training loop)
    checkpoints/step-NNNNNNN/
        model.safetensors       the student's full state dict
        optimizer.safetensors   AdamW moments (tensors; scalar tensors stored with shape (1,))
        trainer.json            step, phase, optimizer/scheduler scalars, config,
                                model fingerprint, RNG (python, numpy)
        rng-rank<r>.safetensors torch RNG state of each process (uint8)

A checkpoint is written to ``.step-NNNNNNN.tmp`` and renamed when complete;
only the newest ``keep`` are kept. Restoring one gives the model, optimizer,
scheduler and RNG states, so a resumed run continues bit-identically. A
checkpoint of another recipe, configuration (trajectory fields) or student
architecture is refused with the difference named (:class:`CheckpointError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import ddp
from .distill_config import DistillConfig

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "check_compatible",
    "latest_checkpoint",
    "load_checkpoint_state",
    "model_fingerprint",
    "prepare_out_dir",
    "read_checkpoint_meta",
    "save_checkpoint",
]

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A run directory or checkpoint cannot be used (exists already, incompatible, damaged)."""



def model_fingerprint(model: nn.Module) -> tuple[str, list]:
    """(short hash, [[name, shape, dtype], ...]) of the state dict: the architecture, not the values."""
    desc = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    return hashlib.sha256(json.dumps(desc).encode()).hexdigest()[:16], desc


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint's JSON")


def save_checkpoint(folder: Path, *, student, optimizer, scheduler, meta: dict, env: ddp.DistEnv,
                    keep: int) -> Path:
    """Write ``checkpoints/step-NNNNNNN`` of ``folder`` (all processes take part); return it."""
    from safetensors.torch import save_file

    ckpt_root = folder / "checkpoints"
    name = f"step-{meta['global_step']:07d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".{name}.tmp"
    if env.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    ddp.barrier(env)
    # Every process saves its torch RNG (dropout streams differ per rank).
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tmp / f"rng-rank{env.rank}.safetensors"))
    if env.is_main:
        state = {k: v.detach().contiguous().cpu() for k, v in student.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        osd = optimizer.state_dict()
        tensors, scalars = {}, {}
        for idx, st in osd["state"].items():
            for key, val in st.items():
                if isinstance(val, torch.Tensor) and val.dim() > 0:
                    tensors[f"{idx}.{key}"] = val.detach().contiguous().cpu()
                elif isinstance(val, torch.Tensor):
                    tensors[f"{idx}.{key}"] = val.detach().reshape(1).contiguous().cpu()
                else:
                    scalars[f"{idx}.{key}"] = val
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        np_state = np.random.get_state()
        record = {
            **meta,
            "format": "inhibitron-distill-checkpoint",
            "version": CHECKPOINT_VERSION,
            "optimizer": {"param_groups": _json_safe(osd["param_groups"]), "scalars": _json_safe(scalars)},
            "scheduler": _json_safe(scheduler.state_dict()),
            "python_random": _json_safe(random.getstate()),
            "numpy_random": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                             float(np_state[4])],
            "world_size": env.world_size,
        }
        (tmp / "trainer.json").write_text(json.dumps(record, indent=1))
    ddp.barrier(env)
    if env.is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        existing = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
        for old in existing[:-keep]:
            shutil.rmtree(old)
    ddp.barrier(env)
    return final


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest ``checkpoints/step-*`` folder of a run, or None."""
    root = Path(out_dir) / "checkpoints"
    found = sorted(p for p in root.glob("step-*") if p.is_dir() and (p / "trainer.json").is_file())
    return found[-1] if found else None


def read_checkpoint_meta(ckpt: Path) -> dict:
    """The ``trainer.json`` of checkpoint ``ckpt``, after checking the folder's format and files."""
    f = ckpt / "trainer.json"
    if not f.is_file():
        raise CheckpointError(f"{str(ckpt)!r} is not a checkpoint (no trainer.json)")
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{f} is damaged: {exc}") from None
    if meta.get("format") != "inhibitron-distill-checkpoint" or meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{f} is not an Inhibitron distillation checkpoint of version {CHECKPOINT_VERSION} "
            f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
        )
    for name in ("model.safetensors", "optimizer.safetensors"):
        if not (ckpt / name).is_file():
            raise CheckpointError(f"checkpoint {str(ckpt)!r} lacks {name}")
    return meta


def check_compatible(meta: dict, ckpt: Path, config: DistillConfig, fingerprint: tuple[str, list]) -> None:
    """Refuse a checkpoint of another recipe, trajectory configuration or architecture."""
    old = DistillConfig.from_dict(meta["config"])
    if old.recipe != config.recipe:
        raise CheckpointError(
            f"cannot resume: checkpoint {str(ckpt)!r} was written by recipe {old.recipe!r}, "
            f"this run is {config.recipe!r}"
        )
    diff = config.trajectory_diff(old)
    if diff:
        detail = ", ".join(f"{n}: checkpoint {getattr(old, n)!r} vs now {getattr(config, n)!r}" for n in diff)
        raise CheckpointError(f"cannot resume from {str(ckpt)!r}: the configuration differs ({detail})")
    if meta["fingerprint"] != fingerprint[0]:
        then = {k: (s, d) for k, s, d in meta["tensors"]}
        now = {k: (s, d) for k, s, d in fingerprint[1]}
        first = next((k for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k)), "?")
        raise CheckpointError(
            f"cannot resume from {str(ckpt)!r}: the student architecture differs "
            f"(first difference at {first!r}: checkpoint {then.get(first)} vs now {now.get(first)})"
        )


def load_checkpoint_state(ckpt: Path, meta: dict, *, student, optimizer, scheduler, env) -> None:
    """Restore model, optimizer, scheduler and RNG states (python, numpy, torch) from ``ckpt``."""
    from safetensors.torch import load_file

    state = load_file(str(ckpt / "model.safetensors"))
    student.load_state_dict(state, strict=True)
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    opt_state: dict[int, dict] = {}
    for key, val in tensors.items():
        idx, name = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = val.reshape(()) if name == "step" else val
    for key, val in meta["optimizer"]["scalars"].items():
        idx, name = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = val
    groups = meta["optimizer"]["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    scheduler.load_state_dict(meta["scheduler"])
    rng_file = ckpt / f"rng-rank{env.rank}.safetensors"
    if rng_file.is_file():
        rng = load_file(str(rng_file))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    else:
        torch.manual_seed(meta["config"]["seed"] + 7919 * (env.rank + 1) + meta["global_step"])
    pr = meta["python_random"]
    random.setstate((pr[0], tuple(pr[1]), pr[2]))
    nr = meta["numpy_random"]
    np.random.set_state((nr[0], np.array(nr[1], dtype=np.uint32), nr[2], nr[3], nr[4]))


def prepare_out_dir(out_dir: Path, resume, env: ddp.DistEnv) -> Path | None:
    """Refuse to overwrite a run; find the checkpoint to resume from."""
    holds_run = any((out_dir / n).exists() for n in ("run.json", "metrics.jsonl", "checkpoints"))
    if not resume:
        if holds_run:
            raise CheckpointError(
                f"{str(out_dir)!r} already holds a run (run.json/metrics.jsonl/checkpoints); "
                "resume it (--resume) or choose another output folder"
            )
        return None
    if resume is True:
        ckpt = latest_checkpoint(out_dir)
        if ckpt is None:
            raise CheckpointError(f"nothing to resume: {str(out_dir)!r} has no checkpoints/step-* folder")
        return ckpt
    ckpt = Path(resume)
    if not ckpt.is_dir():
        raise CheckpointError(f"checkpoint {str(ckpt)!r} does not exist")
    return ckpt
