"""Tiny random BERT/DistilBERT teachers, classifiers and token datasets, shared by the tests.

Imported as ``from tiny_models import ...`` (``tests/`` is on ``sys.path``
under pytest: ``tests/conftest.py`` puts it there). Models have 2 layers,
4 heads, hidden size 32 and a 97-token vocabulary ([PAD]=0, [CLS]=1,
[SEP]=2), no dropout; importing this module sets torch to one thread.
"""

from __future__ import annotations

import random

import torch

torch.set_num_threads(1)

#: Full-batch training (one global batch = the whole data set): the loss of
#: each step is the same objective, so "lowers its loss" is deterministic.
FULL_BATCH = {"epochs": 100.0, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.0, "schedule": "constant",
              "checkpoint_every": 0}


def tiny_bert_config(**kw):
    from transformers import BertConfig

    base = {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0, "initializer_range": 0.2, "pad_token_id": 0}
    base.update(kw)
    return BertConfig(**base)


def tiny_distilbert_config(**kw):
    from transformers import DistilBertConfig

    base = {"vocab_size": 97, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64,
            "max_position_embeddings": 64, "dropout": 0.0, "attention_dropout": 0.0, "initializer_range": 0.2,
            "pad_token_id": 0}
    base.update(kw)
    return DistilBertConfig(**base)


def make_teacher(kind: str = "bert", seed: int = 0, **kw):
    from transformers import BertModel, DistilBertModel

    torch.manual_seed(seed)
    if kind == "bert":
        return BertModel(tiny_bert_config(**kw)).eval()
    return DistilBertModel(tiny_distilbert_config(**kw)).eval()


def make_classifier(kind: str = "bert", num_labels: int = 2, seed: int = 0, **kw):
    from transformers import (
        BertForSequenceClassification,
        DistilBertForSequenceClassification,
    )

    torch.manual_seed(seed)
    if kind == "bert":
        return BertForSequenceClassification(tiny_bert_config(num_labels=num_labels, **kw)).eval()
    return DistilBertForSequenceClassification(tiny_distilbert_config(num_labels=num_labels, **kw)).eval()


def random_tokens(n: int, seed: int = 0, *, min_len: int = 5, max_len: int = 20, labels: int | None = None):
    """A TokenDataset of ``n`` random sequences ([CLS]=1 ... [SEP]=2, ids 3..96)."""
    from inhibitron.model.data import TokenDataset

    rng = random.Random(seed)
    ids = []
    for _ in range(n):
        L = rng.randint(min_len, max_len)
        ids.append([1] + [rng.randint(3, 96) for _ in range(L - 2)] + [2])
    lab = [rng.randint(0, labels - 1) for _ in range(n)] if labels else None
    return TokenDataset(ids, None, lab, 0)


def assert_eta_is_least_squares(teacher, student, first_loss: float, data) -> None:
    """Layer 0's fitted eta is a least-squares optimum of the context MSE on *data*.

    *first_loss* is the first logged loss of a one-step, lr ~ 0 layer-wise run
    on *data* (the MSE right after the fit); scaling any head's eta by 0.9 or
    1.1 must raise it.
    """
    import pytest

    from inhibitron.model.losses import layerwise_loss
    from inhibitron.model.surgery import attention_modules

    batch = data.collate(list(range(len(data))))
    loss_fn = layerwise_loss(teacher, student, 0, "student")
    inhib = attention_modules(student)[0][2].inhibitor
    count = float(data.lengths(range(len(data))))

    def mse():
        with torch.no_grad():
            return float(loss_fn(batch)["context_mse"].value_sum) / count

    best = mse()
    assert best == pytest.approx(first_loss, rel=1e-5)
    for h in range(inhib.num_heads):
        for f in (0.9, 1.1):
            with torch.no_grad():
                inhib.eta[h] *= f
            assert mse() > best
            with torch.no_grad():
                inhib.eta[h] /= f
