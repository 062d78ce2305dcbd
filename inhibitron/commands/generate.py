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
        epilog="examples:" + __doc__.split("Examples::", 1)[1],
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, metavar="CFG.json",
                     help="a CoreConfig as JSON (keys: rows, cols, seq_len, head_dim, qk_bits, "
                     "v_bits, out_bits, v_shift, z_shift, name; r is a run-time descriptor field)")
    src.add_argument("--checkpoint", type=Path, metavar="DIR",
                     help="a quantized checkpoint directory (inhibitron export); needs --layer")
    src.add_argument("--default-config", action="store_true",
                     help="print the default configuration as JSON and exit")
    add_checkpoint_options(p)
    p.add_argument("--name", help="module name (default: from the config / inhibitor_attention_layer<N>)")
    p.add_argument("--out", type=Path, default=Path("build/rtl"), metavar="DIR",
                   help="output directory (default: build/rtl)")
    p.add_argument("--lint", action="store_true",
                   help="also run verilator --lint-only -Wall (with the named waivers)")
    p.add_argument("--fusesoc", action="store_true",
                   help="also write <out>/<name>.core (FuseSoC CAPI2: the Verilog, the waiver "
                   "file, a Verilator lint target, simulation targets sim (Icarus) and "
                   "sim_verilator; `fusesoc --cores-root <out> run --target sim <vlnv>`), copy the "
                   "waivers beside it and write the self-checking testbench it runs (the files of "
                   "`inhibitron testbench --stimulus extreme`: <name>_tb.sv, <name>_*.memh with the "
                   "golden model's expected rows, run.sh)")
    p.add_argument("--hls", action="store_true",
                   help="also write the HLS C++ of the same configuration to <out>/hls "
                   "(kernel, top function, C-simulation testbench with example stimulus; "
                   "see docs/integration.md)")
    p.set_defaults(func=run)


#: Options that size the core from a checkpoint; a --config file sets them itself.
_CHECKPOINT_ONLY = ("rows", "cols", "seq_len", "layer")


def read_config_file(path: Path, option: str = "--config"):
    """The CoreConfig of a JSON file, every problem a :class:`UserError` naming the file."""
    from inhibitron.cli import UserError
    from inhibitron.hw.core import CoreConfig

    if path.is_dir():
        raise UserError(f"{option} {str(path)!r} is a folder; pass a JSON file "
                        "(inhibitron generate --default-config > cfg.json writes one)")
    if not path.is_file():
        raise UserError(f"{option} file {str(path)!r} does not exist")
    try:
        return CoreConfig.from_json(path)
    except UnicodeDecodeError as exc:
        raise UserError(f"{option} {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (TypeError, ValueError) as exc:
        # from_dict raises TypeError for a wrong type ("rows must be an integer, not '2'")
        # and for a JSON value that is not an object.
        raise UserError(f"{option} {str(path)!r}: {exc}") from None


def add_checkpoint_options(p) -> None:
    """``--layer``, ``--rows``, ``--cols``, ``--seq-len``: the core of one checkpoint layer.

    They default to ``None`` so that :func:`refuse_checkpoint_options` can tell
    when they were given together with ``--config``.
    """
    p.add_argument("--layer", type=int, help="layer index (with --checkpoint)")
    p.add_argument("--rows", type=int, default=None,
                   help="array rows with --checkpoint (default 8; with --config set rows in the file)")
    p.add_argument("--cols", type=int, default=None,
                   help="array cols with --checkpoint (default 8; with --config set cols in the file)")
    p.add_argument("--seq-len", type=int, help="n with --checkpoint (default: the checkpoint's)")


def refuse_checkpoint_options(args) -> None:
    """With ``--config``, refuse ``--rows/--cols/--seq-len/--layer`` (they size a core from a checkpoint).

    The parser's defaults of these options must be ``None`` (unset).
    """
    from inhibitron.cli import UserError

    if args.config is None:
        return
    mixed = [f"--{k.replace('_', '-')}" for k in _CHECKPOINT_ONLY if getattr(args, k, None) is not None]
    if mixed:
        raise UserError(f"{', '.join(mixed)} only apply with --checkpoint; with --config set "
                        f"{', '.join(m[2:].replace('-', '_') for m in mixed)} in {str(args.config)!r}")


def config_from_args(args):
    """The CoreConfig selected by ``--config`` or ``--checkpoint/--layer`` (validated)."""
    from inhibitron.cli import UserError
    from inhibitron.hw.core import CoreConfig

    if args.config is not None:
        cfg = read_config_file(args.config)
        if getattr(args, "name", None):
            try:
                cfg = CoreConfig.from_dict({**cfg.to_dict(), "name": args.name})
            except (TypeError, ValueError) as exc:
                raise UserError(f"--name: {exc}") from None
        return cfg
    if args.layer is None:
        raise UserError("--checkpoint needs --layer N")
    try:
        return CoreConfig.from_manifest(args.checkpoint, layer=args.layer,
                                        rows=8 if args.rows is None else args.rows,
                                        cols=8 if args.cols is None else args.cols, seq_len=args.seq_len,
                                        name=getattr(args, "name", None))
    except TypeError as exc:
        raise UserError(f"--checkpoint {str(args.checkpoint)!r} layer {args.layer}: {exc}") from None


def run(args) -> int:
    from inhibitron.hw.core import CoreConfig

    if args.default_config:
        print(json.dumps(CoreConfig().to_dict(), indent=2))
        return 0
    from inhibitron.cli import check_output_dir

    refuse_checkpoint_options(args)
    cfg = config_from_args(args)          # raises before anything is written
    check_output_dir(args.out, "--out")
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
    if args.fusesoc:
        from inhibitron.hw.fusesoc import core_vlnv, write_fusesoc_core
        from inhibitron.sim.standalone import write_fusesoc_testbench

        bench = write_fusesoc_testbench(cfg, args.out)
        core = write_fusesoc_core(gen, testbench=bench)
        print(f"  wrote {core} ({core_vlnv(cfg.name)}; targets default, lint, sim, sim_verilator) "
              f"and its testbench {bench.testbench.name} ({bench.heads} heads, "
              f"{bench.heads * cfg.seq_len * cfg.head_dim} elements to compare)")
    if args.hls:
        from inhibitron.hw.hls_cpp import emit_hls
        from inhibitron.sim.stimulus import example_heads

        project = emit_hls(cfg, args.out / "hls", heads=example_heads(cfg))
        print(f"  wrote the HLS C++ project {project.directory} (top {project.top}, "
              f"{len(project.files)} files)")
    return 0
