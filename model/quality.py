"""Quality measures: how closely a student follows its teacher, and task accuracy.

:func:`fidelity` compares a teacher and a student on real sentences:

* **cosine of pooled embeddings** — each model's last hidden state is
  mean-pooled over the valid (non-padding) tokens and L2-normalised (the
  sentence embedding of all-MiniLM-L6-v2); the cosine between teacher and
  student embeddings is averaged over sentences (1.0 = identical directions);
* **per-layer hidden-state MSE** — the mean squared difference of the hidden
  states after each layer, over valid tokens and features;
* **per-layer attention-context MSE** — the same for the self-attention
  context (before the output projection): what layer-wise distillation fits;
* **relative MSEs** (``context_rel_mse``, ``hidden_rel_mse``) — each MSE
  divided by the teacher's variance of that tensor (over valid tokens, per
  feature around its mean, averaged over features): 0 is a perfect fit, 1
  explains nothing (the absolute MSE hides that the teacher's context
  variance is itself only 0.03-0.08 on MiniLM);
* **Spearman of the similarity matrices** (``spearman``) — rank correlation
  between the teacher's and the student's pairwise cosine similarities of
  the sentences (upper triangle): how the model is used for search and
  clustering;
* **nearest-neighbour agreement** (``nn_top1``) — the share of sentences
  whose nearest other sentence is the same under both models.

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

__all__ = ["accuracy", "fidelity", "fidelity_table", "pooled_embeddings", "similarity_agreement", "spearman"]


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


def _device(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def _run(model, input_ids, attention_mask, token_type_ids=None):
    """(hidden states, contexts) of ``model`` on a batch, brought back to the CPU (float32)."""
    ctx: list = []
    handles = _contexts_hooks(model, ctx)
    dev = _device(model)
    try:
        kw = {"input_ids": input_ids.to(dev), "attention_mask": attention_mask.to(dev)}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids.to(dev)
        out = _base(model)(**kw, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    ctx.sort(key=lambda x: x[0])
    return [h.float().cpu() for h in out.hidden_states], [c.float().cpu() for _, c in ctx]


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
            dev = _device(model)
            h = _base(model)(input_ids=enc["input_ids"].to(dev),
                             attention_mask=enc["attention_mask"].to(dev)).last_hidden_state
            out.append(_mean_pool(h.float().cpu(), enc["attention_mask"]))
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
        ``spearman``, ``nn_top1`` (float; None below 3 sentences, see :func:`similarity_agreement`),
        ``hidden_mse`` (list, one per layer, bottom-up), ``hidden_mse_mean``,
        ``hidden_rel_mse`` (list: MSE over the teacher's variance),
        ``context_mse``, ``context_rel_mse`` (lists, one per layer),
        ``cosine_by_length`` (dict: for each bin of :data:`LENGTH_BINS`, the valid
        tokens of a sentence at ``max_length``, ``sentences`` and ``cosine_mean``,
        None for an empty bin).
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
    lengths: list[torch.Tensor] = []
    emb_t: list[torch.Tensor] = []
    emb_s: list[torch.Tensor] = []
    h_sum = torch.zeros(n_t, dtype=torch.float64)
    c_sum = torch.zeros(n_t, dtype=torch.float64)
    h_var = [_Moments() for _ in range(n_t)]  # the teacher's statistics per layer
    c_var = [_Moments() for _ in range(n_t)]
    count = 0.0
    # Batches of sentences of similar length (less padding, the same results up to float rounding);
    # the per-sentence results are put back in the given order below.
    n_tokens = [len(x) for x in tokenizer(list(sentences), truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(sentences)), key=lambda i: n_tokens[i])
    try:
        for s in tqdm(range(0, len(sentences), batch_size), desc="fidelity", disable=not progress, unit="batch"):
            enc = tokenizer([sentences[i] for i in order[s : s + batch_size]], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]
            t_h, t_c = _run(teacher, ids, mask)
            s_h, s_c = _run(student, ids, mask)
            if t_h[-1].shape != s_h[-1].shape:
                raise ValueError(f"teacher and student hidden states differ in shape: "
                                 f"{tuple(t_h[-1].shape)} vs {tuple(s_h[-1].shape)}")
            et, es = _mean_pool(t_h[-1], mask), _mean_pool(s_h[-1], mask)
            emb_t.append(et)
            emb_s.append(es)
            cos.append((et * es).sum(-1))
            lengths.append(mask.sum(-1))
            m = mask.to(torch.float64)
            count += float(m.sum())
            for i in range(n_t):
                h_sum[i] += float(((t_h[i + 1].double() - s_h[i + 1].double()).pow(2).mean(-1) * m).sum())
                c_sum[i] += float(((t_c[i].double() - s_c[i].double()).pow(2).mean(-1) * m).sum())
                h_var[i].add(t_h[i + 1], mask)
                c_var[i].add(t_c[i], mask)
    finally:
        teacher.train(modes[0])
        student.train(modes[1])
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))  # sorted position of each given sentence
    c = torch.cat(cos)[back]
    n_tok = torch.cat(lengths)[back]
    hidden = (h_sum / count).tolist()
    context = (c_sum / count).tolist()
    sim = similarity_agreement(torch.cat(emb_t)[back], torch.cat(emb_s)[back])
    return {
        "sentences": len(sentences),
        "cosine_mean": float(c.mean()),
        "cosine_min": float(c.min()),
        "cosine_median": float(c.median()),
        "spearman": sim["spearman"],
        "nn_top1": sim["nn_top1"],
        "hidden_mse": hidden,
        "hidden_mse_mean": float(sum(hidden) / len(hidden)),
        "hidden_rel_mse": [x / max(v.variance(), 1e-30) for x, v in zip(hidden, h_var)],
        "context_mse": context,
        "context_rel_mse": [x / max(v.variance(), 1e-30) for x, v in zip(context, c_var)],
        "cosine_by_length": _by_length(c, n_tok),
    }


#: Token-count bins of ``cosine_by_length``: (label, lowest, highest) valid tokens, [CLS]/[SEP] included.
LENGTH_BINS = (("<16", 1, 15), ("16-47", 16, 47), (">=48", 48, None))


def _by_length(cos: torch.Tensor, tokens: torch.Tensor) -> dict:
    """Mean cosine (and count) per :data:`LENGTH_BINS` bin; ``cos`` and ``tokens`` shaped (S,)."""
    out = {}
    for label, lo, hi in LENGTH_BINS:
        sel = (tokens >= lo) & (tokens <= hi) if hi is not None else tokens >= lo
        k = int(sel.sum())
        out[label] = {"sentences": k, "cosine_mean": float(cos[sel].mean()) if k else None}
    return out


class _Moments:
    """Running per-feature sums over valid tokens, for the teacher's variance of a tensor."""

    def __init__(self):
        self.n = 0.0
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def add(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        """x (B, n, D), mask (B, n)."""
        m = mask.to(torch.float64).unsqueeze(-1)
        x = x.double() * m
        s1, s2 = x.sum(dim=(0, 1)), x.pow(2).sum(dim=(0, 1))  # (D,)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += float(m.sum())

    def variance(self) -> float:
        """Mean over features of the variance over valid tokens."""
        if self.s1 is None or self.n == 0:
            return 0.0
        mean = self.s1 / self.n
        return float((self.s2 / self.n - mean.pow(2)).clamp_min(0).mean())


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..N-1 of a 1-D tensor, ties given their average rank."""
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    values, inverse = torch.unique(x, return_inverse=True)
    if len(values) < len(x):  # average the ranks of tied values
        sums = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, ranks)
        counts = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
        ranks = (sums / counts)[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors of equal length (>= 2).

    >>> round(spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 30.0, 20.0])), 6)
    0.5
    """
    if a.shape != b.shape or a.dim() != 1 or len(a) < 2:
        raise ValueError(f"spearman needs two 1-D tensors of equal length >= 2, got {tuple(a.shape)}, {tuple(b.shape)}")
    ra, rb = _ranks(a.double()), _ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else 0.0


def similarity_agreement(emb_t: torch.Tensor, emb_s: torch.Tensor) -> dict:
    """How far two sets of L2-normalised embeddings (N, D) of the same sentences rank them alike.

    Returns ``spearman`` (rank correlation of the two pairwise cosine-similarity
    matrices, upper triangle) and ``nn_top1`` (share of sentences whose nearest
    other sentence is the same in both); both None for fewer than 3 sentences.
    """
    n = emb_t.shape[0]
    if n < 3:
        return {"spearman": None, "nn_top1": None}
    st, ss = emb_t.double() @ emb_t.double().T, emb_s.double() @ emb_s.double().T  # (N, N)
    iu = torch.triu_indices(n, n, offset=1)
    rho = spearman(st[iu[0], iu[1]], ss[iu[0], iu[1]])
    eye = torch.eye(n, dtype=torch.bool)
    nn_t = st.masked_fill(eye, -torch.inf).argmax(-1)
    nn_s = ss.masked_fill(eye, -torch.inf).argmax(-1)
    return {"spearman": rho, "nn_top1": float((nn_t == nn_s).double().mean())}


def fidelity_table(rows: dict[str, dict]) -> str:
    """A Markdown table of several :func:`fidelity` results (one row per stage)."""
    if not rows:
        return ""
    n = len(next(iter(rows.values()))["hidden_mse"])
    head = ("| stage | cosine mean | cosine min | Spearman | NN top-1 | hidden MSE (mean) | "
            + " | ".join(f"ctx rel. MSE L{i}" for i in range(n)) + " |")
    sep = "|" + "---|" * (6 + n)
    lines = [head, sep]

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for name, r in rows.items():
        rel = r.get("context_rel_mse") or [None] * n
        lines.append(
            f"| {name} | {r['cosine_mean']:.4f} | {r['cosine_min']:.4f} | {fmt(r.get('spearman'), '.4f')} | "
            f"{fmt(r.get('nn_top1'), '.3f')} | {r['hidden_mse_mean']:.4g} | "
            + " | ".join(fmt(v, ".3g") for v in rel) + " |"
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
