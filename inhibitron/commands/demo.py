"""``inhibitron demo``: the main job end to end on the embedded defaults."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the main job end to end on the embedded defaults",
                       description="Run the main job end to end on the embedded defaults "
                       "(real all-MiniLM-L6-v2 teacher, real text from the embedded corpus).")
    p.add_argument("--teacher", default=None, help="local BERT/DistilBERT folder (default: embedded MiniLM)")
    p.add_argument("--sentences", type=int, default=64, help="real sentences to embed (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sentence sample")
    p.add_argument("--out", default="out/demo", help="artefact folder (default out/demo)")
    p.add_argument("--quick", action="store_true", help="reduced sizes (CI)")
    p.set_defaults(func=run)


def run(args) -> int:
    from inhibitron.flow import DemoConfig, run_demo

    run_demo(DemoConfig(teacher=args.teacher, sentences=args.sentences, seed=args.seed,
                        out_dir=args.out, quick=args.quick))
    return 0
