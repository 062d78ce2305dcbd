"""``inhibitron report``: bit-accuracy report of a quantized checkpoint on real text.

Examples::

    inhibitron report --checkpoint out/ckpt --student runs/lw/student --out out/report
    inhibitron report --checkpoint out/ckpt --out out/report --cosim out/sim.json --sentences 32
    inhibitron report --checkpoint out/ckpt --student runs/lw/student --text my_sentences.txt --out r

The float student (``--student``: a folder saved by ``inhibitron distill``,
or a plain BERT/DistilBERT folder converted with the initial parameters;
default: the embedded all-MiniLM-L6-v2, converted, as ``inhibitron export``)
must be the one the checkpoint was exported from: it provides the float
activations and the float reference. The report checks that its Q/K/V/O
weights match the checkpoint's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="bit-accuracy report (Markdown + PNG) of a quantized checkpoint on real text",
        description="Compare the integer model of a quantized checkpoint with its float student on "
        "real sentences: error per layer and head, saturation/overflow per tensor, value ranges vs "
        "formats, SQNR vs bit width, and the RTL-vs-golden mismatch count of a cosimulation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="quantized checkpoint folder (inhibitron export)")
    p.add_argument("--student", type=Path, help="float student folder (default: embedded MiniLM, converted)")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--sentences", type=int, default=16,
                   help="held-out sentences of the embedded corpus to run (default 16)")
    p.add_argument("--text", type=Path, help="a UTF-8 file with one input sentence per line instead")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per sentence (default: the checkpoint's sequence length)")
    p.add_argument("--cosim", type=Path, help="the JSON of 'inhibitron sim --json' (RTL-vs-golden mismatches)")
    p.add_argument("--bits", default="4,6,8,10,12,16", help="widths of the bit-width sweep (default 4,6,8,10,12,16)")
    p.add_argument("--force", action="store_true", help="replace an existing report folder")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
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


def run(args) -> int:
    import torch

    from ..model.data import heldout_sentences
    from ..quant.checkpoint import load_checkpoint
    from ..quant.report import build_report, capture_report_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        bits = [int(b) for b in args.bits.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--bits must be comma-separated integers, not {args.bits!r}") from None
    ckpt = load_checkpoint(args.checkpoint)
    student, tok = _student(args.student)
    student.eval()
    check_same_weights(student, ckpt)
    max_length = args.max_length or ckpt.layers[0].seq_len
    if args.text:
        if not args.text.is_file():
            raise UserError(f"--text file {str(args.text)!r} does not exist")
        sentences = [s.strip() for s in args.text.read_text(encoding="utf-8").splitlines() if s.strip()]
        if not sentences:
            raise UserError(f"--text file {str(args.text)!r} has no sentence")
        where = f"{len(sentences)} sentences of {args.text.name}"
    else:
        sentences = heldout_sentences(args.sentences, seed=2)
        where = f"{len(sentences)} held-out sentences of the embedded corpus (pydoc_data.topics)"
    with torch.no_grad():
        inputs = capture_report_inputs(student, sentences, tok, max_length=max_length)
    path = build_report(ckpt, inputs, args.out, cosim=args.cosim, sweep_bits=bits, force=args.force,
                        input_description=where)
    print(f"report: {path}")
    return 0
