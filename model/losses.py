"""The loss terms of the recipes, and the hooks that reach into one layer of a student.

A loss is a function ``batch -> {name: LossTerm}``; each :class:`LossTerm` is
a **sum** over the local shard, normalised by the training loop over the
global step (valid tokens or sequences), so the loss does not depend on how
the batch is split (:mod:`inhibitron.model.training`). Shapes: ``B``
sequences, ``n`` tokens, ``H`` heads of width ``d``, ``D`` features;
``batch`` holds ``input_ids``/``attention_mask`` (B, n), optionally
``token_type_ids`` (B, n) and ``labels`` (B,).

* :func:`layerwise_loss` (Exp. 1a): tokens; feature-mean squared error between
  teacher and student attention context of one layer, (B, n, H*d);
* :func:`full_loss` (Exp. 1b): tokens; sum over layers of the hidden-state MSE, (B, n, D);
* :func:`task_loss` (Exp. 2): sequences, ``T^2 KL(softmax(t/T) || softmax(s/T))`` of the
  logits (B, C) (squared error when C = 1), plus tokens, the mean over layers of the
  hidden-state MSE;
* :func:`supervised_loss` (Table 6): sequences; cross-entropy of the logits (B, C)
  against ``labels`` (squared error when C = 1).

:func:`fit_eta` is a phase setup (least-squares eta per head before a layer
trains); :func:`layer_trainable_names` names the parameters the layer-wise
recipe trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import ddp
from .distill_config import DistillConfig
from .pooling import mean_pool
from .surgery import attention_modules

__all__ = [
    "DELTA_GRID",
    "GAMMA_GRID",
    "LossTerm",
    "fit_eta",
    "fit_scalars",
    "full_loss",
    "layer_trainable_names",
    "layerwise_loss",
    "model_inputs",
    "supervised_loss",
    "task_loss",
]


@dataclass(frozen=True)
class LossTerm:
    """One term of a loss: ``weight * value_sum / count(kind)`` over the global step.

    ``value_sum`` is a scalar tensor summed over the local shard;
    ``kind`` is ``"tokens"`` (normalised by valid tokens) or ``"sequences"``.
    """

    value_sum: torch.Tensor
    kind: str
    weight: float = 1.0



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
        model(**model_inputs(batch))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return got["ctx"], got.get("in")


def model_inputs(batch: dict) -> dict:
    """The keys of ``batch`` a Hugging Face encoder takes (ids, mask, token types)."""
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _masked_sq_sum(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over valid tokens of the feature-mean squared error: a, b (B, n, D), mask (B, n)."""
    per_token = (a.float() - b.float()).pow(2).mean(dim=-1)  # (B, n)
    return (per_token * mask.to(per_token.dtype)).sum()


