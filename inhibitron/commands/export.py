"""``inhibitron export``: calibrate a student on real text and write its quantized checkpoint.

The checkpoint directory holds ``manifest.json``, integer tensors in
safetensors, ONNX graphs (float and QDQ) of every layer's attention and
``$readmemh`` memory images (see ``docs/export.md``). The format flags
(``--no-onnx``, ``--no-memimages``, ...) come from the exporter registry,
:mod:`inhibitron.quant.exporters`.

Examples::

    inhibitron export --out out/ckpt                                   # embedded MiniLM, int8
    inhibitron export --model runs/lw/student --out out/ckpt --calib-sentences 64 --max-length 64
    inhibitron export --model runs/lw/student --out out/ckpt4 --bits 4 --shifts head --no-onnx
    inhibitron export --model runs/lw/student --out out/ckpt --force   # replace an earlier checkpoint
    inhibitron export --model runs/lw/student --out out/ckpt --corpus my_domain.txt   # your own text

Calibration runs the student on ``--calib-sentences`` sentences drawn with
``--seed`` from the embedded English corpus (Python's own documentation,
``pydoc_data.topics``), or from ``--corpus`` (your own text, or
``embedded:fortunes`` for general English); the manifest records which.
"""

from __future__ import annotations

import argparse
import math

from inhibitron.cli import max_length_arg, positive_int
from inhibitron.quant.exporters import exporters  # the registry only: no torch, no numpy

HELP = "calibrate on real text and write a quantized checkpoint (safetensors + ONNX + memory images)"

