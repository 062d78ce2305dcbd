"""``inhibitron testbench``: a self-checking Verilog testbench of the core, for any simulator.

Examples::

    inhibitron testbench --config cfg.json --out build/tb
    inhibitron testbench --config cfg.json --out build/tb --stimulus real --run verilator
    inhibitron testbench --checkpoint out/ckpt --layer 0 --rows 4 --cols 4 --out build/tb
    build/tb/run.sh icarus +idle=250 +stall=350         # no Python needed from here on
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from inhibitron.commands.generate import add_checkpoint_options

    p = subparsers.add_parser(
        "testbench",
        help="write a self-checking Verilog testbench (+ $readmemh stimulus and expected "
        "outputs) that runs in any simulator",
        description="Generate the core and write next to it a self-checking SystemVerilog "
        "testbench <name>_tb.sv, $readmemh images of the Q/K/V rows, the descriptors and the "
        "expected H rows (from the golden model inhibitron.quant.golden) and run.sh. It runs "
        "with `iverilog -g2012` and `verilator --binary` without Python, prints PASS or the "
        "first mismatches by (head, row, column), exits non-zero on a mismatch, a tlast error "
        "or a stall (no handshake for a bound derived from the cycle formula), and run.sh "
        "reports simulated cycles per second. Plusargs: +idle=PERMILLE +stall=PERMILLE "
        "+seed=S +memdir=DIR.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, metavar="CFG.json", help="a CoreConfig as JSON")
    src.add_argument("--checkpoint", type=Path, metavar="DIR",
                     help="a quantized checkpoint (inhibitron export): its layer's formats, and "
                     "its per-head theta and r on the real MiniLM heads; needs --layer")
    add_checkpoint_options(p)
    p.add_argument("--name", help="module name (default: from the config)")
    p.add_argument("--out", type=Path, default=Path("build/tb"), metavar="DIR",
                   help="output directory (default: build/tb)")
    p.add_argument("--stimulus", choices=("mixed", "random", "extreme", "real"), default="mixed",
                   help="mixed (default: extremes, every valid length, random and real MiniLM "
                   "heads), random, extreme, or real (MiniLM Q/K/V codes)")
    p.add_argument("--heads", type=int, default=8,
                   help="random heads (with --stimulus mixed or random; default 8)")
    p.add_argument("--seed", type=int, default=0, help="stimulus seed (default 0)")
    p.add_argument("--run", choices=("verilator", "icarus"), action="append", default=[],
                   help="also build and run it with this simulator (repeatable)")
    p.add_argument("--idle", type=int, default=0, metavar="PERMILLE",
                   help="with --run: input idle cycles per mille (default 0)")
    p.add_argument("--stall", type=int, default=0, metavar="PERMILLE",
                   help="with --run: output backpressure per mille (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from inhibitron.cli import UserError, check_output_dir
    from inhibitron.commands.generate import config_from_args, refuse_checkpoint_options
    from inhibitron.sim.standalone import run as run_bench
    from inhibitron.sim.standalone import stimulus_heads, write_testbench

    refuse_checkpoint_options(args)
    for option in ("idle", "stall"):
        if not 0 <= getattr(args, option) < 1000:
            raise UserError(f"--{option} must be in 0..999 per mille, not {getattr(args, option)}")
    cfg = config_from_args(args)
    check_output_dir(args.out, "--out")
    heads = stimulus_heads(cfg, kind=args.stimulus, heads=args.heads, seed=args.seed,
                           checkpoint=args.checkpoint, layer=args.layer)
    bench = write_testbench(cfg, heads, args.out, stimulus=args.stimulus)
    print(f"wrote {bench.testbench} (top {bench.top}), {bench.verilog}, "
          f"{len(bench.memfiles)} $readmemh images and {bench.script}")
    print(f"  {bench.heads} heads ({args.stimulus}), {bench.heads * cfg.seq_len * cfg.head_dim} "
          f"elements to compare; stall bound {bench.stall_base} cycles at full rate")
    print(f"  run: {bench.script} verilator   |   {bench.script} icarus")
    ok = True
    for sim in args.run:
        res = run_bench(bench, sim, idle=args.idle, stall=args.stall, seed=args.seed + 1)
        for line in (res["mismatch_lines"] + res["tlast_lines"])[:10]:
            print(f"    {line}")
        if res["stall"]:
            print(f"    {res['stall']}")
        rate = f", {res['cycles_per_s']:.0f} cycles/s" if res.get("cycles_per_s") else ""
        print(f"  {sim}: {'PASS' if res['passed'] else 'FAIL'}: {res.get('elements', 0)} elements "
              f"compared, {res.get('mismatches')} mismatches, {res.get('cycles')} cycles{rate}")
        ok &= res["passed"]
    return 0 if ok else 1
