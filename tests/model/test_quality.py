"""Fidelity (pooled-embedding cosine, per-layer MSEs) and accuracy."""

from __future__ import annotations

import pytest
import torch

from inhibitron.model import quality
from inhibitron.model.data import heldout_sentences
from inhibitron.model.surgery import load_teacher, to_inhibitor

from tiny_models import make_classifier, make_teacher, random_tokens


@pytest.fixture(scope="module")
def tok():
    return load_teacher(tokenizer=True)[1]


def test_fidelity_of_a_model_with_itself_is_perfect(tok):
    teacher = make_teacher(vocab_size=tok.vocab_size)
    sents = heldout_sentences(6, seed=0)
    r = quality.fidelity(teacher, teacher, sents, tok, batch_size=4, progress=False)
    assert r["sentences"] == 6
    assert r["cosine_mean"] == pytest.approx(1.0, abs=1e-9) and r["cosine_min"] == pytest.approx(1.0, abs=1e-9)
    assert r["hidden_mse"] == [0.0, 0.0] and r["context_mse"] == [0.0, 0.0]


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_fidelity_of_an_untrained_student(kind, tok):
    teacher = make_teacher(kind, vocab_size=tok.vocab_size)
    student = to_inhibitor(teacher)
    sents = heldout_sentences(5, seed=0)
    r = quality.fidelity(teacher, student, sents, tok, batch_size=2, progress=False)
    assert r["cosine_mean"] < 0.999
    assert all(x > 0 for x in r["context_mse"]) and len(r["hidden_mse"]) == 2
    assert r["hidden_mse_mean"] == pytest.approx(sum(r["hidden_mse"]) / 2)
    # Batching does not change the measure (beyond float rounding).
    r2 = quality.fidelity(teacher, student, sents, tok, batch_size=5, progress=False)
    assert r2["cosine_mean"] == pytest.approx(r["cosine_mean"], abs=1e-6)
    assert r2["context_mse"] == pytest.approx(r["context_mse"], rel=1e-5)
    table = quality.fidelity_table({"before": r, "after": r2})
    assert table.splitlines()[0].startswith("| stage | cosine mean") and "| before |" in table


def test_fidelity_errors(tok):
    teacher = make_teacher(vocab_size=tok.vocab_size)
    deeper = make_teacher(vocab_size=tok.vocab_size, num_hidden_layers=3)
    with pytest.raises(ValueError, match="teacher has 2 layers, student 3"):
        quality.fidelity(teacher, to_inhibitor(deeper), ["A sentence."], tok, progress=False)
    with pytest.raises(ValueError, match="at least one sentence"):
        quality.fidelity(teacher, teacher, [], tok, progress=False)


def test_pooled_embeddings_are_unit_vectors(tok):
    e = quality.pooled_embeddings(make_teacher(vocab_size=tok.vocab_size), tok, ["One.", "Two words here."])
    assert e.shape == (2, 32) and torch.allclose(e.norm(dim=-1), torch.ones(2, dtype=e.dtype))


def test_accuracy():
    model = make_classifier(num_labels=3)
    data = random_tokens(10, labels=3)
    r = quality.accuracy(model, data, batch_size=4, progress=False)
    with torch.no_grad():
        b = data.collate(list(range(10)))
        labels = b.pop("labels")
        expected = float((model(**b).logits.argmax(-1) == labels).double().mean())
    assert r == {"examples": 10, "accuracy": pytest.approx(expected)}
    with pytest.raises(ValueError, match="accuracy needs labelled data"):
        quality.accuracy(model, random_tokens(4), progress=False)
