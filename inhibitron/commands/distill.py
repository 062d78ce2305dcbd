"""``inhibitron distill``: run one of the paper's distillation recipes.

Examples::

    inhibitron distill --out runs/default --fidelity all                # the default pipeline: layer-wise, then full
    inhibitron distill --recipe layerwise --out runs/lw                 # embedded MiniLM + corpus
    inhibitron distill --recipe layerwise --out runs/lw --resume        # continue after an interruption
    inhibitron distill --recipe full --student runs/lw/student --out runs/full
    inhibitron distill --recipe task --teacher my-sst2-bert --data glue/SST-2/train.tsv --out runs/task
    inhibitron distill --recipe finetune --student runs/full/student --data aclImdb/train --out runs/ft
    inhibitron distill --print-config layerwise                          # the paper's defaults as JSON
    torchrun --nproc_per_node 2 -m inhibitron distill --recipe full ...  # data parallel (gloo on CPU, nccl on GPUs)
"""

from __future__ import annotations

import argparse
import json

from ..cli import UserError

#: CLI flag -> DistillConfig field (type conversion by argparse).
_OVERRIDES = {
    "epochs": float, "batch_size": int, "grad_accum": int, "lr": float, "weight_decay": float,
    "warmup_ratio": float, "schedule": str, "max_grad_norm": float, "max_steps": int, "seed": int,
    "max_length": int, "layer_input": str, "temperature": float, "alpha_kd": float,
    "alpha_hidden": float, "checkpoint_every": int, "keep_checkpoints": int,
    "scalar_lr_mult": float, "full_epochs": float, "full_lr": float, "full_max_steps": int, "alpha_cos": float,
    "alpha_sim": float, "text_unit": str,
}

#: Boolean DistillConfig fields with a --flag / --no-flag pair (default: the recipe's).
_SWITCHES = ("fit_scalars", "student_dropout", "bf16")




def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill",
        help="distil a BERT/DistilBERT teacher into an inhibitor student (the paper's recipes)",
        description="Run a distillation recipe of InhibiDistilbert. Defaults are the paper's "
        "hyperparameters (see docs/distillation.md); every flag below overrides one.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    from ..model.recipes import DEFAULT_RECIPE, REGISTRY  # the recipe registry; imports no torch

    p.add_argument("--recipe", choices=tuple(REGISTRY), default=DEFAULT_RECIPE,
                   help=", ".join(f"{r.name} ({r.source})" if r.source else r.name for r in REGISTRY.values())
                   + f" (default {DEFAULT_RECIPE}: layer-wise, then a full phase)")
    p.add_argument("--print-config", metavar="RECIPE", help="print the default configuration of RECIPE and exit")
    p.add_argument("--out", help="run folder (metrics, checkpoints, final student)")
    p.add_argument("--teacher", help="teacher folder (default: the embedded all-MiniLM-L6-v2; "
                   "task: a fine-tuned *ForSequenceClassification folder)")
    p.add_argument("--student", help="start from this student folder (e.g. <run>/student); default: "
                   "convert the teacher")
    p.add_argument("--variant", choices=("valid", "thesis"), default="valid",
                   help="inhibitor semantics of a newly converted student")
    p.add_argument("--corpus", help="unlabelled text: a .txt file, a folder of .txt, or a datasets folder "
                   "(default: the embedded pydoc_data.topics prose)")
    p.add_argument("--data", help="labelled task: a GLUE .tsv file or an IMDb folder (pos/, neg/)")
    p.add_argument("--task", help="GLUE task of --data (sst2, cola, mrpc, ...; default: from its folder name)")
    p.add_argument("--max-sequences", type=int, help="use at most this many training sequences")
    p.add_argument("--heldout", type=float, default=0.1,
                   help="fraction of corpus paragraphs kept out of training for --fidelity (default 0.1)")
    p.add_argument("--fidelity", type=_fidelity_count, default=0, metavar="N",
                   help="measure teacher-student fidelity on N held-out sentences before and after "
                   "('all': the fixed evaluation set, every held-out sentence)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--resume-from", metavar="CHECKPOINT", help="continue from this checkpoint folder")
    p.add_argument("--layers", help="layerwise: comma-separated layers to distil (default: all)")
    p.add_argument("--no-fit-eta", action="store_true",
                   help="layerwise: start each layer from eta = 1 as the thesis (no least-squares eta fit)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    for name in _SWITCHES:
        p.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=None,
                       dest=name, help=f"override DistillConfig.{name}")
    for name, typ in _OVERRIDES.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, dest=name,
                       help=(("a cap on the optimizer steps per phase (per layer for layerwise): fewer run "
                              "when the epochs end first; " if name.endswith("max_steps") else "")
                             + f"override DistillConfig.{name} (default: the paper's, see --print-config)"))
    p.set_defaults(func=run)


