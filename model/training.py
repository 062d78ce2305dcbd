"""The training loop shared by the recipes: phases, optimizer steps, metrics, checkpoints.

Contract of the loop (:func:`train`):

* a run is a sequence of *phases* (:class:`Phase`; one per layer for
  ``layerwise``, else one); each has its trainable parameter set, its loss,
  and its own AdamW and warm-up + cosine/linear schedule laid over the
  phase's optimizer steps (:mod:`inhibitron.model.schedule`);
* the loss of an optimizer step is the loss of the **global** batch
  (``batch_size * grad_accum`` sequences over all processes): token-level
  terms (MSEs) are averaged over the valid (non-padding) tokens of the whole
  step, sequence-level terms (KL, cross-entropy) over its sequences
  (:class:`~inhibitron.model.losses.LossTerm`); so the loss curve does not
  depend on how the batch is split over processes or micro-batches
  (:mod:`inhibitron.model.ddp`);
* data order is a pure function of ``(seed, phase, epoch)`` and every
  checkpoint holds the model, optimizer, scheduler and RNG states
  (:mod:`inhibitron.model.train_checkpoint`), so a resumed run continues
  bit-identically to an uninterrupted one;
* nothing is overwritten silently: an ``out_dir`` that already holds a run
  is refused unless ``resume`` is given, and a resume from a checkpoint of a
  different recipe, configuration or architecture is refused with the
  differences named.

The run folder ``out_dir``::

    run.json          recipe, config, data and model description
    metrics.jsonl     one JSON line per optimizer step (:mod:`inhibitron.model.train_metrics`)
    losses.png        the loss curve (one colour per phase/layer)
    phases.jsonl      what each phase's setup did (e.g. the eta fit)
    checkpoints/      see :mod:`inhibitron.model.train_checkpoint`
    student/          the final student (:func:`run_phases`, once every step is done)

:func:`run_phases` is how a recipe runs: :func:`train`, then the final
student is saved when the run is complete.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import ddp
from .data import TokenDataset
from .distill_config import DistillConfig
from .losses import LossTerm
from .schedule import lr_factor, phase_steps, step_indices
from .surgery import iter_inhibitors, save_student
from .train_checkpoint import (
    check_compatible,
    load_checkpoint_state,
    model_fingerprint,
    prepare_out_dir,
    read_checkpoint_meta,
    save_checkpoint,
)
from .train_metrics import plot_losses, read_metrics

__all__ = ["Phase", "finished", "is_inhibitor_scalar", "phase_step_counts", "prepare_models", "run_phases",
           "save_final", "train"]


@dataclass
class Phase:
    """One stage of a run: which parameters train, on which loss."""

    name: str  # e.g. "layer 2" or "full"
    layer: int | None  # the layer trained (layer-wise), else None
    trainable: list[str]  # parameter names of the student that train
    loss: Callable[[dict[str, torch.Tensor]], dict[str, LossTerm]]  # batch -> terms
    setup: Callable[[list[dict[str, torch.Tensor]], ddp.DistEnv], dict] | None = None
    # ``setup(batches, env) -> info``: runs once when the phase starts fresh (not on resume),
    # before its optimizer exists, on the local shards of the phase's first optimizer step.
    steps: int | None = None  # optimizer steps of this phase (None: phase_steps of the config)
    lr: float | None = None  # peak learning rate of this phase (None: config.lr)


#: Smallest gamma an optimizer step may leave (gamma <= 0 turns inhibition into attraction,
#: and ``inhibitron export`` refuses it).
GAMMA_MIN = 1e-3


def phase_step_counts(phases: list[Phase], config: DistillConfig, num_examples: int) -> list[int]:
    """Optimizer steps of each phase (its own ``steps``, else :func:`phase_steps` of ``config``)."""
    _, default = phase_steps(config, num_examples)
    return [p.steps or default for p in phases]


def is_inhibitor_scalar(name: str) -> bool:
    """Whether parameter ``name`` is an inhibitor's per-head gamma or delta (alpha): the scalars
    that train at ``lr * config.scalar_lr_mult``. Not eta: after its least-squares fit it is of
    order ``1/n`` (the inhibitor sums over keys), and a step of 100 x lr overshoots it."""
    return ".inhibitor." in f".{name}" and name.rsplit(".", 1)[-1] in ("gamma", "delta", "alpha")


def _optimizer(student: nn.Module, names: list[str], config: DistillConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over ``names``: matrices with weight decay, vectors without, the inhibitor's
    per-head gamma and delta without and at ``lr * config.scalar_lr_mult``."""
    params = dict(student.named_parameters())
    scalars = [params[n] for n in names if is_inhibitor_scalar(n)]
    rest = [n for n in names if not is_inhibitor_scalar(n)]
    decay = [params[n] for n in rest if params[n].dim() >= 2]
    no_decay = [params[n] for n in rest if params[n].dim() < 2]
    groups = [g for g in ({"params": decay, "weight_decay": config.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0},
                          {"params": scalars, "weight_decay": 0.0, "lr": lr * config.scalar_lr_mult})
              if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=(config.adam_beta1, config.adam_beta2),
                             eps=config.adam_eps, foreach=False)



