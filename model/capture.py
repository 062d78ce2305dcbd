"""Capture the per-layer Q, K, V of a (teacher or student) model on real inputs.

The quantizer calibrates on them, the integer golden model and the RTL are
checked on them. Forward hooks on the Q/K/V projections record their outputs;
nothing in the model changes.
"""

from __future__ import annotations

import torch

from .surgery import attention_modules

__all__ = ["capture_qkv", "tokenize"]


def _projections(mod):
    if hasattr(mod, "query"):
        return mod.query, mod.key, mod.value
    return mod.q_lin, mod.k_lin, mod.v_lin


def _num_heads(mod) -> int:
    return getattr(mod, "num_attention_heads", None) or mod.n_heads


@torch.no_grad()
def capture_qkv(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[dict]:
    """Run ``model`` once and return the attention inputs of every layer.

    Parameters
    ----------
    model : BertModel / DistilBertModel (teacher or inhibitor student)
    input_ids : LongTensor (B, n)
    attention_mask : Tensor (B, n), 1 for real tokens

    Returns
    -------
    list (one per layer, bottom-up) of dicts with
    ``"q"``, ``"k"``, ``"v"``: float tensors (B, H, n, d) and ``"mask"``: bool (B, n).
    """
    records: list[dict] = []
    handles = []
    mask = attention_mask.bool()
    for _, _, mod in attention_modules(model):
        entry: dict = {"mask": mask}
        records.append(entry)
        H = _num_heads(mod)
        for key, lin in zip(("q", "k", "v"), _projections(mod)):

            def hook(_module, _inp, out, entry=entry, key=key, H=H):
                B, n, hd = out.shape
                entry[key] = out.detach().reshape(B, n, H, hd // H).transpose(1, 2).contiguous()

            handles.append(lin.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return records


def tokenize(tokenizer, sentences: list[str], *, max_length: int = 128):
    """Tokenize a batch with padding to the longest sentence (at most ``max_length``)."""
    enc = tokenizer(
        sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return enc["input_ids"], enc["attention_mask"]
