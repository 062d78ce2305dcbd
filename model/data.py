"""Training data for the distillation recipes: token batches from text, labelled tasks.

Two kinds of data feed :mod:`inhibitron.model.distill`:

* **unlabelled text** (task-agnostic distillation, Exp. 1a/1b): paragraphs of
  a corpus (:func:`inhibitron.model.corpus.load_corpus`: the embedded
  ``pydoc_data.topics`` prose by default, a text file, a folder of ``.txt``
  files or a local ``datasets`` folder) are tokenized and cut into windows of
  at most ``max_length`` tokens (:func:`text_dataset`). A deterministic
  held-out split (:func:`split_heldout`) keeps the text the quality measures
  use out of training.
* **labelled tasks** (task-specific distillation, fine-tuning): GLUE ``.tsv``
  files in their published column layouts (:data:`GLUE_TASKS`) and IMDb
  folders (``pos/*.txt``, ``neg/*.txt``), read from local paths
  (:func:`load_labelled`). Malformed files raise :class:`LabelledDataError`
  naming the file and line.

A :class:`TokenDataset` holds unpadded token lists; :meth:`TokenDataset.collate`
pads a selection of them into tensors. Batch order is a pure function of
``(seed, phase, epoch)`` (:func:`epoch_permutation`), which is what makes
resumed and data-parallel runs reproduce an uninterrupted single-process run.
"""

from __future__ import annotations

import csv
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .corpus import CorpusError, embedded_paragraphs, load_corpus
from .distill_config import TEXT_UNITS

__all__ = [
    "GLUE_TASKS",
    "GlueLayout",
    "LabelledDataError",
    "LabelledExample",
    "SENTENCE_SPLIT",
    "TEXT_UNITS",
    "TokenDataset",
    "epoch_permutation",
    "eval_sentences",
    "heldout_sentences",
    "labelled_dataset",
    "load_labelled",
    "read_glue_tsv",
    "read_imdb_folder",
    "split_heldout",
    "text_dataset",
]


class LabelledDataError(ValueError):
    """A labelled-task file or folder is missing or not in the expected format."""


# ---------------------------------------------------------------------------
# Labelled tasks
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledExample:
    """One labelled example: a sentence (or pair) and its label.

    ``label`` is a class index (int) or, for regression tasks (STS-B), a float.
    """

    text: str
    text_pair: str | None
    label: int | float


@dataclass(frozen=True)
class GlueLayout:
    """Column layout of a GLUE ``.tsv`` file (train/dev splits).

    Columns are named by header (``header=True``) or by 0-based index.
    """

    header: bool  # the first line names the columns
    text: str | int  # column of the (first) sentence
    pair: str | int | None  # column of the second sentence, None for single-sentence tasks
    label: str | int  # column of the label
    label_names: tuple[str, ...] | None = None  # string labels in class-index order; None = integers
    regression: bool = False  # float label (STS-B)

    @property
    def num_labels(self) -> int:
        """Number of classes (1 for regression)."""
        if self.regression:
            return 1
        return len(self.label_names) if self.label_names else 2


#: The GLUE tasks and the column layouts of their ``train.tsv`` / ``dev.tsv``
#: (the files of the GLUE distribution, https://gluebenchmark.com/tasks).
GLUE_TASKS: dict[str, GlueLayout] = {
    "cola": GlueLayout(header=False, text=3, pair=None, label=1),
    "sst2": GlueLayout(header=True, text="sentence", pair=None, label="label"),
    "mrpc": GlueLayout(header=True, text="#1 String", pair="#2 String", label="Quality"),
    "qqp": GlueLayout(header=True, text="question1", pair="question2", label="is_duplicate"),
    "stsb": GlueLayout(header=True, text="sentence1", pair="sentence2", label="score", regression=True),
    "mnli": GlueLayout(header=True, text="sentence1", pair="sentence2", label="gold_label",
                       label_names=("contradiction", "entailment", "neutral")),
    "qnli": GlueLayout(header=True, text="question", pair="sentence", label="label",
                       label_names=("entailment", "not_entailment")),
    "rte": GlueLayout(header=True, text="sentence1", pair="sentence2", label="label",
                      label_names=("entailment", "not_entailment")),
    "wnli": GlueLayout(header=True, text="sentence1", pair="sentence2", label="label"),
}