def _fidelity_count(text: str) -> int:
    """``--fidelity``: a count >= 0, or ``all`` (-1: the whole fixed evaluation set)."""
    if text == "all":
        return -1
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a sentence count or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a sentence count >= 0 or 'all', got {value}")
    return value


def _config(args):
    from ..model.recipes import default_config

    overrides = {k: getattr(args, k) for k in (*_OVERRIDES, *_SWITCHES) if getattr(args, k) is not None}
    if args.no_fit_eta:
        overrides["fit_eta"] = False
    if args.layers:
        try:
            overrides["layers"] = tuple(int(x) for x in args.layers.split(","))
        except ValueError:
            raise UserError(f"--layers must be comma-separated integers, not {args.layers!r}") from None
    return default_config(args.recipe, **overrides)


def run(args) -> int:
    if args.print_config:
        from ..model.recipes import default_config

        print(json.dumps(default_config(args.print_config).to_dict(), indent=1))
        return 0
    if not args.out:
        raise UserError("--out is required (the run folder)")
    import torch

    from ..model import ddp

    if args.threads:
        torch.set_num_threads(args.threads)
    config = _config(args)
    env = ddp.setup()
    try:
        return _run(args, config, env)
    finally:
        ddp.teardown()


def _run(args, config, env) -> int:
    from ..model.classifier import classifier_student, load_classifier
    from ..model.corpus import load_corpus
    from ..model.data import (
        eval_sentences,
        heldout_sentences,
        labelled_dataset,
        load_labelled,
        split_heldout,
        text_dataset,
    )
    from ..model.quality import fidelity, fidelity_table
    from ..model.recipes import get_recipe
    from ..model.schedule import phase_steps
    from ..model.surgery import load_student, load_teacher, to_inhibitor

    resume = args.resume_from or args.resume
    progress = not args.no_progress
    run_info = {"teacher": args.teacher or "embedded all-MiniLM-L6-v2", "student_start": args.student,
                "corpus": args.corpus or "embedded pydoc_data.topics", "data": args.data}
    recipe = get_recipe(args.recipe)
    labelled = recipe.data == "labelled" or (recipe.data == "either" and bool(args.data))
    if labelled and not args.data:
        raise UserError(f"--recipe {args.recipe} needs --data (a GLUE .tsv file or an IMDb folder)")

    # Models ---------------------------------------------------------------
    if not labelled:
        teacher, tokenizer = load_teacher(args.teacher)
        student = load_student(args.student) if args.student else to_inhibitor(teacher, variant=args.variant)
        student.train()
    else:
        from transformers import AutoTokenizer

        examples, num_labels = load_labelled(args.data, args.task)
        if recipe.classifier_teacher:
            if not args.teacher:
                raise UserError(f"--recipe {args.recipe} needs --teacher, a fine-tuned sequence-classifier folder")
            teacher = load_classifier(args.teacher, num_labels=num_labels)
            tok_dir = args.teacher
            source = args.student or teacher
        else:
            teacher = None
            if args.student:
                source, tok_dir = args.student, args.student
            else:
                base, _ = load_teacher(args.teacher, tokenizer=False)
                source = base
                from ..model.surgery import default_teacher_path

                tok_dir = args.teacher or default_teacher_path()
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        student = classifier_student(source, num_labels=num_labels, variant=args.variant, seed=config.seed)

    # Data -----------------------------------------------------------------
    held: list[str] = []
    if labelled:
        data = labelled_dataset(tokenizer, examples, max_length=config.max_length)
    else:
        paras = load_corpus(args.corpus)
        train_paras, _ = split_heldout(paras, args.heldout)
        data = text_dataset(tokenizer, train_paras, max_length=config.max_length, unit=config.text_unit)
        if args.fidelity == -1:
            held = eval_sentences(args.corpus, fraction=args.heldout)
        elif args.fidelity:
            held = heldout_sentences(args.fidelity, seed=1, corpus=args.corpus, fraction=args.heldout)
    if args.max_sequences:
        data.input_ids = data.input_ids[: args.max_sequences]
        if data.token_type_ids is not None:
            data.token_type_ids = data.token_type_ids[: args.max_sequences]
        if data.labels is not None:
            data.labels = data.labels[: args.max_sequences]
    _, steps = phase_steps(config, len(data))
    if env.is_main:
        cap = ("" if config.max_steps is None else f", capped by --max-steps {config.max_steps}"
               if steps == config.max_steps else f"; --max-steps {config.max_steps} is only a cap: "
               f"{config.epochs:g} epoch(s) of the data end after {steps}")
        print(f"distill {config.recipe}: {len(data)} sequences, {steps} optimizer steps per phase "
              f"(batch {config.batch_size} x accum {config.grad_accum}, lr {config.lr:g}, "
              f"{config.schedule}, {env.world_size} process(es){cap})")

    scores = {}
    if held and env.is_main and not resume:
        scores["before"] = fidelity(teacher, student, held, tokenizer, max_length=config.max_length,
                                    progress=progress)

    common = {"tokenizer": tokenizer, "env": env, "resume": resume, "progress": progress, "run_info": run_info}
    if recipe.fake_quant:
        common["fake_quant"] = _fake_quant_from_quant(student, data, config.max_length)
    history = recipe.function(teacher=teacher, student=student, data=data, config=config, out_dir=args.out,
                              **common)

    from pathlib import Path

    out = Path(args.out)
    if held and env.is_main:
        scores["after"] = fidelity(teacher, student, held, tokenizer, max_length=config.max_length,
                                   progress=progress)
        int8 = _int8_copy(student, data, config.max_length) if recipe.int8_fidelity else None
        if int8 is not None:
            scores["after, int8 attention"] = fidelity(teacher, int8, held, tokenizer, max_length=config.max_length,
                                                        progress=progress)
        old = json.loads((out / "fidelity.json").read_text()) if (out / "fidelity.json").is_file() else {}
        merged = {**old, **scores, "sentences": len(held), "heldout_fraction": args.heldout}
        (out / "fidelity.json").write_text(json.dumps(merged, indent=1))
        print(fidelity_table({k: v for k, v in merged.items() if isinstance(v, dict)}))
    if env.is_main and history:
        print(f"final loss {history[-1]['loss']:.5g} after {history[-1]['step']} steps; "
              f"metrics {out / 'metrics.jsonl'}, plot {out / 'losses.png'}, student {out / 'student'}")
    return 0