def train(
    student: nn.Module,
    phases: list[Phase],
    data: TokenDataset,
    config: DistillConfig,
    out_dir: str | os.PathLike,
    *,
    env: ddp.DistEnv | None = None,
    resume: bool | str | os.PathLike = False,
    stop_after_steps: int | None = None,
    progress: bool = True,
    run_info: dict | None = None,
) -> list[dict]:
    """Run ``phases`` in order on ``data``; see the module docstring for the contract.

    Parameters
    ----------
    student : nn.Module
        The model that trains (on ``env.device``); frozen except each phase's set.
    phases : list of Phase
    data : TokenDataset
    config : DistillConfig
    out_dir : path-like
        The run folder (created).
    env : DistEnv, optional
        Data-parallel placement (default: single process on CPU).
    resume : bool or path
        ``True``: continue from the newest checkpoint of ``out_dir``; a path:
        from that checkpoint.
    stop_after_steps : int, optional
        Stop (with a checkpoint) after this many optimizer steps in total, as
        if interrupted; for tests and time-boxed jobs.
    progress : bool
        Show a tqdm bar (rank 0).
    run_info : dict, optional
        Extra JSON-able description stored in ``run.json``.

    Returns
    -------
    list of dict
        The metric records of every optimizer step so far (resumed runs
        include the steps before the checkpoint).

    Raises
    ------
    CheckpointError
        ``out_dir`` holds a run and ``resume`` is not given; nothing to resume;
        an incompatible or damaged checkpoint.
    """
    from tqdm.auto import tqdm

    env = env or ddp.DistEnv()
    out_dir = Path(out_dir)
    if config.batch_size % env.world_size:
        raise ValueError(
            f"batch_size={config.batch_size} is the global micro-batch and must be divisible by "
            f"the {env.world_size} processes"
        )
    if not phases:
        raise ValueError("no phase to train")
    ckpt = prepare_out_dir(out_dir, resume, env)
    fingerprint = model_fingerprint(student)
    meta = None
    if ckpt is not None:
        meta = read_checkpoint_meta(ckpt)
        check_compatible(meta, ckpt, config, fingerprint)
    ddp.barrier(env)
    metrics_path = out_dir / "metrics.jsonl"
    history: list[dict] = []
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if meta is None:
            info = {"recipe": config.recipe, "config": config.to_dict(), "phases": [p.name for p in phases],
                    "train_sequences": len(data), "world_size": env.world_size,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S"), **(run_info or {})}
            (out_dir / "run.json").write_text(json.dumps(info, indent=1))
            metrics_path.write_text("")
        else:
            history = [r for r in read_metrics(metrics_path) if r["step"] <= meta["global_step"]]
            dropped = len(read_metrics(metrics_path)) - len(history)
            if dropped:
                print(f"resume: dropping {dropped} metric records after step {meta['global_step']} "
                      f"(they are recomputed)")
            metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    ddp.barrier(env)

    n_batches, _ = phase_steps(config, len(data))
    counts = phase_step_counts(phases, config, len(data))
    offsets = [sum(counts[:i]) for i in range(len(phases))]
    start_phase, start_step = (meta["phase"], meta["step_in_phase"]) if meta else (0, 0)
    if meta is None:
        torch.manual_seed(config.seed + 7919 * env.rank)
        random.seed(config.seed)
        np.random.seed(config.seed)
    # The teacher runs in eval mode; the student too unless config.student_dropout.
    student.train(config.student_dropout)
    all_params = dict(student.named_parameters())
    total_steps = sum(counts)
    bar = tqdm(total=total_steps, initial=offsets[start_phase] + start_step,
               desc=f"distill {config.recipe}", disable=not (progress and env.is_main), unit="step")
    steps_done_now = 0
    try:
        for p_idx in range(start_phase, len(phases)):
            phase = phases[p_idx]
            unknown = [n for n in phase.trainable if n not in all_params]
            if unknown:
                raise ValueError(f"phase {phase.name!r}: no parameter named {unknown[0]!r} in the student")
            if not phase.trainable:
                raise ValueError(f"phase {phase.name!r} has no trainable parameter")
            for n, p in all_params.items():
                p.requires_grad_(n in set(phase.trainable))
            params = [all_params[n] for n in phase.trainable]
            fresh = meta is None or p_idx != start_phase
            if fresh and phase.setup is not None:
                batches = [{k: v.to(env.device) for k, v in data.collate(idx[env.rank :: env.world_size]).items()}
                           for idx in step_indices(data, config, p_idx, 0, n_batches)]
                info = phase.setup(batches, env)
                if env.is_main and info:
                    with (out_dir / "phases.jsonl").open("a") as fh:
                        fh.write(json.dumps({"phase": phase.name, **info}) + "\n")
            steps_per_phase = counts[p_idx]
            optimizer = _optimizer(student, phase.trainable, config, phase.lr or config.lr)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s, total=steps_per_phase: lr_factor(s, total, config.warmup_ratio, config.schedule))
            step0 = 0
            if meta is not None and p_idx == start_phase:
                load_checkpoint_state(ckpt, meta, student=student, optimizer=optimizer,
                                       scheduler=scheduler, env=env)
                step0 = start_step
            bar.set_description(f"distill {config.recipe} [{phase.name}]")
            for step in range(step0, steps_per_phase):
                record = _train_step(student, phase, params, optimizer, scheduler, data, config, env,
                                     p_idx, step, n_batches)
                global_step = offsets[p_idx] + step + 1
                record.update({"step": global_step, "phase": phase.name, "layer": phase.layer,
                               "phase_step": step + 1})
                history.append(record)
                steps_done_now += 1
                if env.is_main:
                    with metrics_path.open("a") as fh:
                        fh.write(json.dumps(record) + "\n")
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.2g}")
                last = step + 1 == steps_per_phase
                interrupted = stop_after_steps is not None and steps_done_now >= stop_after_steps
                due = config.checkpoint_every and (step + 1) % config.checkpoint_every == 0
                if due or last or interrupted:
                    meta_out = {"recipe": config.recipe, "config": config.to_dict(), "phase": p_idx,
                                "step_in_phase": step + 1, "global_step": global_step,
                                "fingerprint": fingerprint[0], "tensors": fingerprint[1]}
                    if last and p_idx + 1 < len(phases):
                        pass  # the next phase starts fresh; resuming here re-enters it at step 0
                    save_checkpoint(out_dir, student=student, optimizer=optimizer, scheduler=scheduler,
                                     meta=meta_out, env=env, keep=config.keep_checkpoints)
                    if env.is_main:
                        plot_losses(history, out_dir / "losses.png", title=f"{config.recipe} distillation")
                if interrupted:
                    return history
            # Phase done: its parameters freeze (layer-wise: the layer is final).
            for p in params:
                p.requires_grad_(False)
            if meta is not None and p_idx == start_phase and start_step == steps_per_phase:
                pass
    finally:
        bar.close()
    if env.is_main:
        plot_losses(history, out_dir / "losses.png", title=f"{config.recipe} distillation")
    return history


