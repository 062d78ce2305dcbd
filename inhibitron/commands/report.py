"""``inhibitron report``: bit-accuracy report of a quantized checkpoint on real text.

Examples::

    inhibitron report --checkpoint out/ckpt --student runs/lw/student --out out/report
    inhibitron report --checkpoint out/ckpt --out out/report --cosim out/sim.json --sentences 32
    inhibitron report --checkpoint out/ckpt --student runs/lw/student --text my_sentences.txt --out r
    inhibitron report --checkpoint out/ckpt --out out/report --sweep-bits 4,8 --no-progress --force

The float student (``--student``: a folder saved by ``inhibitron distill``,
or a plain BERT/DistilBERT folder converted with the initial parameters;
default: the embedded all-MiniLM-L6-v2, converted, as ``inhibitron export``)
must be the one the checkpoint was exported from: it provides the float
activations and the float reference. The report checks that its Q/K/V/O
weights match the checkpoint's.

The report is written to a temporary folder next to ``--out`` and renamed
into place at the end: an error or an interrupt leaves nothing behind.
``--force`` replaces only an earlier report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import UserError, max_length_arg, positive_int


#: The widths of the bit-width sweep unless --sweep-bits says otherwise.
DEFAULT_SWEEP = "4,6,8,10,12,16"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="bit-accuracy report (Markdown + PNG) of a quantized checkpoint on real text",
        description="Compare the integer model of a quantized checkpoint with its float student on "
        "real sentences: error per layer and head, saturation/overflow per tensor, value ranges vs "
        "formats, SQNR vs bit width, and the RTL-vs-golden mismatch count of a cosimulation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + __doc__.split("Examples::", 1)[1],
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="quantized checkpoint folder (inhibitron export)")
    p.add_argument("--student", type=Path, help="float student folder (default: embedded MiniLM, converted)")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--sentences", type=positive_int, default=16,
                   help="held-out sentences of the embedded corpus (pydoc_data.topics) to run (default 16)")
    p.add_argument("--text", type=Path, help="a UTF-8 file with one input sentence per line instead")
    p.add_argument("--corpus", default=None, metavar="PATH",
                   help="take the --sentences held-out sentences from this corpus instead of the embedded one "
                        "(a .txt file, a folder of .txt, a datasets folder, or embedded:fortunes)")
    p.add_argument("--max-length", type=max_length_arg, default=None,
                   help="tokens per sentence (default: the checkpoint's sequence length)")
    p.add_argument("--cosim", type=Path, help="the JSON of 'inhibitron sim --json' (RTL-vs-golden mismatches)")
    p.add_argument("--sweep-bits", default=None, metavar="B,B,...",
                   help="code widths of the bit-width sweep (default 4,6,8,10,12,16); '' for no sweep")
    p.add_argument("--bits", dest="bits_deprecated", default=None, help=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", help="replace an earlier report in --out (never another folder)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _student(folder: Path | None):
    from ..model.surgery import load_student, load_teacher, to_inhibitor

    if folder is None:
        base, tok = load_teacher()
        return to_inhibitor(base), tok
    from transformers import AutoTokenizer

    import json

    cfg_file = folder / "config.json"
    is_student = cfg_file.is_file() and "inhibitor" in json.loads(cfg_file.read_text())
    if is_student:
        model = load_student(folder)
    else:
        base, _ = load_teacher(folder, tokenizer=False)
        model = to_inhibitor(base)
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError):
        raise UserError(f"student folder {str(folder)!r} has no tokenizer files") from None
    return model, tok


def check_same_weights(student, ckpt, *, tolerance: float = 0.02) -> None:
    """Raise UserError when the checkpoint's projections are not the student's weights (quantized)."""
    import numpy as np

    from ..model.surgery import attention_modules

    mods = attention_modules(student)
    if len(mods) != len(ckpt.layers):
        raise UserError(f"the checkpoint has {len(ckpt.layers)} layers, the student {len(mods)}: "
                        "not the student it was exported from")
    for i, ((_, _, mod), layer) in enumerate(zip(mods, ckpt.layers)):
        lin = mod.query if hasattr(mod, "query") else mod.q_lin
        w = lin.weight.detach().double().cpu().numpy()
        qw = layer.projections["q"]
        deq = qw.weight.astype(np.float64) * qw.weight_scale[:, None]
        if w.shape != deq.shape:
            raise UserError(f"layer {i}: the checkpoint's q weight has shape {deq.shape}, the student's {w.shape}")
        rel = float(np.abs(w - deq).max() / max(np.abs(w).max(), 1e-30))
        if rel > tolerance:
            raise UserError(f"layer {i}: the checkpoint's q weight differs from the student's by {100 * rel:.1f}% "
                            "of its range: pass the student the checkpoint was exported from (--student)")


def check_student(student) -> None:
    """Raise UserError naming the parameter (NaN/Inf), or the layer and head (gamma <= 0, eta = 0)."""
    import torch

    from ..model.surgery import iter_inhibitors
    from ..quant.export import check_finite_parameters

    try:
        check_finite_parameters(student)
    except ValueError as exc:
        raise UserError(f"--student: {exc}".replace("refusing to quantize and export", "refusing to report on"))
    names = {id(param): name for name, param in student.named_parameters()}
    for i, m in iter_inhibitors(student):
        with torch.no_grad():
            gamma = m.gamma.detach().double().reshape(-1)
            eta = m.eta.detach().double().reshape(-1)
        for h in range(gamma.numel()):
            if not gamma[h] > 0:
                raise UserError(f"--student: layer {i} head {h}: gamma = {float(gamma[h]):.6g} (parameter "
                                f"{names.get(id(m.gamma), 'gamma')}[{h}]); the quantized core needs gamma > 0, "
                                "so this student cannot have been exported")
            if eta.numel() > h and eta[h] == 0:
                raise UserError(f"--student: layer {i} head {h}: eta = 0 (parameter "
                                f"{names.get(id(m.eta), 'eta')}[{h}]) makes the head's output identically 0, "
                                "so this student cannot have been exported")


def _sweep_bits(args) -> list[int]:
    import sys

    text = args.sweep_bits
    if args.bits_deprecated is not None:
        print("inhibitron report: warning: --bits is deprecated here (it is the code width in "
              "'inhibitron export'); use --sweep-bits", file=sys.stderr)
        if text is None:
            text = args.bits_deprecated
    text = DEFAULT_SWEEP if text is None else text
    try:
        bits = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--sweep-bits must be comma-separated integers, not {text!r}") from None
    bad = [b for b in bits if not 2 <= b <= 32]
    if bad:
        raise UserError(f"--sweep-bits: widths must be in 2..32, not {bad}")
    return bits


def _read_sentences(path: Path) -> list[str]:
    if path.is_dir():
        raise UserError(f"--text {str(path)!r} is a folder; pass a UTF-8 text file, one sentence per line")
    if not path.is_file():
        raise UserError(f"--text file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"--text file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    sentences = [s.strip() for s in text.splitlines() if s.strip()]
    if not sentences:
        raise UserError(f"--text file {str(path)!r} has no sentence")
    return sentences


def run(args) -> int:
    from ..cli import check_output_dir
    from ..quant.report import check_report_folder
    from ..quant.report_tables import ReportError

    # Everything that can be checked without the models is checked first.
    bits = _sweep_bits(args)
    out = check_output_dir(args.out, "--out")
    try:
        check_report_folder(out, force=args.force)
    except ReportError as exc:
        raise UserError(str(exc)) from None
    sentences = _read_sentences(args.text) if args.text else None

    import torch

    from ..model.data import heldout_sentences
    from ..quant.checkpoint import load_checkpoint
    from ..quant.report import build_report, capture_report_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    student, tok = _student(args.student)
    student.eval()
    check_student(student)
    check_same_weights(student, ckpt)
    max_length = args.max_length or ckpt.layers[0].seq_len
    if sentences is not None:
        where = f"{len(sentences)} sentences of {args.text.name}"
    else:
        from ..model.corpus import CorpusError

        try:
            sentences = heldout_sentences(args.sentences, seed=2, corpus=args.corpus)
        except CorpusError as exc:
            raise UserError(f"--corpus: {exc}") from None
        where = (f"{len(sentences)} held-out sentences of "
                 + (f"corpus {args.corpus}" if args.corpus else "the embedded corpus (pydoc_data.topics)"))
    with torch.no_grad():
        inputs = capture_report_inputs(student, sentences, tok, max_length=max_length)
    path = build_report(ckpt, inputs, out, cosim=args.cosim, sweep_bits=bits, force=args.force,
                        input_description=where, progress=not args.no_progress)
    print(f"report: {path}")
    return 0