def _layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Teacher hidden-state index for each student layer (uniform, last to last)."""
    return [round((i + 1) * n_teacher / n_student) for i in range(n_student)]



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


def layerwise_loss(teacher, student, layer: int, layer_input: str):
    """Loss of layer ``layer`` (Exp. 1a): ``context_mse``, squared error of the attention
    context (B, n, H*d), summed over valid tokens; ``layer_input`` "student" or "teacher"."""
    def loss(batch):
        t_ctx, s_ctx = _layer_contexts(teacher, student, layer, layer_input, batch)
        return {"context_mse": LossTerm(_masked_sq_sum(s_ctx, t_ctx, batch["attention_mask"]), "tokens")}

    return loss


def fit_eta(teacher, student, layer: int, layer_input: str):
    """Phase setup: least-squares eta per head of ``layer`` (the context is linear in eta)."""
    inhib = attention_modules(student)[layer][2].inhibitor

    @torch.no_grad()
    def setup(batches, env):
        H = inhib.num_heads
        acc = torch.zeros(2, H, dtype=torch.float64, device=inhib.eta.device)
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


#: Candidate gamma (score scale) and delta (threshold shift) of :func:`fit_scalars`.
GAMMA_GRID = (0.25, 0.5, 1.0, 2.0, 4.0)
DELTA_GRID = (-4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0)


def fit_scalars(teacher, student, layer: int, layer_input: str):
    """Phase setup: per-head gamma and delta of ``layer`` from a grid, each with its least-squares eta.

    On the phase's first optimizer step of data, the layer's Q/K/V are computed
    once (from the student's or the teacher's hidden state, ``layer_input``);
    for every (gamma, delta) of :data:`GAMMA_GRID` x :data:`DELTA_GRID` the
    inhibitor runs with eta = 1, the least-squares eta of each head follows in
    closed form (the context is linear in eta), and each head keeps the point
    with the smallest squared context error over valid tokens. ``variant="thesis"``
    students (``delta = -relu(alpha)``) try only the deltas <= 0.
    """
    from .surgery import key_mask_from_attention_mask

    mod = attention_modules(student)[layer][2]
    inhib = mod.inhibitor
    q_lin, k_lin, v_lin = (getattr(mod, n) for n in _qkv_names(mod))
    thesis = inhib.variant != "valid"
    deltas = [d for d in DELTA_GRID if d <= 0] if thesis else list(DELTA_GRID)

    @torch.no_grad()
    def setup(batches, env):
        H, d = inhib.num_heads, inhib.head_dim
        cached = []
        for batch in batches:
            t_ctx, t_in = _capture_context(teacher, layer, batch, capture_input=(layer_input == "teacher"))
            if layer_input == "student":
                _, t_in = _capture_context(student, layer, batch, capture_input=True)
            args, kwargs = t_in
            hidden = args[0] if args else kwargs["hidden_states"]
            mask = kwargs["attention_mask"] if "attention_mask" in kwargs else (args[1] if len(args) > 1 else None)
            B, n = hidden.shape[:2]
            q, k, v = (lin(hidden).view(B, n, H, d).transpose(1, 2) for lin in (q_lin, k_lin, v_lin))  # (B, H, n, d)
            key_mask = key_mask_from_attention_mask(mask, B, n, q.device)
            valid = batch["attention_mask"].to(torch.float64)[:, None, :, None]  # (B, 1, n, 1)
            t = t_ctx.double().unflatten(-1, (H, d)).transpose(1, 2) * valid  # (B, H, n, d)
            cached.append((q, k, v, key_mask, valid, t))
        names = ("gamma", "eta", "alpha" if thesis else "delta")
        saved = {nm: getattr(inhib, nm).detach().clone() for nm in names}
        was = inhib.training
        inhib.train(False)
        points = [(g, dl) for g in GAMMA_GRID for dl in deltas]
        stats = torch.zeros(len(points), 3, H, dtype=torch.float64, device=inhib.eta.device)  # t.h, h.h, t.t
        try:
            for i, (g, dl) in enumerate(points):
                inhib.gamma.fill_(g)
                inhib.eta.fill_(1.0)
                (inhib.alpha.fill_(-dl) if thesis else inhib.delta.fill_(dl))
                for q, k, v, key_mask, valid, t in cached:
                    h = inhib(q, k, v, key_mask, check=False).double() * valid  # (B, H, n, d)
                    stats[i, 0] += (t * h).sum(dim=(0, 2, 3))
                    stats[i, 1] += (h * h).sum(dim=(0, 2, 3))
                    stats[i, 2] += (t * t).sum(dim=(0, 2, 3))
        finally:
            inhib.train(was)
            for nm, val in saved.items():
                getattr(inhib, nm).copy_(val)
        stats = ddp.all_reduce_sum(stats, env).cpu()
        th, hh, tt = stats[:, 0], stats[:, 1], stats[:, 2]  # (P, H)
        eta = torch.where(hh > 0, th / hh.clamp_min(1e-300), torch.zeros_like(th))
        err = tt - eta * th  # residual of the least-squares fit, (P, H)
        best = err.argmin(dim=0)  # (H,)
        heads = torch.arange(H)
        gamma = torch.tensor([points[j][0] for j in best.tolist()], dtype=inhib.gamma.dtype)
        delta = torch.tensor([points[j][1] for j in best.tolist()], dtype=inhib.gamma.dtype)
        inhib.gamma.copy_(gamma)
        inhib.eta.copy_(eta[best, heads].to(inhib.eta.dtype))
        (inhib.alpha.copy_(-delta) if thesis else inhib.delta.copy_(delta))
        before = err[points.index((1.0, -0.5)), heads] if (1.0, -0.5) in points else None
        info = {"gamma": gamma.tolist(), "delta": delta.tolist(), "eta": inhib.eta.detach().tolist(),
                "rel_error": (err[best, heads] / tt[0].clamp_min(1e-300)).tolist()}
        if before is not None:
            info["rel_error_at_init"] = (before / tt[0].clamp_min(1e-300)).tolist()
        return info

    return setup


def chain_setups(*setups):
    """One phase setup that runs ``setups`` (None ones skipped) in order and merges their records."""
    setups = [s for s in setups if s is not None]
    if not setups:
        return None
    if len(setups) == 1:
        return setups[0]

    def setup(batches, env):
        info = {}
        for s in setups:
            info.update(s(batches, env) or {})
        return info

    return setup


def _hidden_terms(t_hidden, s_hidden, mask, *, average: bool) -> torch.Tensor:
    t_layers, s_layers = len(t_hidden) - 1, len(s_hidden) - 1
    mapping = _layer_map(s_layers, t_layers)
    total = sum(_masked_sq_sum(s_hidden[i + 1], t_hidden[j], mask) for i, j in enumerate(mapping))
    return total / s_layers if average else total


def _pooled_cosine_sum(pt: torch.Tensor, ps: torch.Tensor) -> torch.Tensor:
    """Sum over sequences of ``1 - cos`` between the teacher's and the student's sentence
    embeddings ``pt``, ``ps`` (B, D), unit rows (:func:`mean_pool` of the last hidden states)."""
    return (1.0 - (ps * pt).sum(-1)).sum()


def _pooled_similarity_sum(pt: torch.Tensor, ps: torch.Tensor) -> torch.Tensor:
    """Sum over sequences i of the mean over j != i of ``(cos_s(i, j) - cos_t(i, j))**2``: the
    cosine similarities within the batch of the sentence embeddings ``pt``, ``ps`` (B, D),
    unit rows (:func:`mean_pool`). 0 for a batch of one."""
    b = pt.shape[0]
    if b < 2:
        return ps.sum() * 0.0
    diff = ps @ ps.T - pt @ pt.T                                                      # (B, B)
    off = 1.0 - torch.eye(b, dtype=diff.dtype, device=diff.device)
    return (diff.pow(2) * off).sum() / (b - 1)


def full_loss(teacher, student, alpha_cos: float = 0.0, alpha_sim: float = 0.0):
    """Loss of Exp. 1b: ``hidden_mse``, the sum over student layers of the hidden-state
    MSE (B, n, D) against the mapped teacher layer, summed over valid tokens; with
    ``alpha_cos > 0`` also ``pooled_cos`` (per sequence, weight ``alpha_cos``): ``1 - cos``
    of the mean-pooled last hidden states, the sentence embedding the model is used for;
    with ``alpha_sim > 0`` also ``pooled_sim`` (per sequence, weight ``alpha_sim``): the
    squared error of the in-batch cosine-similarity structure of those embeddings
    (:func:`_pooled_similarity_sum`; within one process's micro-batch)."""
    def loss(batch):
        inputs = model_inputs(batch)
        with torch.no_grad():
            t = teacher(**inputs, output_hidden_states=True)
        s = student(**inputs, output_hidden_states=True)
        terms = {"hidden_mse": LossTerm(_hidden_terms(t.hidden_states, s.hidden_states,
                                                      batch["attention_mask"], average=False), "tokens")}
        if alpha_cos > 0 or alpha_sim > 0:
            # the sentence embeddings (B, D), pooled once for both terms
            mask = batch["attention_mask"]
            pt = mean_pool(t.hidden_states[-1].float(), mask)
            ps = mean_pool(s.hidden_states[-1].float(), mask)
        if alpha_cos > 0:
            terms["pooled_cos"] = LossTerm(_pooled_cosine_sum(pt, ps), "sequences", alpha_cos)
        if alpha_sim > 0:
            terms["pooled_sim"] = LossTerm(_pooled_similarity_sum(pt, ps), "sequences", alpha_sim)
        return terms

    return loss


def _kd_term(s_logits, t_logits, temperature: float) -> torch.Tensor:
    if s_logits.shape[-1] == 1:  # regression: match the teacher's prediction
        return (s_logits.float() - t_logits.float()).pow(2).sum()
    T = temperature
    return F.kl_div(F.log_softmax(s_logits.float() / T, -1), F.softmax(t_logits.float() / T, -1),
                    reduction="sum") * (T * T)


def task_loss(teacher, student, config: DistillConfig):
    """Loss of Exp. 2: ``kd`` (weight ``alpha_kd``, per sequence) and ``hidden_mse``
    (weight ``alpha_hidden``, the mean over student layers, per token); zero weights drop a term."""
    def loss(batch):
        inputs = model_inputs(batch)
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


def supervised_loss(student):
    """Loss of fine-tuning on ``labels``: ``ce`` (cross-entropy of the logits (B, C)),
    or ``mse`` when the model has one output (regression); per sequence."""
    def loss(batch):
        out = student(**model_inputs(batch))
        labels = batch["labels"]
        if out.logits.shape[-1] == 1:
            v = (out.logits.squeeze(-1).float() - labels.float()).pow(2).sum()
        else:
            v = F.cross_entropy(out.logits.float(), labels, reduction="sum")
        return {"ce" if out.logits.shape[-1] > 1 else "mse": LossTerm(v, "sequences")}

    return loss
