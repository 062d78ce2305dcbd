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


def test_spearman_and_similarity_agreement():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert quality.spearman(a, a * 10 + 3) == pytest.approx(1.0)
    assert quality.spearman(a, -a) == pytest.approx(-1.0)
    # Ties get their average rank: ranks (0.5, 0.5, 2) against (0, 1, 2).
    assert quality.spearman(torch.tensor([1.0, 1.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(
        0.8660254, abs=1e-6)
    with pytest.raises(ValueError, match="equal length >= 2"):
        quality.spearman(a, a[:3])
    e = torch.nn.functional.normalize(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert quality.similarity_agreement(e, e) == {"spearman": pytest.approx(1.0), "nn_top1": 1.0}
    other = torch.nn.functional.normalize(torch.randn(6, 5, generator=torch.Generator().manual_seed(1)), dim=-1)
    r = quality.similarity_agreement(e, other)
    assert -1.0 <= r["spearman"] < 0.99 and 0.0 <= r["nn_top1"] <= 1.0
    assert quality.similarity_agreement(e[:2], e[:2]) == {"spearman": None, "nn_top1": None}


def test_fidelity_reports_relative_errors_and_rank_measures(tok):
    teacher = make_teacher(vocab_size=tok.vocab_size)
    same = quality.fidelity(teacher, teacher, heldout_sentences(6, seed=0), tok, progress=False)
    assert same["spearman"] == pytest.approx(1.0) and same["nn_top1"] == 1.0
    assert same["context_rel_mse"] == [0.0, 0.0] and same["hidden_rel_mse"] == [0.0, 0.0]
    student = to_inhibitor(teacher)
    r = quality.fidelity(teacher, student, heldout_sentences(6, seed=0), tok, progress=False)
    assert all(x > 0 for x in r["context_rel_mse"])
    # Relative = absolute MSE over the teacher's variance of the same tensor.
    t_ctx = []
    enc = tok(heldout_sentences(6, seed=0), padding=True, truncation=True, max_length=128, return_tensors="pt")
    _, ctx = quality._run(teacher, enc["input_ids"], enc["attention_mask"])
    m = enc["attention_mask"].bool()
    for c in ctx:
        v = c[m].double()  # (tokens, D)
        t_ctx.append(float(v.var(dim=0, unbiased=False).mean()))
    assert r["context_rel_mse"] == pytest.approx([a / b for a, b in zip(r["context_mse"], t_ctx)], rel=1e-6)
    assert "Spearman" in quality.fidelity_table({"after": r}).splitlines()[0]


def test_fidelity_keeps_sentence_order_and_bins_cosine_by_length(tok):
    """fidelity batches sentences by length; its per-sentence results (the rank measures, the
    length bins) equal those of embeddings computed one sentence at a time, in the given order."""
    teacher = make_teacher(vocab_size=tok.vocab_size)
    student = to_inhibitor(teacher)
    sents = ["Short one.", " ".join(["word"] * 60), "A middle sized sentence with some more words in it.",
             "Tiny.", " ".join(["other words"] * 12), "Another short sentence here."]
    r = quality.fidelity(teacher, student, sents, tok, batch_size=2, progress=False)
    et = torch.cat([quality.pooled_embeddings(teacher, tok, [s]) for s in sents])
    es = torch.cat([quality.pooled_embeddings(student, tok, [s]) for s in sents])
    cos = (et * es).sum(-1)
    sim = quality.similarity_agreement(et, es)
    assert r["spearman"] == pytest.approx(sim["spearman"], abs=1e-6) and r["nn_top1"] == sim["nn_top1"]
    assert r["cosine_mean"] == pytest.approx(float(cos.mean()), abs=1e-6)
    n_tok = torch.tensor([len(tok(s)["input_ids"]) for s in sents])
    bins = r["cosine_by_length"]
    assert list(bins) == ["<16", "16-47", ">=48"]
    assert sum(b["sentences"] for b in bins.values()) == len(sents)
    for label, lo, hi in quality.LENGTH_BINS:
        sel = (n_tok >= lo) & (n_tok <= (hi if hi is not None else 10**9))
        assert bins[label]["sentences"] == int(sel.sum())
        if int(sel.sum()):
            assert bins[label]["cosine_mean"] == pytest.approx(float(cos[sel].mean()), abs=1e-6)
        else:
            assert bins[label]["cosine_mean"] is None
