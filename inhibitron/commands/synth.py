"""``inhibitron synth``: synthesis + place-and-route of a core or any Verilog on an FPGA.

Examples::

    inhibitron synth --verilog build/core.v --top inhibitor_core --device ecp5-85f --freq 150 --out build/synth
    inhibitron synth --config cfg.json --device ice40-up5k --out build/synth
    inhibitron synth --config cfg.json --core baseline --device ecp5-85f --out build/synth
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    from inhibitron.hw.devices import DEFAULT_DEVICE, device_names, get_device

    default = get_device(DEFAULT_DEVICE)
    p = subparsers.add_parser(
        "synth",
        help="synthesise and place-and-route a core (Yosys + nextpnr from PyPI)",
        description="Run Yosys and nextpnr (YoWASP builds) on a generated core or on any "
        "Verilog, for an ECP5 or iCE40 device; print and save LUT4/FF/carry/DSP/BRAM counts "
        "and the achieved Fmax as <out>/<top>.synth.json. Cores with more I/O bits than the "
        "package has pins are wrapped (inputs shifted in, outputs XOR-reduced).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + __doc__.split("Examples::", 1)[1],
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--verilog", type=Path, nargs="+", metavar="FILE.v",
                     help="Verilog source file(s); needs --top")
    src.add_argument("--config", type=Path, metavar="CFG.json",
                     help="core configuration (a CoreConfig as JSON); the core is generated")
    p.add_argument("--top", help="top module name (with --verilog; with --config the module "
                   "name to emit, default inhibitor_core / baseline_core)")
    p.add_argument("--core", choices=("inhibitor", "baseline"), default="inhibitor",
                   help="with --config: which core to generate (default: inhibitor)")
    p.add_argument("--device", default=DEFAULT_DEVICE, choices=device_names(),
                   help=f"target device (default: {default.name}, {default.package}, "
                        f"speed {default.speed})")
    p.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                   help="target clock for nextpnr in MHz (default: 100); the achieved Fmax "
                   "is reported either way")
    p.add_argument("--out", type=Path, default=Path("build/synth"), metavar="DIR",
                   help="output directory (default: build/synth)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: 1)")
    p.add_argument("--no-pnr", action="store_true", help="synthesis only (no Fmax)")
    wrap = p.add_mutually_exclusive_group()
    wrap.add_argument("--wrap", dest="wrap", action="store_true", default=None,
                      help="always use the I/O wrapper")
    wrap.add_argument("--no-wrap", dest="wrap", action="store_false",
                      help="never use the I/O wrapper")
    p.add_argument("--no-bram-outreg", action="store_true",
                   help="ECP5: keep Yosys's unregistered block-RAM reads (do not move the "
                        "following register into the DP16KD output register)")
    p.add_argument("--no-dsp-regs", action="store_true",
                   help="ECP5: leave every MULT18X18D unregistered as Yosys maps it (do not move "
                        "the surrounding operand and product registers into the multiplier)")
    p.add_argument("--no-cache", action="store_true",
                   help="rerun even if an identical result exists in --out")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _core_from_config(path: Path, which: str):
    from inhibitron.cli import UserError

    if path.is_dir():
        raise UserError(f"--config {str(path)!r} is a folder; pass a JSON file")
    if not path.is_file():
        raise UserError(f"--config: file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"--config {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"--config: {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config: {path} must hold a JSON object of CoreConfig fields, "
                        f"not a {type(data).__name__}")
    try:
        if which == "baseline":
            from inhibitron.hw.baseline import BaselineConfig, DotProductAttentionCore

            return DotProductAttentionCore(config=BaselineConfig.from_dict(data)), "baseline_core"
        from inhibitron.hw import core as hwcore

        cfg = hwcore.CoreConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise UserError(f"--config {str(path)!r}: {exc}") from None
    return hwcore.InhibitorAttentionCore(config=cfg), "inhibitor_core"


def run(args) -> int:
    from inhibitron.cli import UserError, check_output_dir
    from inhibitron.hw import synth

    check_output_dir(args.out, "--out")  # before any synthesis
    kw = dict(device=args.device, freq_mhz=args.freq, out_dir=args.out, seed=args.seed,
              pnr=not args.no_pnr, wrap=args.wrap, cache=not args.no_cache,
              bram_outreg=not args.no_bram_outreg, dsp_regs=not args.no_dsp_regs)
    try:
        if args.verilog:
            if not args.top:
                raise UserError("--top is required with --verilog")
            result = synth.synthesize(args.verilog, top=args.top, **kw)
        else:
            component, default_top = _core_from_config(args.config, args.core)
            result = synth.synthesize_component(component, top=args.top or default_top, **kw)
    except synth.DesignDoesNotFit as exc:
        raise UserError(str(exc)) from None
    except (synth.ToolError, synth.ToolchainError) as exc:
        raise UserError(str(exc)) from None
    print(result.to_json() if args.json else result.summary())
    print(f"saved {Path(args.out) / (result.top + '.synth.json')}")
    return 0
