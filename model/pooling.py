"""Sentence embeddings of an encoder and the teacher-vs-student similarity.

all-MiniLM-L6-v2 embeds a sentence as the mean of its token states over
valid tokens, L2-normalised; that is the pooled embedding compared here.
"""

from __future__ import annotations

import torch

__all__ = ["mean_pool", "embed", "pairwise_cosine"]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, n, C) over valid tokens of ``attention_mask`` (B, n), L2-normalised -> (B, C)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, n, 1)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


@torch.no_grad()
def embed(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Pooled, normalised sentence embeddings (B, C) of an encoder in eval mode."""
    was_training = model.training
    model.eval()
    try:
        hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    finally:
        model.train(was_training)
    return mean_pool(hidden, attention_mask)


def pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of matching rows of two (B, C) embedding batches -> (B,)."""
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)
