"""``inhibitron demo``: the main job end to end on the embedded defaults."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the main job end to end on the embedded defaults",
        description="Real all-MiniLM-L6-v2 teacher -> inhibitor student -> short layer-wise "
        "then full distillation on the embedded corpus -> calibration and int8 quantization -> quantized "
        "checkpoint -> Verilog of one layer's attention core -> Verilator cosimulation on real "
        "activations (bit-exact) -> bit-accuracy report and synthesis summary.")
    from inhibitron.flow import SYNTH_MODES, DemoConfig

    d = DemoConfig()
    p.add_argument("--teacher", default=d.teacher, help="local BERT/DistilBERT folder (default: embedded MiniLM)")
    p.add_argument("--out", default=d.out_dir, help=f"artefact folder (default {d.out_dir}; an earlier "
                   "demo there is replaced)")
    p.add_argument("--distill-steps", type=int, default=d.distill_steps,
                   help=f"optimizer steps per layer (default {d.distill_steps})")
    p.add_argument("--full-steps", type=int, default=d.full_steps,
                   help=f"optimizer steps of the full phase after the layer-wise one (default {d.full_steps})")
    p.add_argument("--max-length", type=int, default=d.max_length,
                   help=f"tokens per sequence = core n (default {d.max_length})")
    p.add_argument("--layer", type=int, default=d.layer, help=f"layer whose core is generated (default {d.layer})")
    p.add_argument("--rows", type=int, default=d.rows, help=f"systolic array rows (default {d.rows})")
    p.add_argument("--cols", type=int, default=d.cols, help=f"systolic array cols (default {d.cols})")
    p.add_argument("--bits", type=int, default=d.bits, help=f"code width (default {d.bits})")
    p.add_argument("--synth", choices=SYNTH_MODES, default=d.synth,
                   help=f"synthesis summary: none, yosys (resources) or pnr (also Fmax); default {d.synth}")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help=f"PyTorch CPU threads (default {d.threads})")
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
