"""``inhibitron sim``: bit-exact cosimulation of the generated core (cocotb + Verilator).

Examples::

    inhibitron sim --config cfg.json
    inhibitron sim --checkpoint out/ckpt --layer 0 --rows 4 --cols 4 --seq-len 16
    inhibitron sim --config cfg.json --heads 50 --idle 0.2 --stall 0.3 --simulator icarus
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sim",
        help="cosimulate the generated core against the golden model (cocotb + Verilator)",
        description="Generate the core, build it with Verilator (or Icarus), stream heads of "
        "stimulus through it (extremes of every format, every valid length 1..n, random, and "
        "real MiniLM Q/K/V codes) at full rate and with idle cycles/backpressure, and compare "
        "every output bit with inhibitron.quant.golden. Prints elements compared, mismatches "
        "(by head,row,column), cycles per head and PE utilization.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, metavar="CFG.json", help="a CoreConfig as JSON")
    src.add_argument("--checkpoint", type=Path, metavar="DIR", help="a quantized checkpoint")
    p.add_argument("--layer", type=int, help="layer index (with --checkpoint)")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--seq-len", type=int, help="n with --checkpoint (default: the checkpoint's)")
    p.add_argument("--heads", type=int, default=8, help="random heads besides extremes, "
                   "every-length and real heads (default 8)")
    p.add_argument("--no-every-length", action="store_true",
                   help="skip the n heads with valid lengths 1..n")
    p.add_argument("--idle", type=float, default=0.2,
                   help="idle-cycle probability of the backpressure run (default 0.2)")
    p.add_argument("--stall", type=float, default=0.3,
                   help="output-stall probability of the backpressure run (default 0.3)")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build-dir", type=Path, default=Path("build/cosim"), metavar="DIR")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run, name=None)


def run(args) -> int:
    import numpy as np

    from inhibitron.commands.generate import config_from_args
    from inhibitron.sim.runner import cosimulate
    from inhibitron.sim.stimulus import REAL_VECTORS, mixed_heads

    cfg = config_from_args(args)
    rng = np.random.default_rng(args.seed)
    heads = mixed_heads(cfg, rng, random_count=args.heads, every_length=not args.no_every_length,
                        real_path=REAL_VECTORS)
    runs = [{"name": "full-rate", "seed": args.seed},
            {"name": "backpressure", "idle_prob": args.idle, "stall_prob": args.stall,
             "seed": args.seed + 1}]
    results = cosimulate(cfg, heads, args.build_dir / cfg.name, simulator=args.simulator, runs=runs)
    if args.json:
        print(json.dumps(results, indent=1))
    ok = True
    for run_, res in zip(runs, results):
        steady = res.get("cycles_per_head") or []
        cph = min(steady) if steady else None
        util = (cfg.useful_pe_cycles_per_head / (2 * cfg.rows * cfg.cols * cph)) if cph else None
        print(f"{run_['name']:>12}: {res.get('heads')} heads, {res['elements_compared']} elements "
              f"compared, {res['mismatches']} mismatches"
              + (f", {cph} cycles/head (best), PE utilization {100 * util:.1f}%" if cph else "")
              + (f", {res['cycles_per_s']:.0f} cycles/s" if res.get("cycles_per_s") else ""))
        for m in res.get("first_mismatches", [])[:10]:
            print(f"    head {m['head']} row {m['row']} col {m['col']}: got {m['got']}, "
                  f"expected {m['expected']}")
        ok &= bool(res.get("passed"))
    print("bit-exact" if ok else "MISMATCH")
    return 0 if ok else 1
