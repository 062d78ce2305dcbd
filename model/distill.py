"""The distillation recipes of InhibiDistilbert, and the training loop they share.

Recipes (hyperparameters: :mod:`inhibitron.model.recipes`)::

    distill_layerwise(teacher, student, data, config, out_dir)   Exp. 1a
    distill_full(teacher, student, data, config, out_dir)        Exp. 1b
    distill_task(teacher, student, data, config, out_dir)        Exp. 2
    finetune(student, data, config, out_dir)                     Table 6
    finetune_qat(student, data, config, out_dir, teacher=...)    QAT (quant.qat)

Each returns the metric history (one dict per optimizer step) and leaves in
``out_dir``::

    run.json          recipe, config, data and model description
    metrics.jsonl     one JSON line per optimizer step (loss, terms, lr, layer, epoch)
    losses.png        the loss curve (one colour per phase/layer)
    checkpoints/step-NNNNNNN/
        model.safetensors       the student's full state
        optimizer.safetensors   AdamW moments (tensors)
        trainer.json            step, phase, optimizer/scheduler scalars, config, RNG (python, numpy)
        rng-rank<r>.safetensors torch RNG state of each process
    student/          the final student (``save_student`` + tokenizer)

Contract of the loop (:func:`train`):

* a run is a sequence of *phases* (one per layer for ``layerwise``, else one);
  each has its trainable parameter set, its loss, and its own AdamW and
  warm-up + cosine/linear schedule laid over the phase's optimizer steps;
* the loss of an optimizer step is the loss of the **global** batch
  (``batch_size * grad_accum`` sequences over all processes): token-level
  terms (MSEs) are averaged over the valid (non-padding) tokens of the whole
  step, sequence-level terms (KL, cross-entropy) over its sequences; so the
  loss curve does not depend on how the batch is split over processes or
  micro-batches (:mod:`inhibitron.model.ddp`);
* data order is a pure function of ``(seed, phase, epoch)`` and every
  checkpoint holds the model, optimizer, scheduler and RNG states, so a
  resumed run continues bit-identically to an uninterrupted one;
* nothing is overwritten silently: an ``out_dir`` that already holds a run
  is refused unless ``resume`` is given, and a resume from a checkpoint of a
  different recipe, configuration or architecture is refused with the
  differences named.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import ddp
from .data import TokenDataset, epoch_permutation
from .recipes import DistillConfig
from .surgery import (
    ModelFolderError,
    _check_model_folder,
    attention_modules,
    iter_inhibitors,
    save_student,
    to_inhibitor,
)

__all__ = [
    "CheckpointError",
    "Phase",
    "LossTerm",
    "classifier_student",
    "distill_full",
    "distill_layerwise",
    "distill_task",
    "finetune",
    "finetune_qat",
    "layer_trainable_names",
    "load_classifier",
    "lr_factor",
    "phase_steps",
    "plot_losses",
    "read_metrics",
    "train",
]

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A run directory or checkpoint cannot be used (exists already, incompatible, damaged)."""


@dataclass(frozen=True)
class LossTerm:
    """One term of a loss: ``weight * value_sum / count(kind)`` over the global step.

    ``value_sum`` is a scalar tensor summed over the local shard;
    ``kind`` is ``"tokens"`` (normalised by valid tokens) or ``"sequences"``.
    """

    value_sum: torch.Tensor
    kind: str
    weight: float = 1.0


@dataclass
class Phase:
    """One stage of a run: which parameters train, on which loss."""

    name: str  # e.g. "layer 2" or "full"
    layer: int | None  # the layer trained (layer-wise), else None
    trainable: list[str]  # parameter names of the student that train
    loss: Callable[[dict[str, torch.Tensor]], dict[str, LossTerm]]  # batch -> terms
    setup: Callable[[list[dict[str, torch.Tensor]], "ddp.DistEnv"], dict] | None = None
    # ``setup(batches, env) -> info``: runs once when the phase starts fresh (not on resume),
    # before its optimizer exists, on the local shards of the phase's first optimizer step.


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------


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

    Linear warm-up over ``ceil(total * warmup_ratio)`` steps, then cosine or
    linear decay to 0 at ``total`` (as ``transformers.get_*_schedule_with_warmup``),
    or constant.

    >>> [round(lr_factor(s, 10, 0.2, "cosine"), 3) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    warmup = math.ceil(total * warmup_ratio)
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, 1.0 - progress)


