"""``inhibitron demo``: the main job end to end on the embedded defaults."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the main job end to end on the embedded defaults",
        description="Real all-MiniLM-L6-v2 teacher -> inhibitor student -> short layer-wise "
        "then full distillation on the embedded corpus -> calibration and int8 quantization -> quantized "
        "checkpoint -> Verilog of one layer's attention core -> Verilator cosimulation on real "
        "activations (bit-exact) -> bit-accuracy report and synthesis summary.")
    p.add_argument("--teacher", default=None, help="local BERT/DistilBERT folder (default: embedded MiniLM)")
    p.add_argument("--out", default="out/demo", help="artefact folder (default out/demo; an earlier "
                   "demo there is replaced)")
    from inhibitron.flow import DemoConfig

    d = DemoConfig()
    p.add_argument("--distill-steps", type=int, default=d.distill_steps,
                   help=f"optimizer steps per layer (default {d.distill_steps})")
    p.add_argument("--full-steps", type=int, default=d.full_steps,
                   help=f"optimizer steps of the full phase after the layer-wise one (default {d.full_steps})")
    p.add_argument("--max-length", type=int, default=64, help="tokens per sequence = core n (default 64)")
    p.add_argument("--layer", type=int, default=0, help="layer whose core is generated (default 0)")
    p.add_argument("--rows", type=int, default=8, help="systolic array rows (default 8)")
    p.add_argument("--cols", type=int, default=8, help="systolic array cols (default 8)")
    p.add_argument("--bits", type=int, default=8, help="code width (default 8)")
    p.add_argument("--synth", choices=("none", "yosys", "pnr"), default="yosys",
                   help="synthesis summary: none, yosys (resources; default) or pnr (also Fmax)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default 2)")
    p.add_argument("--quick", action="store_true", help="reduced sizes (CI): 2 steps, 4x4 array, n=32")
    p.set_defaults(func=run)


def run(args) -> int:
    from inhibitron.flow import DemoConfig, run_demo

    run_demo(DemoConfig(teacher=args.teacher, out_dir=args.out, distill_steps=args.distill_steps,
                        full_steps=args.full_steps,
                        max_length=args.max_length, layer=args.layer, rows=args.rows, cols=args.cols,
                        bits=args.bits, synth=args.synth, seed=args.seed, threads=args.threads,
                        quick=args.quick))
    return 0