_TASK_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli"}


def _task_name(task: str | None, path: Path) -> str:
    name = task
    if name is None:
        # GLUE unpacks to folders named after the task (SST-2/, CoLA/, ...).
        name = path.parent.name
    key = _TASK_ALIASES.get(name.lower(), name.lower())
    if key not in GLUE_TASKS:
        hint = "" if task is not None else f" (guessed from the folder name {path.parent.name!r})"
        raise LabelledDataError(
            f"unknown GLUE task {name!r}{hint}; pass one of: {', '.join(sorted(GLUE_TASKS))}"
        )
    return key


def read_glue_tsv(path: str | os.PathLike, task: str | None = None) -> list[LabelledExample]:
    """Read a GLUE ``train.tsv``/``dev.tsv`` file.

    Parameters
    ----------
    path : path-like
        The ``.tsv`` file.
    task : str, optional
        One of :data:`GLUE_TASKS` (``"sst2"``, ``"cola"``, ``"mrpc"``, ...;
        ``"SST-2"`` also works). Default: the name of the file's folder.

    Raises
    ------
    LabelledDataError
        Missing file, unknown task, missing header columns, a line with too
        few columns or a bad label (the message names the file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise LabelledDataError(f"labelled file {str(p)!r} does not exist")
    key = _task_name(task, p)
    layout = GLUE_TASKS[key]
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise LabelledDataError(f"{p}: not UTF-8 text ({exc})") from None
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    start = 0
    cols: dict[str | int, int] = {}
    if layout.header:
        if not rows:
            raise LabelledDataError(f"{p}: empty file, expected a {key} header line")
        head = rows[0]
        for c in (layout.text, layout.pair, layout.label):
            if c is None:
                continue
            if c not in head:
                raise LabelledDataError(
                    f"{p}:1: header has no column {c!r} expected for GLUE task {key} "
                    f"(found columns {head}); is this the right --task?"
                )
            cols[c] = head.index(c)
        start = 1
    else:
        for c in (layout.text, layout.pair, layout.label):
            if c is not None:
                cols[c] = int(c)
    need = max(cols.values()) + 1
    examples: list[LabelledExample] = []
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if not row or all(not x.strip() for x in row):
            continue
        if len(row) < need:
            raise LabelledDataError(
                f"{p}:{lineno}: {len(row)} tab-separated columns, GLUE task {key} needs at least {need}"
            )
        raw = row[cols[layout.label]].strip()
        label: int | float
        try:
            if layout.regression:
                label = float(raw)
            elif layout.label_names:
                label = layout.label_names.index(raw)
            else:
                label = int(raw)
                if not 0 <= label < layout.num_labels:
                    raise ValueError
        except ValueError:
            allowed = (
                "a number" if layout.regression
                else "/".join(layout.label_names) if layout.label_names
                else "/".join(str(i) for i in range(layout.num_labels))
            )
            raise LabelledDataError(
                f"{p}:{lineno}: label {raw!r} in column {layout.label!r} is not {allowed} (GLUE task {key})"
            ) from None
        text = row[cols[layout.text]].strip()
        pair = row[cols[layout.pair]].strip() if layout.pair is not None else None
        if not text or (layout.pair is not None and not pair):
            raise LabelledDataError(f"{p}:{lineno}: empty sentence (GLUE task {key})")
        examples.append(LabelledExample(text, pair, label))
    if not examples:
        raise LabelledDataError(f"{p}: no examples")
    return examples


def read_imdb_folder(path: str | os.PathLike) -> list[LabelledExample]:
    """Read an IMDb split folder: ``pos/*.txt`` (label 1) and ``neg/*.txt`` (label 0).

    ``path`` is a split folder (``aclImdb/train``); the ``unsup`` folder is ignored.

    Raises
    ------
    LabelledDataError
        Missing folder, no ``pos``/``neg`` sub-folder, no ``.txt`` file, an
        empty or non-UTF-8 review (the message names the file).
    """
    p = Path(path)
    if not p.is_dir():
        raise LabelledDataError(f"IMDb folder {str(p)!r} does not exist")
    examples: list[LabelledExample] = []
    for sub, label in (("neg", 0), ("pos", 1)):
        d = p / sub
        if not d.is_dir():
            raise LabelledDataError(f"IMDb folder {str(p)!r} has no {sub}/ sub-folder (expected pos/ and neg/)")
        files = sorted(d.glob("*.txt"))
        if not files:
            raise LabelledDataError(f"IMDb folder {str(d)!r} contains no .txt reviews")
        for f in files:
            try:
                text = f.read_text(encoding="utf-8").replace("<br />", " ").strip()
            except UnicodeDecodeError as exc:
                raise LabelledDataError(f"{f}: not UTF-8 text ({exc})") from None
            if not text:
                raise LabelledDataError(f"{f}: empty review")
            examples.append(LabelledExample(text, None, label))
    return examples


def load_labelled(path: str | os.PathLike, task: str | None = None) -> tuple[list[LabelledExample], int]:
    """Read a labelled task from a local path: a GLUE ``.tsv`` file or an IMDb folder.

    Returns
    -------
    (examples, num_labels)
    """
    p = Path(path)
    if not p.exists():
        raise LabelledDataError(f"labelled data path {str(p)!r} does not exist")
    if p.is_dir():
        if task not in (None, "imdb"):
            raise LabelledDataError(f"{str(p)!r} is a folder; only IMDb (pos/, neg/) folders are read, not {task!r}")
        return read_imdb_folder(p), 2
    if p.suffix.lower() != ".tsv":
        raise LabelledDataError(
            f"labelled file {str(p)!r}: expected a GLUE .tsv file or an IMDb folder (pos/, neg/)"
        )
    key = _task_name(task, p)
    return read_glue_tsv(p, key), GLUE_TASKS[key].num_labels


# ---------------------------------------------------------------------------
# Token datasets
# ---------------------------------------------------------------------------


@dataclass
class TokenDataset:
    """Tokenized examples, unpadded.

    Members
    -------
    input_ids : list of list of int
        Token ids of each example, special tokens included.
    token_type_ids : list of list of int, or None
        Segment ids (BERT sentence pairs); None when the tokenizer gives none.
    labels : list of int/float, or None
        One label per example for labelled tasks.
    pad_id : int
        Padding token id.
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self, indices: Sequence[int]) -> int:
        """Total number of (non-padding) tokens of the given examples."""
        return sum(len(self.input_ids[i]) for i in indices)

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Pad the examples ``indices`` to their longest into a batch.

        Returns
        -------
        dict with ``input_ids`` (B, n) long, ``attention_mask`` (B, n) long,
        and, when present, ``token_type_ids`` (B, n) long and ``labels`` (B,)
        (long for classes, float for regression).
        """
        if len(indices) == 0:
            raise ValueError("cannot collate an empty batch")
        n = max(len(self.input_ids[i]) for i in indices)
        B = len(indices)
        ids = torch.full((B, n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, n), dtype=torch.long)
        types = torch.zeros((B, n), dtype=torch.long) if self.token_type_ids is not None else None
        for r, i in enumerate(indices):
            seq = self.input_ids[i]
            ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[r, : len(seq)] = 1
            if types is not None:
                types[r, : len(seq)] = torch.tensor(self.token_type_ids[i], dtype=torch.long)
        batch = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            batch["token_type_ids"] = types
        if self.labels is not None:
            lab = [self.labels[i] for i in indices]
            dtype = torch.float32 if isinstance(lab[0], float) else torch.long
            batch["labels"] = torch.tensor(lab, dtype=dtype)
        return batch


def _pad_id(tokenizer) -> int:
    pid = tokenizer.pad_token_id
    return 0 if pid is None else int(pid)


#: Where a paragraph is split into sentences: white space after ``.``, ``!`` or ``?``
#: and before a capital letter (the evaluation sentences are cut the same way).
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def text_dataset(tokenizer, paragraphs: Sequence[str], *, max_length: int = 128, min_tokens: int = 8,
                 unit: str = "window") -> TokenDataset:
    """Tokenize paragraphs (or their sentences, split at :data:`SENTENCE_SPLIT`: ``unit``, one
    of :data:`~inhibitron.model.distill_config.TEXT_UNITS`) and cut them into windows of at
    most ``max_length`` tokens.

    Each window gets the tokenizer's special tokens (``[CLS] ... [SEP]``);
    windows with fewer than ``min_tokens`` content tokens are dropped.

    Raises
    ------
    CorpusError
        No window is left (an empty corpus).
    """
    if not isinstance(max_length, int) or max_length < min_tokens + 2:
        raise ValueError(f"max_length must be an integer >= {min_tokens + 2}, not {max_length!r}")
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if cls is None or sep is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no [CLS]/[SEP] (or BOS/EOS) token")
    if unit not in TEXT_UNITS:
        raise ValueError(f"unit must be one of {TEXT_UNITS}, not {unit!r}")
    body = max_length - 2
    texts = list(paragraphs) if unit != "sentence" else []
    if unit != "window":
        texts += [s for p in paragraphs for s in SENTENCE_SPLIT.split(p)]
    enc = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    windows: list[list[int]] = []
    for ids in enc:
        for s in range(0, len(ids), body):
            piece = ids[s : s + body]
            if len(piece) >= min_tokens:
                windows.append([cls, *piece, sep])
    if not windows:
        raise CorpusError(f"the corpus gives no window of at least {min_tokens} tokens")
    return TokenDataset(windows, None, None, _pad_id(tokenizer))


def labelled_dataset(tokenizer, examples: Sequence[LabelledExample], *, max_length: int = 128) -> TokenDataset:
    """Tokenize labelled examples (sentence or pair), truncating to ``max_length`` tokens."""
    if not examples:
        raise LabelledDataError("no labelled examples")
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples]
    has_pair = pairs[0] is not None
    if has_pair:
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    else:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
    types = enc.get("token_type_ids")
    return TokenDataset(
        list(enc["input_ids"]),
        list(types) if types is not None else None,
        [e.label for e in examples],
        _pad_id(tokenizer),
    )


def split_heldout(paragraphs: Sequence[str], fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """Split paragraphs into (train, held-out), deterministically by content.

    A paragraph is held out when the CRC-32 of its text falls in the first
    ``fraction`` of the range, so the split does not depend on order or on
    which other paragraphs exist.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), not {fraction!r}")
    cut = int(fraction * 2**32)
    train, held = [], []
    for p in paragraphs:
        (held if zlib.crc32(p.encode("utf-8")) < cut else train).append(p)
    return train, held


def _heldout_pool(corpus, fraction: float, min_words: int, max_words: int) -> list[str]:
    paras = embedded_paragraphs() if corpus is None else load_corpus(corpus)
    _, held = split_heldout(paras, fraction)
    pool, seen = [], set()
    for para in held:
        for s in SENTENCE_SPLIT.split(para):
            if min_words <= len(s.split()) <= max_words and s not in seen:
                seen.add(s)
                pool.append(s)
    return pool


def heldout_sentences(count: int, *, seed: int = 0, corpus: str | os.PathLike | None = None,
                      fraction: float = 0.1, min_words: int = 6, max_words: int = 60) -> list[str]:
    """``count`` real sentences from the held-out part of a corpus (default: embedded).

    The distillation recipes train on the other part (:func:`split_heldout`
    with the same ``fraction``), so these sentences were never seen in training.
    """
    import random

    pool = _heldout_pool(corpus, fraction, min_words, max_words)
    if count > len(pool):
        raise CorpusError(f"the held-out corpus has {len(pool)} sentences, {count} were asked for")
    return random.Random(seed).sample(pool, count)


def eval_sentences(corpus: str | os.PathLike | None = None, *, fraction: float = 0.1,
                   limit: int | None = None) -> list[str]:
    """The fixed evaluation set: every held-out sentence of a corpus (6-60 words), in
    corpus order.

    Used by the benchmarks and the ablations of ``docs/distillation.md`` so that
    every measurement runs on the same text (181 sentences for the embedded
    corpus). ``limit`` keeps a fixed sample of that many (seed 0, in corpus order).
    """
    import random

    pool = _heldout_pool(corpus, fraction, 6, 60)
    if not pool:
        raise CorpusError("the held-out part of the corpus has no sentence of 6-60 words")
    if limit and limit < len(pool):
        keep = sorted(random.Random(0).sample(range(len(pool)), limit))
        pool = [pool[i] for i in keep]
    return pool


def epoch_permutation(n: int, *, seed: int, phase: int, epoch: int) -> torch.Tensor:
    """The order of the ``n`` examples in ``epoch`` of ``phase``: a pure function of its arguments."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + phase * 10_007 + epoch) % (2**63))
    return torch.randperm(n, generator=g)
