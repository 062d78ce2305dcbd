"""Quality measures: how closely a student follows its teacher, and task accuracy.

:func:`fidelity` compares a teacher and a student on real sentences:

* **cosine of pooled embeddings** — each model's last hidden state is
  mean-pooled over the valid (non-padding) tokens and L2-normalised (the
  sentence embedding of all-MiniLM-L6-v2); the cosine between teacher and
  student embeddings is averaged over sentences (1.0 = identical directions);
* **per-layer hidden-state MSE** — the mean squared difference of the hidden
  states after each layer, over valid tokens and features;
* **per-layer attention-context MSE** — the same for the self-attention
  context (before the output projection): what layer-wise distillation fits.

The student may be any model with the teacher's interface: a float inhibitor
student, one with fake-quantized attention, or one that runs the integer
golden model (the int8 measurement of the demo). :func:`accuracy` scores a
sequence classifier on labelled data.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .data import TokenDataset
from .surgery import attention_modules

__all__ = ["accuracy", "fidelity", "fidelity_table", "pooled_embeddings"]


def _base(model):
    return getattr(model, "base_model", model)


def _contexts_hooks(model, store: list):
    """Hooks that append each layer's attention context (B, n, H*d) to ``store``, bottom-up."""
    handles = []
    for i, (_, _, mod) in enumerate(attention_modules(model)):
        if hasattr(mod, "out_lin"):
            handles.append(mod.out_lin.register_forward_pre_hook(
                lambda m, a, i=i: store.append((i, a[0].detach()))))
        else:
            handles.append(mod.register_forward_hook(
                lambda m, a, out, i=i: store.append((i, out[0].detach()))))
    return handles


