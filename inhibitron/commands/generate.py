"""``inhibitron generate``: Verilog (+ JSON description) of the inhibitor-attention core.

Examples::

    inhibitron generate --config cfg.json --out build/rtl
    inhibitron generate --checkpoint out/ckpt --layer 0 --rows 8 --cols 8 --out build/rtl
    inhibitron generate --default-config > cfg.json       # then edit, pass back with --config
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate the Verilog of the inhibitor-attention core",
        description="Elaborate the systolic inhibitor-attention core (AXI-Stream top) for a "
        "configuration or for one layer of a quantized checkpoint and write <out>/<name>.v and "
        "<out>/<name>.json (ports, widths, cycle formulas, formats). The output is byte-for-byte "
        "reproducible. Invalid configurations are reported before anything is written.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, metavar="CFG.json",
                     help="a CoreConfig as JSON (keys: rows, cols, seq_len, head_dim, qk_bits, "
                     "v_bits, out_bits, v_shift, z_shift, name; r is a run-time descriptor field)")
    src.add_argument("--checkpoint", type=Path, metavar="DIR",
                     help="a quantized checkpoint directory (inhibitron export); needs --layer")
    src.add_argument("--default-config", action="store_true",
                     help="print the default configuration as JSON and exit")
    p.add_argument("--layer", type=int, help="layer index (with --checkpoint)")
    p.add_argument("--rows", type=int, default=8, help="array rows with --checkpoint (default 8)")
    p.add_argument("--cols", type=int, default=8, help="array cols with --checkpoint (default 8)")
    p.add_argument("--seq-len", type=int, help="n with --checkpoint (default: the checkpoint's)")
    p.add_argument("--name", help="module name (default: from the config / inhibitor_attention_layer<N>)")
    p.add_argument("--out", type=Path, default=Path("build/rtl"), metavar="DIR",
                   help="output directory (default: build/rtl)")
    p.add_argument("--lint", action="store_true",
                   help="also run verilator --lint-only -Wall (with the named waivers)")
    p.set_defaults(func=run)


def config_from_args(args):
    """The CoreConfig selected by ``--config`` or ``--checkpoint/--layer`` (validated)."""
    from inhibitron.cli import UserError
    from inhibitron.hw.core import CoreConfig

    if args.config is not None:
        cfg = CoreConfig.from_json(args.config)
        if getattr(args, "name", None):
            cfg = CoreConfig.from_dict({**cfg.to_dict(), "name": args.name})
        return cfg
    if args.layer is None:
        raise UserError("--checkpoint needs --layer N")
    return CoreConfig.from_manifest(args.checkpoint, layer=args.layer, rows=args.rows,
                                    cols=args.cols, seq_len=args.seq_len,
                                    name=getattr(args, "name", None))


def run(args) -> int:
    from inhibitron.hw.core import CoreConfig

    if args.default_config:
        print(json.dumps(CoreConfig().to_dict(), indent=2))
        return 0
    cfg = config_from_args(args)          # raises before anything is written
    from inhibitron.hw.generate import generate, lint

    gen = generate(cfg, args.out)
    print(f"wrote {gen.verilog} and {gen.description}")
    print(f"  {cfg.rows}x{cfg.cols} arrays, n={cfg.seq_len}, d={cfg.head_dim}, "
          f"q/k s{cfg.qk_bits}, v s{cfg.v_bits}, h s{cfg.out_bits}, "
          f"shifts a={cfg.v_shift} b={cfg.z_shift}, r per head in the descriptor "
          f"(0..{cfg.out_shift_max})")
    print(f"  steady state: {cfg.cycles_per_head} cycles/head, "
          f"PE utilization {100 * cfg.ideal_utilization:.1f}% (formula, docs/hardware.md)")
    if args.lint:
        lint(gen.verilog)
        print("  verilator --lint-only -Wall: clean (named waivers: hw/verilator_waivers.vlt)")
    return 0
