"""Shared fixtures of the quant tests.

``minilm_layers``: real Q/K/V of every layer of the embedded MiniLM teacher
(all-MiniLM-L6-v2) on a few real English sentences of the embedded corpus,
captured once per session with the model package's own API and converted to
float64 numpy: a list of 6 dicts ``{"q","k","v": (B, 12, n, 32), "mask": (B, n)}``.

``student`` / ``exported``: a tiny BERT student and its quantized checkpoint
(every default format), once per test module (``export_fixtures.py``).
"""

from __future__ import annotations

import pytest

#: Sentences and tokens of the real-MiniLM fixture: small enough for the 3-minute budget.
MINILM_SENTENCES = 4
MINILM_MAX_TOKENS = 48


@pytest.fixture(scope="session")
def minilm_layers():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from inhibitron.model.capture import capture_qkv, tokenize
    from inhibitron.model.corpus import embedded_sentences
    from inhibitron.model.surgery import load_teacher

    model, tokenizer = load_teacher()
    ids, attention_mask = tokenize(tokenizer, embedded_sentences(MINILM_SENTENCES, seed=0),
                                   max_length=MINILM_MAX_TOKENS)
    layers = []
    for rec in capture_qkv(model, ids, attention_mask):
        layers.append({
            "q": rec["q"].double().numpy(),
            "k": rec["k"].double().numpy(),
            "v": rec["v"].double().numpy(),
            "mask": rec["mask"].numpy().astype(bool),
        })
    assert len(layers) == 6 and layers[0]["q"].shape[1:2] == (12,) and layers[0]["q"].shape[-1] == 32
    assert not layers[0]["mask"].all(), "the fixture should contain padding"
    return layers


@pytest.fixture(scope="module")
def student():
    """A tiny "distilled" BERT student (export_fixtures.tiny_student)."""
    pytest.importorskip("torch")
    from export_fixtures import tiny_student

    return tiny_student()


@pytest.fixture(scope="module")
def exported(student, tmp_path_factory):
    """``(path, calibration)`` of the tiny student exported with every default format."""
    from export_fixtures import SEQ, inputs

    from inhibitron.quant.export import export_student

    ids, am = inputs()
    out = tmp_path_factory.mktemp("ckpt") / "model_q8"
    path, cal = export_student(student, out, input_ids=ids, attention_mask=am, seq_len=SEQ)
    return path, cal
