"""Distillation quality, measured: the benchmark entry and the ablation runner.

:func:`distill_and_measure` converts the embedded all-MiniLM-L6-v2 teacher,
runs one recipe on the training part of a corpus and measures
:func:`~inhibitron.model.quality.fidelity` on the **fixed evaluation set**
(:func:`~inhibitron.model.data.eval_sentences`: every held-out sentence, 181
for the embedded corpus, 128-token windows), for the float student and with
int8 attention cores (``quant.qat`` frozen, bit-exact to ``quant.golden``).

:func:`bench_distill_quality` is the ``make bench`` entry (``inhibitron.bench``):
the demo's distillation and the default pipeline of ``inhibitron distill``,
with wall times. The ablations of ``docs/distillation.md`` were run with::

    OMP_NUM_THREADS=1 python -m inhibitron.quant.distill_bench --recipe layerwise --max-steps 20 \\
        --max-length 64 --grad-accum 1 --set scalar_lr_mult=100 --json out.jsonl

This module imports ``inhibitron.quant`` only inside :func:`int8_student`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from inhibitron.model.attention import LENGTH_NORMS
from inhibitron.model.distill_config import TEXT_UNITS
from inhibitron.model.recipes import DEFAULT_RECIPE

__all__ = ["DEMO_OVERRIDES", "bench_distill_quality", "distill_and_measure", "int8_student"]

#: The distillation of ``inhibitron demo`` (``inhibitron.flow.DemoConfig``: ``distill_steps``,
#: ``max_length``, ``full_steps``; kept in step by tests/test_bench.py): recipe and overrides.
DEMO_RECIPE = DEFAULT_RECIPE
DEMO_OVERRIDES = {"max_steps": 10, "grad_accum": 1, "max_length": 64, "full_max_steps": 150}


def int8_student(student, data, seq_len: int, *, sequences: int = 32):
    """A copy of ``student`` whose attention cores compute the int8 golden model
    (``quant.qat`` frozen), calibrated on the first ``sequences`` training sequences."""
    import torch

    from inhibitron.quant.export import calibrate_student
    from inhibitron.quant.qat import to_qat

    batch = data.collate(list(range(min(sequences, len(data)))))
    was = student.training
    student.eval()
    with torch.no_grad():
        cal = calibrate_student(student, batch["input_ids"], batch["attention_mask"], seq_len=seq_len)
    student.train(was)
    return to_qat(student, cal["layer_quants"], frozen=True, seq_len=seq_len).eval()


def distill_and_measure(recipe: str, overrides: dict | None = None, *, corpus=None, eval_corpus=None,
                        eval_length: int = 128, int8: bool = True, threads: int | None = None,
                        out_dir=None, progress: bool = False, also_eval: tuple = (),
                        length_norm: str = "none") -> dict:
    """Distil the embedded teacher with ``recipe`` (``default_config(recipe, **overrides)``) and measure.

    ``length_norm`` is the student's per-sequence output normalisation
    (:class:`~inhibitron.model.attention.InhibitorAttention`; ``"none"`` or ``"pow2"``).

    Returns a dict with ``recipe``, ``overrides``, ``steps`` (optimizer steps),
    ``train_s`` (wall seconds of the recipe), ``total_s`` (wall seconds of this
    call from the teacher's conversion to the last fidelity measurement), ``float`` and ``int8``
    (:func:`~inhibitron.model.quality.fidelity` results on the fixed evaluation
    set of ``eval_corpus``, default ``corpus``), ``int8_cosine_delta``, and for
    each corpus of ``also_eval`` (e.g. ``"embedded:fortunes"``) ``"float <corpus>"``:
    the float student's fidelity on 181 of its held-out sentences.
    """
    import torch

    from inhibitron.model.corpus import load_corpus
    from inhibitron.model.data import eval_sentences, split_heldout, text_dataset
    from inhibitron.model.quality import fidelity
    from inhibitron.model.recipes import default_config, get_recipe
    from inhibitron.model.surgery import load_teacher, to_inhibitor

    t_start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    overrides = dict(overrides or {})
    config = default_config(recipe, checkpoint_every=0, **overrides)
    teacher, tok = load_teacher()
    student = to_inhibitor(teacher, length_norm=length_norm)
    train_paras, _ = split_heldout(load_corpus(corpus))
    data = text_dataset(tok, train_paras, max_length=config.max_length, unit=config.text_unit)
    sentences = eval_sentences(eval_corpus if eval_corpus is not None else corpus)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(out_dir) if out_dir else Path(tmp) / "run"
        t0 = time.perf_counter()
        history = get_recipe(recipe).function(teacher=teacher, student=student, data=data, config=config,
                                              out_dir=run_dir, progress=progress)
        train_s = time.perf_counter() - t0
    student.eval()
    result = {"recipe": recipe, "overrides": overrides, "length_norm": length_norm, "steps": len(history),
              "train_s": round(train_s, 1), "eval_sentences": len(sentences), "float": fidelity(teacher, student, sentences, tok,
                                                                   max_length=eval_length, progress=False)}
    if int8:
        q = int8_student(student, data, eval_length)
        result["int8"] = fidelity(teacher, q, sentences, tok, max_length=eval_length, progress=False)
        result["int8_cosine_delta"] = result["int8"]["cosine_mean"] - result["float"]["cosine_mean"]
    for other in also_eval:
        result[f"float {other}"] = fidelity(teacher, student, eval_sentences(other, limit=181), tok,
                                            max_length=eval_length, progress=False)
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    return result


def _row(label: str, r: dict) -> dict:
    f = r["float"]
    row = {"run": label, "steps": r["steps"], "train s": r["train_s"], "cos mean": f["cosine_mean"],
           "cos min": f["cosine_min"], "Spearman": f["spearman"], "NN top-1": f["nn_top1"],
           "ctx rel. MSE (mean)": sum(f["context_rel_mse"]) / len(f["context_rel_mse"])}
    for bin_label, b in (f.get("cosine_by_length") or {}).items():
        row[f"cos {bin_label} tok ({b['sentences']})"] = b["cosine_mean"]
    if "int8" in r:
        row["int8 cos"] = r["int8"]["cosine_mean"]
        row["int8 Spearman"] = r["int8"]["spearman"]
    for key, f in r.items():
        if key.startswith("float embedded:"):
            name = key.split(":", 1)[1]
            row[f"{name}: cos"] = f["cosine_mean"]
            row[f"{name}: Spearman"] = f["spearman"]
    if "total_s" in r:
        row["total s"] = r["total_s"]
    return row


def bench_distill_quality() -> dict:
    """``make bench`` entry: the demo's distillation and the default pipeline of ``inhibitron distill``.

    Both on the embedded corpus, measured on its fixed evaluation set (181
    held-out sentences, 128 tokens), float and int8 attention; wall times are
    those of the recipe alone (the default pipeline takes about 25 minutes on 2 idle cores).
    """
    from inhibitron.model.recipes import default_config

    others = ("embedded:fortunes",) if _has_fortunes() else ()
    rows = []
    demo = distill_and_measure(DEMO_RECIPE, DEMO_OVERRIDES, also_eval=others)
    rows.append(_row("demo distillation (" + ", ".join(f"{k}={v}" for k, v in DEMO_OVERRIDES.items()) + ")",
                     demo))
    pipeline = distill_and_measure(DEFAULT_RECIPE, {}, also_eval=others)
    cfg = default_config(DEFAULT_RECIPE)
    rows.append(_row(f"inhibitron distill (default {DEFAULT_RECIPE}: {cfg.max_steps} steps per layer, then "
                     f"{cfg.full_epochs:g} full epochs of at most {cfg.full_max_steps} steps, batch "
                     f"{cfg.batch_size} x {cfg.grad_accum}, {cfg.text_unit}s of at most {cfg.max_length} tokens)", pipeline))
    return {"rows": rows,
            "notes": "Teacher: the embedded all-MiniLM-L6-v2; training text: the embedded corpus minus its "
                     "held-out 10%; evaluation: its 181 held-out sentences. cos: teacher-vs-student cosine of "
                     "mean-pooled embeddings; Spearman: rank correlation of the pairwise-similarity matrices; "
                     "NN top-1: same nearest neighbour; ctx rel. MSE: attention-context MSE over the teacher's "
                     "variance, mean over layers; int8: attention cores replaced by the int8 golden model. "
                     "train s: the recipe alone; total s: teacher conversion, data, recipe and every "
                     "fidelity measurement (torch's default threads). "
                     "Targets (issue 14): demo cos >= 0.90, Spearman >= 0.85, int8 within 0.005; default "
                     "pipeline cos >= 0.95, Spearman >= 0.93 within 30 minutes."}


def _has_fortunes() -> bool:
    from inhibitron.model.corpus import CorpusError, fortune_paragraphs

    try:
        fortune_paragraphs()
    except CorpusError:
        return False
    return True




def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m inhibitron.quant.distill_bench",
                                description="distil the embedded teacher with one recipe and measure fidelity "
                                            "on the fixed evaluation set")
    p.add_argument("--recipe", default="layerwise")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other DistillConfig field (JSON value)")
    p.add_argument("--label", default="")
    p.add_argument("--corpus")
    p.add_argument("--eval-corpus")
    p.add_argument("--also-eval", action="append", default=[], metavar="CORPUS",
                   help="also measure the float student on 181 held-out sentences of CORPUS")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--length-norm", default="none", choices=LENGTH_NORMS,
                   help="the student's per-sequence output factor 2**-round(log2 L) (pow2) or none")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--text-unit", choices=TEXT_UNITS,
                   help="training examples: windows of paragraphs, sentences, or both (DistillConfig.text_unit; "
                        "default: the recipe's)")
    p.add_argument("--json", help="append the result as one JSON line to this file")
    p.add_argument("--transformers-warmup", action="store_true",
                   help="ablation only: warm-up from learning rate 0 at the first step (transformers' schedule)")
    args = p.parse_args(argv)
    if args.transformers_warmup:
        import math

        from inhibitron.model import training

        def old(step, total, warmup_ratio, schedule, _new=training.lr_factor):
            warmup = math.ceil(total * warmup_ratio)
            return step / max(1, warmup) if step < warmup else _new(step, total, warmup_ratio, schedule)

        training.lr_factor = old
    overrides = {}
    for name in ("max_steps", "max_length", "grad_accum", "text_unit"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    for item in args.set:
        k, _, v = item.partition("=")
        overrides[k] = _value(v)
    r = distill_and_measure(args.recipe, overrides, corpus=args.corpus, eval_corpus=args.eval_corpus,
                            int8=not args.no_int8, threads=args.threads, also_eval=tuple(args.also_eval),
                            length_norm=args.length_norm)
    r["label"] = args.label
    row = _row(args.label or args.recipe, r)
    print(json.dumps(row))
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