def _train_step(student, phase: Phase, params, optimizer, scheduler, data: TokenDataset,
                config: DistillConfig, env: ddp.DistEnv, p_idx: int, step: int, n_batches: int) -> dict:
    """One optimizer step over ``grad_accum`` global micro-batches."""
    B, A = config.batch_size, config.grad_accum
    micro = [(None, idx) for idx in step_indices(data, config, p_idx, step, n_batches)]
    counts = {"tokens": float(sum(data.lengths(idx) for _, idx in micro)), "sequences": float(B * A)}
    optimizer.zero_grad(set_to_none=True)
    term_sums: dict[str, float] = {}
    names: list[str] = []
    local = []
    for _, idx in micro:
        shard = idx[env.rank :: env.world_size]
        batch = {k: v.to(env.device) for k, v in data.collate(shard).items()}
        with torch.autocast(torch.device(env.device).type, dtype=torch.bfloat16, enabled=config.bf16):
            terms = phase.loss(batch)
        loss = sum(t.weight * t.value_sum / counts[t.kind] for t in terms.values())
        loss.backward()
        for name, t in terms.items():
            if name not in names:
                names.append(name)
            term_sums[name] = term_sums.get(name, 0.0) + float(t.value_sum.detach()) / counts[t.kind]
        local.append(float(loss.detach()))
    ddp.all_reduce_grads(params, env)
    vec = torch.tensor([sum(local)] + [term_sums[n] for n in names], dtype=torch.float64)
    vec = ddp.all_reduce_sum(vec, env)
    grad_norm = None
    if config.max_grad_norm > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    with torch.no_grad():  # gamma is a score scale: keep it positive (the quantized core needs gamma > 0)
        for n, p in zip(phase.trainable, params):
            if n.endswith(".inhibitor.gamma"):
                p.clamp_(min=GAMMA_MIN)
    scheduler.step()
    rec = {"loss": float(vec[0]), "lr": lr, "epoch": round((step + 1) * A / n_batches, 4),
           "tokens": int(counts["tokens"])}
    if grad_norm is not None:
        rec["grad_norm"] = grad_norm
    rec.update({n: float(v) for n, v in zip(names, vec[1:])})
    return rec