# ---------------------------------------------------------------------------
# Helpers: model structure
# ---------------------------------------------------------------------------


def _qkv_names(mod: nn.Module) -> tuple[str, str, str]:
    return ("query", "key", "value") if hasattr(mod, "query") else ("q_lin", "k_lin", "v_lin")


def layer_trainable_names(student: nn.Module, layer: int) -> list[str]:
    """Parameter names of layer ``layer`` that train in the layer-wise recipe:
    the Q/K/V projections (weights, biases) and the inhibitor's per-head scalars."""
    mods = attention_modules(student)
    if not 0 <= layer < len(mods):
        raise ValueError(f"layer {layer} does not exist: the model has {len(mods)} layers (0..{len(mods) - 1})")
    target = mods[layer][2]
    prefix = {id(m): n for n, m in student.named_modules()}[id(target)]
    keep = tuple(f"{prefix}.{p}." for p in (*_qkv_names(target), "inhibitor"))
    return [n for n, _ in student.named_parameters() if n.startswith(keep)]


def _context_site(mod: nn.Module) -> tuple[nn.Module, str]:
    """Where the attention *context* (pre output projection) of a self-attention module appears.

    BERT: the output of ``BertSelfAttention`` (the output dense layer is in
    ``BertSelfOutput``). DistilBERT: the input of ``out_lin``.
    """
    if hasattr(mod, "out_lin"):
        return mod.out_lin, "input"
    return mod, "output"


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has run."""


def _capture_context(model: nn.Module, layer: int, batch: dict, *, stop: bool = True,
                     capture_input: bool = False) -> tuple[torch.Tensor, tuple | None]:
    """Run ``model`` on ``batch`` up to layer ``layer``'s attention; return its context (B, n, H*d)
    and, with ``capture_input``, the ``(args, kwargs)`` the self-attention module was called with."""
    mod = attention_modules(model)[layer][2]
    site, where = _context_site(mod)
    got: dict[str, Any] = {}
    handles = []

    def on_ctx(_m, args, out=None):
        got["ctx"] = args[0] if where == "input" else out[0]
        if stop and where == "output":
            raise _Stop

    def on_out(_m, _args, _out):
        if stop:
            raise _Stop

    if where == "input":
        handles.append(site.register_forward_pre_hook(lambda m, a: on_ctx(m, a)))
        handles.append(mod.register_forward_hook(on_out))
    else:
        handles.append(site.register_forward_hook(on_ctx))
    if capture_input:
        def on_in(_m, args, kwargs):
            got["in"] = (args, dict(kwargs))
        handles.append(mod.register_forward_pre_hook(on_in, with_kwargs=True))
    try:
        model(**_model_inputs(batch))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return got["ctx"], got.get("in")


def _model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _masked_sq_sum(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over valid tokens of the feature-mean squared error: a, b (B, n, D), mask (B, n)."""
    per_token = (a.float() - b.float()).pow(2).mean(dim=-1)  # (B, n)
    return (per_token * mask.to(per_token.dtype)).sum()