@torch.no_grad()
def _run(model, input_ids, attention_mask, token_type_ids=None):
    ctx: list = []
    handles = _contexts_hooks(model, ctx)
    try:
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        out = _base(model)(**kw, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    ctx.sort(key=lambda x: x[0])
    return out.hidden_states, [c for _, c in ctx]


def _mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, n, D), (B, n) -> L2-normalised mean over valid tokens (B, D)."""
    m = mask.to(h.dtype).unsqueeze(-1)
    pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(pooled.double(), dim=-1)


@torch.no_grad()
def pooled_embeddings(model, tokenizer, sentences: Sequence[str], *, batch_size: int = 16,
                      max_length: int = 128) -> torch.Tensor:
    """Sentence embeddings (N, D) float64: mean-pooled last hidden state, L2-normalised."""
    out = []
    was = model.training
    model.eval()
    try:
        for s in range(0, len(sentences), batch_size):
            enc = tokenizer(list(sentences[s : s + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            h = _base(model)(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            out.append(_mean_pool(h, enc["attention_mask"]))
    finally:
        model.train(was)
    return torch.cat(out)


@torch.no_grad()
def fidelity(teacher, student, sentences: Sequence[str], tokenizer, *, batch_size: int = 16,
             max_length: int = 128, progress: bool = True) -> dict:
    """Teacher-vs-student fidelity on real sentences.

    Parameters
    ----------
    teacher, student : BERT/DistilBERT models (or task models built on them)
        with the same number of layers and hidden size.
    sentences : sequence of str
        Held-out text (e.g. :func:`inhibitron.model.data.heldout_sentences`).
    tokenizer : the teacher's tokenizer.
    batch_size, max_length : int
        Batching of the measurement (results do not depend on them beyond float rounding).

    Returns
    -------
    dict with
        ``sentences`` (int), ``cosine_mean``, ``cosine_min``, ``cosine_median`` (float),
        ``hidden_mse`` (list, one per layer, bottom-up), ``hidden_mse_mean``,
        ``context_mse`` (list, one per layer).
    """
    from tqdm.auto import tqdm

    if not sentences:
        raise ValueError("fidelity needs at least one sentence")
    n_t, n_s = len(attention_modules(teacher)), len(attention_modules(student))
    if n_t != n_s:
        raise ValueError(f"teacher has {n_t} layers, student {n_s}: per-layer fidelity needs equal depth")
    modes = (teacher.training, student.training)
    teacher.eval()
    student.eval()
    cos: list[torch.Tensor] = []
    h_sum = torch.zeros(n_t, dtype=torch.float64)
    c_sum = torch.zeros(n_t, dtype=torch.float64)
    count = 0.0
    try:
        for s in tqdm(range(0, len(sentences), batch_size), desc="fidelity", disable=not progress, unit="batch"):
            enc = tokenizer(list(sentences[s : s + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]
            t_h, t_c = _run(teacher, ids, mask)
            s_h, s_c = _run(student, ids, mask)
            if t_h[-1].shape != s_h[-1].shape:
                raise ValueError(f"teacher and student hidden states differ in shape: "
                                 f"{tuple(t_h[-1].shape)} vs {tuple(s_h[-1].shape)}")
            cos.append((_mean_pool(t_h[-1], mask) * _mean_pool(s_h[-1], mask)).sum(-1))
            m = mask.to(torch.float64)
            count += float(m.sum())
            for i in range(n_t):
                h_sum[i] += float(((t_h[i + 1].double() - s_h[i + 1].double()).pow(2).mean(-1) * m).sum())
                c_sum[i] += float(((t_c[i].double() - s_c[i].double()).pow(2).mean(-1) * m).sum())
    finally:
        teacher.train(modes[0])
        student.train(modes[1])
    c = torch.cat(cos)
    hidden = (h_sum / count).tolist()
    return {
        "sentences": len(sentences),
        "cosine_mean": float(c.mean()),
        "cosine_min": float(c.min()),
        "cosine_median": float(c.median()),
        "hidden_mse": hidden,
        "hidden_mse_mean": float(sum(hidden) / len(hidden)),
        "context_mse": (c_sum / count).tolist(),
    }


def fidelity_table(rows: dict[str, dict]) -> str:
    """A Markdown table of several :func:`fidelity` results (one row per stage)."""
    if not rows:
        return ""
    n = len(next(iter(rows.values()))["hidden_mse"])
    head = ("| stage | cosine mean | cosine min | hidden MSE (mean) | "
            + " | ".join(f"ctx MSE L{i}" for i in range(n)) + " |")
    sep = "|" + "---|" * (4 + n)
    lines = [head, sep]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['cosine_mean']:.4f} | {r['cosine_min']:.4f} | {r['hidden_mse_mean']:.4g} | "
            + " | ".join(f"{v:.3g}" for v in r["context_mse"]) + " |"
        )
    return "\n".join(lines)


@torch.no_grad()
def accuracy(model, data: TokenDataset, *, batch_size: int = 32, progress: bool = True) -> dict:
    """Accuracy of a sequence classifier on labelled data (Pearson r for regression).

    Returns
    -------
    dict with ``examples`` and ``accuracy`` (classification) or ``pearson`` (regression).
    """
    from tqdm.auto import tqdm

    if data.labels is None:
        raise ValueError("accuracy needs labelled data")
    was = model.training
    model.eval()
    preds, labels = [], []
    try:
        for s in tqdm(range(0, len(data), batch_size), desc="accuracy", disable=not progress, unit="batch"):
            batch = data.collate(list(range(s, min(s + batch_size, len(data)))))
            lab = batch.pop("labels")
            logits = model(**batch).logits
            preds.append(logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1))
            labels.append(lab)
    finally:
        model.train(was)
    p, y = torch.cat(preds), torch.cat(labels)
    if p.dtype.is_floating_point and y.dtype.is_floating_point:
        pc, yc = p.double() - p.double().mean(), y.double() - y.double().mean()
        r = float((pc * yc).sum() / (pc.norm() * yc.norm()).clamp_min(1e-30))
        return {"examples": len(y), "pearson": r}
    return {"examples": len(y), "accuracy": float((p == y).double().mean())}
