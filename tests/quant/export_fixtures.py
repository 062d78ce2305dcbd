"""Shared helpers of the checkpoint/export tests: a tiny student, its inputs, file snapshots."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

from inhibitron.model.surgery import iter_inhibitors, to_inhibitor

SEQ = 16


def tiny_student(kind="bert", seed=0):
    torch.manual_seed(seed)
    if kind == "bert":
        cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)
        base = BertModel(cfg)
    else:
        cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                               max_position_embeddings=64)
        base = DistilBertModel(cfg)
    student = to_inhibitor(base.eval())
    with torch.no_grad():  # a "distilled" student: milder inhibition than the initial values
        for _, m in iter_inhibitors(student):
            m.gamma.uniform_(0.25, 0.35)
            m.delta.uniform_(-0.3, 0.0)
    return student


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (4, 12), generator=g)
    am = torch.ones(4, 12, dtype=torch.long)
    am[1, 8:] = 0
    am[2, 3:] = 0
    return ids, am


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_nothing_left(parent: Path, before: set):
    assert set(os.listdir(parent)) == before, f"left behind: {set(os.listdir(parent)) - before}"