def prepare_models(teacher, student, env: ddp.DistEnv | None) -> ddp.DistEnv:
    """Move the models to ``env.device`` (default: one process on CPU), freeze the
    teacher (eval, no gradients) and check that ``student`` has inhibitor attention."""
    env = env or ddp.DistEnv()
    if teacher is not None:
        teacher.to(env.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    student.to(env.device)
    list(iter_inhibitors(student))  # must be a converted student
    return env


def finished(history: list[dict], phases: list[Phase], config: DistillConfig, data: TokenDataset) -> bool:
    """Whether ``history`` reaches the last optimizer step of the last phase."""
    return bool(history) and history[-1]["step"] == sum(phase_step_counts(phases, config, len(data)))


def save_final(student, out_dir: Path, tokenizer, env: ddp.DistEnv) -> None:
    """Save the final student to ``out_dir/student`` (``save_student``, and the tokenizer if given)."""
    if env.is_main:
        folder = save_student(student, out_dir / "student")
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)


def run_phases(student, phases: list[Phase], data: TokenDataset, config: DistillConfig, out_dir, *,
               env: ddp.DistEnv, tokenizer=None, resume=False, stop_after_steps=None, progress=True,
               run_info=None, save: Callable = save_final) -> list[dict]:
    """:func:`train`, then ``save(student, Path(out_dir), tokenizer, env)`` once the run is complete."""
    history = train(student, phases, data, config, out_dir, env=env, resume=resume,
                    stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)
    if finished(history, phases, config, data):
        save(student, Path(out_dir), tokenizer, env)
    return history