def _layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Teacher hidden-state index for each student layer (uniform, last to last)."""
    return [round((i + 1) * n_teacher / n_student) for i in range(n_student)]


# ---------------------------------------------------------------------------
# Losses of the recipes
# ---------------------------------------------------------------------------


def _layer_contexts(teacher, student, layer: int, layer_input: str, batch):
    """(teacher context, student context) of ``layer`` on ``batch``, each (B, n, H*d)."""
    with torch.no_grad():
        t_ctx, t_in = _capture_context(teacher, layer, batch, capture_input=(layer_input == "teacher"))
    if layer_input == "student":
        s_ctx, _ = _capture_context(student, layer, batch)
    else:
        mod = attention_modules(student)[layer][2]
        site, where = _context_site(mod)
        if where == "output":
            s_ctx = mod(*t_in[0], **t_in[1])[0]
        else:
            got = {}
            h = site.register_forward_pre_hook(lambda m, a: got.__setitem__("ctx", a[0]))
            try:
                mod(*t_in[0], **t_in[1])
            finally:
                h.remove()
            s_ctx = got["ctx"]
    return t_ctx, s_ctx


def _layerwise_loss(teacher, student, layer: int, layer_input: str):
    def loss(batch):
        t_ctx, s_ctx = _layer_contexts(teacher, student, layer, layer_input, batch)
        return {"context_mse": LossTerm(_masked_sq_sum(s_ctx, t_ctx, batch["attention_mask"]), "tokens")}

    return loss


def _fit_eta(teacher, student, layer: int, layer_input: str):
    """Phase setup: least-squares eta per head of ``layer`` (the context is linear in eta)."""
    inhib = attention_modules(student)[layer][2].inhibitor

    @torch.no_grad()
    def setup(batches, env):
        H = inhib.num_heads
        acc = torch.zeros(2, H, dtype=torch.float64)
        for batch in batches:
            t_ctx, s_ctx = _layer_contexts(teacher, student, layer, layer_input, batch)
            m = batch["attention_mask"].to(torch.float64)[..., None, None]  # (B, n, 1, 1)
            t = t_ctx.double().unflatten(-1, (H, -1)) * m  # (B, n, H, d)
            s = s_ctx.double().unflatten(-1, (H, -1)) * m
            acc[0] += (t * s).sum(dim=(0, 1, 3))
            acc[1] += (s * s).sum(dim=(0, 1, 3))
        acc = ddp.all_reduce_sum(acc, env)
        ratio = torch.where(acc[1] > 0, acc[0] / acc[1].clamp_min(1e-300), torch.ones_like(acc[0]))
        old = inhib.eta.detach().clone()
        inhib.eta.mul_(ratio.to(inhib.eta.dtype))
        return {"eta_before": old.tolist(), "eta_after": inhib.eta.detach().tolist()}

    return setup


def _hidden_terms(t_hidden, s_hidden, mask, *, average: bool) -> torch.Tensor:
    t_layers, s_layers = len(t_hidden) - 1, len(s_hidden) - 1
    mapping = _layer_map(s_layers, t_layers)
    total = sum(_masked_sq_sum(s_hidden[i + 1], t_hidden[j], mask) for i, j in enumerate(mapping))
    return total / s_layers if average else total


def _full_loss(teacher, student):
    def loss(batch):
        inputs = _model_inputs(batch)
        with torch.no_grad():
            t = teacher(**inputs, output_hidden_states=True)
        s = student(**inputs, output_hidden_states=True)
        return {"hidden_mse": LossTerm(_hidden_terms(t.hidden_states, s.hidden_states,
                                                     batch["attention_mask"], average=False), "tokens")}

    return loss


def _kd_term(s_logits, t_logits, temperature: float) -> torch.Tensor:
    if s_logits.shape[-1] == 1:  # regression: match the teacher's prediction
        return (s_logits.float() - t_logits.float()).pow(2).sum()
    T = temperature
    return F.kl_div(F.log_softmax(s_logits.float() / T, -1), F.softmax(t_logits.float() / T, -1),
                    reduction="sum") * (T * T)


def _task_loss(teacher, student, config: DistillConfig):
    def loss(batch):
        inputs = _model_inputs(batch)
        with torch.no_grad():
            t = teacher(**inputs, output_hidden_states=config.alpha_hidden > 0)
        s = student(**inputs, output_hidden_states=config.alpha_hidden > 0)
        terms = {}
        if config.alpha_kd > 0:
            terms["kd"] = LossTerm(_kd_term(s.logits, t.logits, config.temperature), "sequences", config.alpha_kd)
        if config.alpha_hidden > 0:
            terms["hidden_mse"] = LossTerm(
                _hidden_terms(t.hidden_states, s.hidden_states, batch["attention_mask"], average=True),
                "tokens", config.alpha_hidden)
        return terms

    return loss


def _supervised_loss(student):
    def loss(batch):
        out = student(**_model_inputs(batch))
        labels = batch["labels"]
        if out.logits.shape[-1] == 1:
            v = (out.logits.squeeze(-1).float() - labels.float()).pow(2).sum()
        else:
            v = F.cross_entropy(out.logits.float(), labels, reduction="sum")
        return {"ce" if out.logits.shape[-1] > 1 else "mse": LossTerm(v, "sequences")}

    return loss


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------


def _fingerprint(model: nn.Module) -> tuple[str, list]:
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


def _save_checkpoint(folder: Path, *, student, optimizer, scheduler, meta: dict, env: ddp.DistEnv,
                     keep: int) -> Path:
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


def _read_checkpoint_meta(ckpt: Path) -> dict:
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


def _check_compatible(meta: dict, ckpt: Path, config: DistillConfig, fingerprint: tuple[str, list]) -> None:
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


def _load_checkpoint_state(ckpt: Path, meta: dict, *, student, optimizer, scheduler, env) -> None:
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


# ---------------------------------------------------------------------------
# Metrics and plot
# ---------------------------------------------------------------------------


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_losses(history: list[dict], path: str | os.PathLike, *, title: str = "") -> Path:
    """Plot the loss per optimizer step (log scale, one colour per phase) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    phases: dict[str, list[tuple[int, float]]] = {}
    for r in history:
        phases.setdefault(r["phase"], []).append((r["step"], r["loss"]))
    for name, pts in phases.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="." if len(xs) < 40 else None, label=name)
    if history and all(r["loss"] > 0 for r in history):
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (global batch)")
    ax.set_title(title or "distillation loss")
    ax.grid(True, alpha=0.3)
    if len(phases) > 1 or phases:
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def _optimizer(student: nn.Module, names: list[str], config: DistillConfig) -> torch.optim.AdamW:
    params = dict(student.named_parameters())
    decay = [params[n] for n in names if params[n].dim() >= 2]
    no_decay = [params[n] for n in names if params[n].dim() < 2]
    groups = [g for g in ({"params": decay, "weight_decay": config.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                             eps=config.adam_eps, foreach=False)


def _prepare_out_dir(out_dir: Path, resume, env: ddp.DistEnv) -> Path | None:
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
    ckpt = _prepare_out_dir(out_dir, resume, env)
    fingerprint = _fingerprint(student)
    meta = None
    if ckpt is not None:
        meta = _read_checkpoint_meta(ckpt)
        _check_compatible(meta, ckpt, config, fingerprint)
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

    n_batches, steps_per_phase = phase_steps(config, len(data))
    start_phase, start_step = (meta["phase"], meta["step_in_phase"]) if meta else (0, 0)
    if meta is None:
        torch.manual_seed(config.seed + 7919 * env.rank)
        random.seed(config.seed)
        np.random.seed(config.seed)
    student.train()
    all_params = dict(student.named_parameters())
    total_steps = steps_per_phase * len(phases)
    bar = tqdm(total=total_steps, initial=start_phase * steps_per_phase + start_step,
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
                           for idx in _step_indices(data, config, p_idx, 0, n_batches)]
                info = phase.setup(batches, env)
                if env.is_main and info:
                    with (out_dir / "phases.jsonl").open("a") as fh:
                        fh.write(json.dumps({"phase": phase.name, **info}) + "\n")
            optimizer = _optimizer(student, phase.trainable, config)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: lr_factor(s, steps_per_phase, config.warmup_ratio, config.schedule))
            step0 = 0
            if meta is not None and p_idx == start_phase:
                _load_checkpoint_state(ckpt, meta, student=student, optimizer=optimizer,
                                       scheduler=scheduler, env=env)
                step0 = start_step
            bar.set_description(f"distill {config.recipe} [{phase.name}]")
            for step in range(step0, steps_per_phase):
                record = _train_step(student, phase, params, optimizer, scheduler, data, config, env,
                                     p_idx, step, n_batches)
                global_step = p_idx * steps_per_phase + step + 1
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
                    _save_checkpoint(out_dir, student=student, optimizer=optimizer, scheduler=scheduler,
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


def _step_indices(data, config, p_idx: int, step: int, n_batches: int) -> list[list[int]]:
    """Example indices of the global micro-batches of optimizer step ``step`` of phase ``p_idx``."""
    B, A = config.batch_size, config.grad_accum
    out, perms = [], {}
    for m in range(step * A, (step + 1) * A):
        epoch, pos = divmod(m, n_batches)
        if epoch not in perms:
            perms[epoch] = epoch_permutation(len(data), seed=config.seed, phase=p_idx, epoch=epoch)
        out.append(perms[epoch][pos * B : (pos + 1) * B].tolist())
    return out


def _train_step(student, phase: Phase, params, optimizer, scheduler, data: TokenDataset,
                config: DistillConfig, env: ddp.DistEnv, p_idx: int, step: int, n_batches: int) -> dict:
    """One optimizer step over ``grad_accum`` global micro-batches."""
    B, A = config.batch_size, config.grad_accum
    micro = [(None, idx) for idx in _step_indices(data, config, p_idx, step, n_batches)]
    counts = {"tokens": float(sum(data.lengths(idx) for _, idx in micro)), "sequences": float(B * A)}
    optimizer.zero_grad(set_to_none=True)
    term_sums: dict[str, float] = {}
    names: list[str] = []
    local = []
    for _, idx in micro:
        shard = idx[env.rank :: env.world_size]
        batch = {k: v.to(env.device) for k, v in data.collate(shard).items()}
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
    scheduler.step()
    rec = {"loss": float(vec[0]), "lr": lr, "epoch": round((step + 1) * A / n_batches, 4),
           "tokens": int(counts["tokens"])}
    if grad_norm is not None:
        rec["grad_norm"] = grad_norm
    rec.update({n: float(v) for n, v in zip(names, vec[1:])})
    return rec


# ---------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------


def _save_final(student, out_dir: Path, tokenizer, env: ddp.DistEnv) -> None:
    if env.is_main:
        folder = save_student(student, out_dir / "student")
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)


def _prepare(teacher, student, env):
    env = env or ddp.DistEnv()
    if teacher is not None:
        teacher.to(env.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    student.to(env.device)
    list(iter_inhibitors(student))  # must be a converted student
    return env


def distill_layerwise(teacher, student, data: TokenDataset, config: DistillConfig, out_dir, *,
                      tokenizer=None, env=None, resume=False, stop_after_steps=None, progress=True,
                      run_info=None) -> list[dict]:
    """Experiment 1a: layer-wise distillation of the attention contexts, bottom-up.

    For each layer ``i`` (``config.layers``, default all) in turn, only the
    layer's Q/K/V projections and its inhibitor's gamma/eta/delta train, on
    the MSE (over valid tokens) between the teacher's and the student's
    attention context of layer ``i`` (the self-attention output before the
    output projection). The layer sees the *student's* own hidden state (its
    lower layers already distilled and frozen; the thesis code) or, with
    ``config.layer_input="teacher"``, the teacher's. After its epochs the
    layer is frozen. Forward passes stop at layer ``i``.

    Parameters
    ----------
    teacher : BertModel / DistilBertModel (frozen, eval)
    student : its inhibitor twin (:func:`~inhibitron.model.surgery.to_inhibitor`)
    data : TokenDataset of unlabelled text (:func:`~inhibitron.model.data.text_dataset`)
    config : DistillConfig with ``recipe="layerwise"``
    out_dir : path-like; see :func:`train`.
    tokenizer : saved next to the final student when given.

    Returns
    -------
    list of dict: the metric history (see :func:`train`).
    """
    _expect(config, "layerwise")
    env = _prepare(teacher, student, env)
    n_layers = len(attention_modules(student))
    if len(attention_modules(teacher)) != n_layers:
        raise ValueError(
            f"layer-wise distillation needs as many teacher layers as student layers "
            f"({len(attention_modules(teacher))} vs {n_layers})"
        )
    layers = config.layers if config.layers is not None else tuple(range(n_layers))
    if layers[-1] >= n_layers:
        raise ValueError(f"config.layers names layer {layers[-1]}; the model has {n_layers} (0..{n_layers - 1})")
    phases = [Phase(f"layer {i}", i, layer_trainable_names(student, i),
                    _layerwise_loss(teacher, student, i, config.layer_input),
                    _fit_eta(teacher, student, i, config.layer_input) if config.fit_eta else None)
              for i in layers]
    history = train(student, phases, data, config, out_dir, env=env, resume=resume,
                    stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)
    if _finished(history, phases, config, data):
        _save_final(student, Path(out_dir), tokenizer, env)
    return history


def distill_full(teacher, student, data: TokenDataset, config: DistillConfig, out_dir, *,
                 tokenizer=None, env=None, resume=False, stop_after_steps=None, progress=True,
                 run_info=None) -> list[dict]:
    """Experiment 1b: every student parameter trains on the sum over layers of the
    hidden-state MSE (valid tokens) against the teacher. Arguments as :func:`distill_layerwise`."""
    _expect(config, "full")
    env = _prepare(teacher, student, env)
    names = [n for n, _ in student.named_parameters()]
    phases = [Phase("full", None, names, _full_loss(teacher, student))]
    history = train(student, phases, data, config, out_dir, env=env, resume=resume,
                    stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)
    if _finished(history, phases, config, data):
        _save_final(student, Path(out_dir), tokenizer, env)
    return history


def distill_task(teacher, student, data: TokenDataset, config: DistillConfig, out_dir, *,
                 tokenizer=None, env=None, resume=False, stop_after_steps=None, progress=True,
                 run_info=None) -> list[dict]:
    """Experiment 2: task-specific distillation from a fine-tuned classifier.

    Loss = ``alpha_kd * T^2 * KL(softmax(t/T) || softmax(s/T))`` (per sequence)
    ``+ alpha_hidden * mean over student layers of the hidden-state MSE``
    (student layer ``i`` matched to teacher layer ``round((i+1) L_t / L_s)``).
    ``teacher`` and ``student`` are ``*ForSequenceClassification`` models
    (:func:`load_classifier`, :func:`classifier_student`); ``data`` a labelled
    :class:`TokenDataset` (labels unused by the loss).
    """
    _expect(config, "task")
    env = _prepare(teacher, student, env)
    if getattr(teacher, "num_labels", None) != getattr(student, "num_labels", None):
        raise ValueError(f"teacher has {getattr(teacher, 'num_labels', None)} labels, "
                         f"student {getattr(student, 'num_labels', None)}")
    if config.alpha_hidden > 0:
        th, sh = teacher.config.hidden_size if hasattr(teacher.config, "hidden_size") else teacher.config.dim, \
            student.config.hidden_size if hasattr(student.config, "hidden_size") else student.config.dim
        if th != sh:
            raise ValueError(f"hidden-state MSE needs equal hidden sizes (teacher {th}, student {sh}); "
                             "set alpha_hidden=0")
    names = [n for n, _ in student.named_parameters()]
    phases = [Phase("task", None, names, _task_loss(teacher, student, config))]
    history = train(student, phases, data, config, out_dir, env=env, resume=resume,
                    stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)
    if _finished(history, phases, config, data):
        _save_final(student, Path(out_dir), tokenizer, env)
    return history


def finetune(student, data: TokenDataset, config: DistillConfig, out_dir, *, tokenizer=None, env=None,
             resume=False, stop_after_steps=None, progress=True, run_info=None) -> list[dict]:
    """Table 6: fine-tune a ``*ForSequenceClassification`` student on labelled data
    (cross-entropy; MSE when it has one output, a regression task)."""
    _expect(config, "finetune")
    if data.labels is None:
        raise ValueError("fine-tuning needs labelled data (GLUE .tsv or an IMDb folder)")
    env = _prepare(None, student, env)
    names = [n for n, _ in student.named_parameters()]
    phases = [Phase("finetune", None, names, _supervised_loss(student))]
    history = train(student, phases, data, config, out_dir, env=env, resume=resume,
                    stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)
    if _finished(history, phases, config, data):
        _save_final(student, Path(out_dir), tokenizer, env)
    return history


def finetune_qat(student, data: TokenDataset, config: DistillConfig, out_dir, *, fake_quant,
                 teacher=None, tokenizer=None, env=None, resume=False, stop_after_steps=None,
                 progress=True, run_info=None) -> list[dict]:
    """Quantization-aware fine-tuning with a fake-quantized inhibitor attention.

    ``fake_quant(student) -> student`` swaps the student's attention cores for
    their fake-quantized versions (straight-through estimator); it comes from
    ``inhibitron.quant.qat`` (the model package does not import quant: the
    CLI passes it). The student then trains: on the labels when ``teacher``
    is None (``data`` must be labelled), else on the hidden-state MSE
    against the float ``teacher`` (task-agnostic QAT on text).
    """
    _expect(config, "qat")
    if not callable(fake_quant):
        raise TypeError("fake_quant must be a callable that swaps in the fake-quantized attention")
    env = _prepare(teacher, student, env)
    student = fake_quant(student) or student
    student.to(env.device)
    names = [n for n, _ in student.named_parameters()]
    if teacher is None:
        if data.labels is None:
            raise ValueError("QAT needs labelled data or a teacher to distil from")
        loss = _supervised_loss(student)
    else:
        loss = _full_loss(teacher, student)
    phases = [Phase("qat", None, names, loss)]
    history = train(student, phases, data, config, out_dir, env=env, resume=resume,
                    stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)
    if _finished(history, phases, config, data) and env.is_main:
        from safetensors.torch import save_file

        folder = Path(out_dir) / "student"
        folder.mkdir(parents=True, exist_ok=True)
        student.config.save_pretrained(folder)
        save_file({k: v.detach().contiguous().cpu() for k, v in student.state_dict().items()},
                  str(folder / "model.safetensors"))
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
    return history


def _expect(config: DistillConfig, recipe: str) -> None:
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig, not {type(config).__name__}")
    if config.recipe != recipe:
        raise ValueError(f"config is for recipe {config.recipe!r}; use default_config({recipe!r})")


def _finished(history, phases, config, data) -> bool:
    _, steps = phase_steps(config, len(data))
    return bool(history) and history[-1]["step"] == steps * len(phases)


# ---------------------------------------------------------------------------
# Classification models for the task recipes
# ---------------------------------------------------------------------------


def load_classifier(path: str | os.PathLike, *, num_labels: int | None = None):
    """Load a fine-tuned ``BertForSequenceClassification`` / ``DistilBertForSequenceClassification``
    teacher from a local folder (safetensors only, offline).

    Raises
    ------
    ModelFolderError
        Missing folder, not BERT/DistilBERT, no safetensors, not a sequence
        classifier, or a label count different from ``num_labels``.
    """
    from transformers import AutoModelForSequenceClassification

    folder = Path(path)
    cfg = _check_model_folder(folder)
    archs = cfg.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelFolderError(
            f"{str(folder)!r} is not a fine-tuned sequence classifier (architectures {archs}); "
            "task-specific distillation needs a *ForSequenceClassification teacher"
        )
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True,
                                                               use_safetensors=True)
    if num_labels is not None and model.num_labels != num_labels:
        raise ModelFolderError(f"{str(folder)!r} predicts {model.num_labels} labels, the data has {num_labels}")
    model.eval()
    return model


def classifier_student(source, *, num_labels: int, variant: str = "valid", seed: int = 42):
    """An inhibitor ``*ForSequenceClassification`` student.

    Parameters
    ----------
    source : PreTrainedModel or path-like
        A classifier (teacher) to convert, a base encoder (teacher or
        distilled inhibitor student) to put a fresh head on, or a folder
        saved by ``save_student`` (e.g. ``<run>/student`` of a layer-wise run).
    num_labels : int
        Classes (1 = regression).
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .surgery import INHIBITOR_CONFIG_KEY

    torch.manual_seed(seed)
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        _check_model_folder(folder)
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        state = load_file(str(folder / "model.safetensors"))
    else:
        config = source.config
        state = None
        if hasattr(source, "classifier") and getattr(source, "num_labels", None) == num_labels:
            already = any(hasattr(m, "inhibitor") for _, _, m in attention_modules(source))
            return source if already else to_inhibitor(source, variant=variant)
        state = getattr(source, "base_model", source).state_dict()
    settings = getattr(config, INHIBITOR_CONFIG_KEY, None)
    variant = settings["variant"] if isinstance(settings, dict) else variant
    config = type(config).from_dict({**config.to_dict(), "num_labels": num_labels})
    if hasattr(config, INHIBITOR_CONFIG_KEY):
        delattr(config, INHIBITOR_CONFIG_KEY)
    model = AutoModelForSequenceClassification.from_config(config)
    student = to_inhibitor(model, variant=variant)
    base = student.base_model
    prefix = base.base_model_prefix if hasattr(base, "base_model_prefix") else ""
    clean = {}
    for k, v in state.items():
        if prefix and k.startswith(prefix + "."):
            k = k[len(prefix) + 1 :]
        clean[k] = v
    if settings is None:
        clean = {k: v for k, v in clean.items() if ".inhibitor." not in k}
    missing, unexpected = base.load_state_dict(clean, strict=False)
    missing = [m for m in missing if not (m.endswith("position_ids") or m.startswith("pooler.")
                                          or (settings is None and ".inhibitor." in m))]
    if missing or unexpected:
        raise ModelFolderError(f"encoder weights do not fit the classifier (missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]})")
    return student