_SHIFTS = {"layer": True, "ab": "ab", "head": False}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, the examples epilog as written."""


def _bits(text: str) -> int:
    value = positive_int(text)
    if not 2 <= value <= 16:
        raise argparse.ArgumentTypeError(f"bits must be in 2..16, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help=HELP, description=HELP + ".",
        epilog="examples:" + __doc__.split("Examples::", 1)[1],
        formatter_class=_Formatter,
    )
    p.add_argument("--model", default=None, metavar="PATH",
                   help="student folder (save_student) or Hugging Face BERT/DistilBERT folder (converted "
                        "with default gamma/eta/delta); default: the embedded all-MiniLM-L6-v2")
    p.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="tokenizer folder; default: the model folder's, else the embedded MiniLM tokenizer")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to create")
    p.add_argument("--bits", type=_bits, default=8,
                   help="width of q/k, v, h codes, of the projection weights and of their input activations")
    p.add_argument("--force", action="store_true",
                   help="replace DIR if it holds a checkpoint written by inhibitron (never another folder)")
    p.add_argument("--calib-sentences", type=positive_int, default=32, metavar="N",
                   help="sentences to calibrate on, from --corpus or else the embedded English corpus "
                        "(pydoc_data.topics, Python's documentation)")
    p.add_argument("--corpus", default=None, metavar="PATH",
                   help="calibrate on sentences of this text instead: a .txt file, a folder of .txt, a datasets "
                        "folder, or embedded:fortunes (general English)")
    p.add_argument("--max-length", type=max_length_arg, default=128, metavar="N",
                   help="longest tokenized sentence; also the sequence length n the core is sized for")
    p.add_argument("--observer", choices=("minmax", "percentile", "mse"), default="minmax",
                   help="range observer of Q, K, V")
    p.add_argument("--shifts", choices=tuple(_SHIFTS), default="ab",
                   help="shift policy: per-head r with a, b shared by the layer (default; one generated core "
                        "serves the layer, r is a run-time descriptor field), one (a, b, r) per layer, "
                        "or all per head")
    p.add_argument("--seed", type=int, default=0, help="seed of the sentence sample")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    for exporter in exporters():  # one flag per optional format of the registry
        if exporter.required:
            continue
        if exporter.default:
            p.add_argument(f"--no-{exporter.name}", action="store_true", help=f"do not write {exporter.help}")
        else:
            p.add_argument(f"--{exporter.name}", action="store_true", help=f"also write {exporter.help}")
    p.set_defaults(func=run)


def _export_formats(args) -> tuple[str, ...]:
    """The optional formats the flags select, in registry order."""
    chosen = []
    for exporter in exporters():
        dest = exporter.name.replace("-", "_")
        if exporter.required:
            continue
        if (not getattr(args, f"no_{dest}")) if exporter.default else getattr(args, dest):
            chosen.append(exporter.name)
    return tuple(chosen)


_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def _load_tokenizer(model, model_folder, tokenizer_path):
    """The tokenizer: ``--tokenizer``, else the model folder's, else the embedded MiniLM's.

    transformers builds an *empty* tokenizer from a folder without tokenizer
    files (every word becomes [UNK]), so a folder is used only if it has one.
    """
    from pathlib import Path

    from transformers import AutoTokenizer

    from inhibitron.cli import UserError
    from inhibitron.model.surgery import default_teacher_path

    note = None
    if tokenizer_path is not None:
        folder = Path(tokenizer_path)
        if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
            raise UserError(f"--tokenizer {str(folder)!r} has no tokenizer files ({', '.join(_TOKENIZER_FILES)})")
    elif any((model_folder / f).is_file() for f in _TOKENIZER_FILES):
        folder = model_folder
    else:
        folder = default_teacher_path()
        note = f"{str(model_folder)!r} has no tokenizer; using the embedded all-MiniLM-L6-v2 tokenizer"
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    vocab = getattr(model.config, "vocab_size", None)
    if vocab is not None and len(tok) > vocab:
        raise UserError(
            f"the tokenizer from {str(folder)!r} has {len(tok)} tokens, the model's vocabulary only {vocab}: "
            "pass the model's own tokenizer with --tokenizer"
        )
    return tok, note


def _load_student(path, tokenizer_path=None):
    """(student, tokenizer, description) from a student folder, a HF folder or the embedded teacher."""
    import json
    from pathlib import Path

    from inhibitron.model.surgery import (
        INHIBITOR_CONFIG_KEY,
        default_teacher_path,
        load_student,
        load_teacher,
        to_inhibitor,
    )

    folder = Path(path) if path is not None else default_teacher_path()
    is_student = False
    try:
        is_student = INHIBITOR_CONFIG_KEY in json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass  # load_teacher below names the problem
    if is_student:
        student, kind = load_student(folder), "student"
    else:
        teacher, _ = load_teacher(folder, tokenizer=False)
        student = to_inhibitor(teacher)
        kind = "teacher (converted; inhibitor parameters at their initial values)"
    tok, note = _load_tokenizer(student, folder, tokenizer_path)
    if note:
        kind += f"; {note}"
    return student, tok, kind


def check_replaceable_checkpoint(out) -> None:
    """Raise UserError unless ``out`` is empty or a checkpoint this tool wrote (what ``--force`` may replace)."""
    import json

    from inhibitron.cli import UserError

    if not any(out.iterdir()):
        return
    try:
        producer = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("producer", {})
    except (OSError, ValueError, AttributeError):
        producer = None
    if not isinstance(producer, dict) or producer.get("name") != "inhibitron":
        raise UserError(f"--force: {str(out)!r} is not a checkpoint written by inhibitron export (no "
                        "manifest.json of ours); refusing to replace it, choose another --out")


def run(args) -> int:

    from inhibitron.cli import UserError

    from inhibitron.cli import check_output_dir

    out = check_output_dir(args.out, "--out")  # before any work: a file, a read-only place
    if out.exists():
        if not args.force:
            raise UserError(f"output directory {str(out)!r} already exists; pass --force to replace it")
        check_replaceable_checkpoint(out)

    import torch

    from inhibitron.model.capture import tokenize
    from inhibitron.model.corpus import embedded_sentences
    from inhibitron.quant.calibrate import FormatTooNarrowError
    from inhibitron.quant.export import export_student
    from inhibitron.quant.formats import AttentionFormats

    student, tok, kind = _load_student(args.model, args.tokenizer)
    student.eval()
    from inhibitron.model.corpus import CorpusError

    try:
        sentences = embedded_sentences(args.calib_sentences, seed=args.seed, corpus=args.corpus)
    except CorpusError as exc:
        raise UserError(f"--corpus: {exc}") from None
    corpus_name = args.corpus or "embedded (pydoc_data.topics)"
    input_ids, attention_mask = tokenize(tok, sentences, max_length=args.max_length)
    formats = AttentionFormats(qk_bits=args.bits, v_bits=args.bits, out_bits=args.bits)
    print(f"inhibitron export: {kind}, {len(sentences)} calibration sentences of corpus {corpus_name} "
          f"(seed {args.seed}; {int(attention_mask.sum())} tokens), {args.bits}-bit formats")
    try:
        with torch.no_grad():
            path, cal = export_student(
                student, out, input_ids=input_ids, attention_mask=attention_mask, formats=formats,
                weight_bits=args.bits, act_bits=args.bits, seq_len=args.max_length, observer=args.observer,
                shared_shifts=_SHIFTS[args.shifts], export_formats=_export_formats(args),
                force=args.force, progress=not args.no_progress,
                calibration_notes={"corpus": corpus_name, "seed": args.seed,
                                   "model": str(args.model) if args.model else "embedded all-MiniLM-L6-v2"},
            )
    except FormatTooNarrowError as exc:
        raise UserError(f"{exc} (pass --bits or --shifts)") from None
    print("layer  SQNR of the integer attention core vs float (dB)")
    for i, s in enumerate(cal["sqnr_db"]):
        print(f"{i:5d}  {s:8.2f}" if math.isfinite(s) else f"{i:5d}  exact (QAT record)")
    for note in cal["notes"]:
        print(f"note: {note}")
    print(f"wrote {path}")
    return 0