def _int8_copy(student, data, seq_len: int):
    """A copy of ``student`` (on the CPU) whose attention cores compute the int8 golden model
    (``quant.qat`` frozen, bit-exact to ``quant.golden`` in eval), calibrated on the first 32
    training sequences; None when ``inhibitron.quant`` is not available."""
    try:
        from ..quant.qat import to_qat  # noqa: F401 - availability check
    except ImportError:
        return None
    import copy

    from ..quant.distill_bench import int8_student

    return int8_student(copy.deepcopy(student).cpu(), data, seq_len)


def _fake_quant_from_quant(student, data, seq_len: int):
    """Calibrate the student on the first training sequences and return ``quant.qat.to_qat``'s swap."""
    import torch

    from ..quant.export import calibrate_student
    from ..quant.qat import to_qat

    idx = list(range(min(32, len(data))))
    batch = data.collate(idx)
    student.eval()
    with torch.no_grad():
        cal = calibrate_student(student, batch["input_ids"], batch["attention_mask"], seq_len=seq_len)
    student.train()
    lqs = cal["layer_quants"]
    print("qat: calibrated on", len(idx), "sequences; core SQNR per layer (dB):",
          ", ".join(f"{x:.1f}" for x in cal["sqnr_db"]))
    return lambda model: to_qat(model, lqs, inplace=True, seq_len=seq_len)
