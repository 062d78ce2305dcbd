"""``inhibitron capacity``: the largest attention core each device holds, and its heads/s.

Examples::

    inhibitron capacity --device ecp5-85f --router router2 --json build/capacity-85f.json
    inhibitron capacity --device ice40-up5k --kinds inhibitor baseline
    inhibitron capacity --device ecp5-25f --seeds 1 2 3 --pnr-timeout 7200
    inhibitron capacity --device ecp5-85f --kinds inhibitor --refine       # bisect non-powers of two
    inhibitron capacity --device ecp5-85f --cached-only                  # print what is saved

The search (:func:`inhibitron.hw.capacity.capacity_search`) walks square array
sizes upward and stops at the first size that does not fit or does not route
with any seed; every attempt is saved under ``--build``, so a rerun costs
nothing and an interrupted search resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _margin(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 or 0 (off), got {text!r}") from None
    if not (value == 0 or 1 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number >= 1 or 0 (off), got {text!r}")
    return value


def register(subparsers) -> None:
    from inhibitron.cli import non_negative_int, positive_int
    from inhibitron.hw.capacity import DEFAULT_LUT_MARGIN, DEFAULT_PNR_TIMEOUT_S, DEFAULT_SEEDS, KINDS
    from inhibitron.hw.devices import DEFAULT_DEVICE, NEXTPNR_PLACERS, NEXTPNR_ROUTERS, device_names

    p = subparsers.add_parser(
        "capacity",
        help="largest array of each core that places and routes on a device; its Fmax and heads/s",
        description="For each core, walk square array sizes upward (the common divisors of n and "
        "d by default), synthesise and place-and-route each (I/O-wrapped, cached per design "
        "hash under --build) and stop at the first size that does not fit or does not route "
        "with any seed within --pnr-timeout. Sizes predicted not to fit (the baseline's DSPs; "
        "LUT4 sites extrapolated from the sizes measured) are not run. Prints a table per core "
        "and the inhibitor's heads/s over each baseline's, both at their best.",
    )
    p.add_argument("--device", default=DEFAULT_DEVICE, choices=device_names(),
                   help=f"target device (default {DEFAULT_DEVICE})")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), metavar="KIND",
                   help="cores to search: " + ", ".join(KINDS) + " (default: all three)")
    p.add_argument("--seq-len", type=positive_int, default=128, metavar="N",
                   help="keys per head n (default 128)")
    p.add_argument("--dims", "--head-dim", dest="dims", type=positive_int, default=64, metavar="D",
                   help="head dimension d (default 64)")
    p.add_argument("--bits", type=positive_int, default=8, help="Q/K/V/H code width (default 8)")
    p.add_argument("--sizes", type=positive_int, nargs="+", metavar="S",
                   help="sizes to walk (default: the common divisors of n and d); the inhibitor "
                        "takes any S <= min(n, d), the baselines divisors of n and d only")
    p.add_argument("--refine", action="store_true",
                   help="then bisect between the largest fitting and the first failing size "
                        "(non-powers of two for the inhibitor)")
    p.add_argument("--router", choices=NEXTPNR_ROUTERS,
                   help="nextpnr router (default: nextpnr's, router1); router2 routes large "
                        "congested designs that router1 does not finish")
    p.add_argument("--placer", choices=NEXTPNR_PLACERS, help="nextpnr placer (default: nextpnr's, heap)")
    p.add_argument("--seeds", type=non_negative_int, nargs="+", default=list(DEFAULT_SEEDS),
                   metavar="SEED", help="nextpnr seeds, tried in turn while a size does not route "
                                        "(default " + " ".join(map(str, DEFAULT_SEEDS)) + ")")
    p.add_argument("--pnr-timeout", type=_positive_float, default=DEFAULT_PNR_TIMEOUT_S,
                   metavar="SECONDS",
                   help=f"give up on one seed after this long in nextpnr (default {DEFAULT_PNR_TIMEOUT_S:g})")
    p.add_argument("--freq", type=_positive_float, default=150.0, metavar="MHZ",
                   help="nextpnr target clock (default 150)")
    p.add_argument("--lut-margin", type=_margin, default=DEFAULT_LUT_MARGIN, metavar="X",
                   help="skip a size whose LUT4 sites, extrapolated from the two largest sizes "
                        f"measured, exceed X times the device's (default {DEFAULT_LUT_MARGIN:g}; 0: off)")
    p.add_argument("--no-pnr", action="store_true",
                   help="Yosys only: a size fits when its LUT4 sites, FFs, DSPs and block RAMs "
                        "are within the device's (no Fmax, no heads/s)")
    p.add_argument("--cached-only", action="store_true",
                   help="run no tool: report what --build holds, stopping at the first size "
                        "without a saved result")
    p.add_argument("--retry-failed", action="store_true",
                   help="try again the seeds saved as not routed (else their failure is reused)")
    p.add_argument("--build", type=Path, default=Path("build/compare"), metavar="DIR",
                   help="synthesis cache directory (default build/compare, shared with compare)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the rows and the headline as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-size lines")
    p.set_defaults(func=run)


def _fmt(v, spec: str = ",.0f") -> str:
    return "–" if v is None else format(v, spec)


def _table(cap) -> list[str]:
    lines = [f"{cap.kind} on {cap.device} (n = {cap.seq_len}, d = {cap.head_dim}, {cap.bits}-bit, "
             f"router {cap.router or 'default'}, seeds {' '.join(map(str, cap.seeds))}):",
             f"  {'size':>7} {'LUT4 sites':>10} {'FF':>8} {'DSP':>4} {'BRAM':>4} {'Fmax MHz':>8} "
             f"{'heads/s':>9}  status"]
    for r in sorted(cap.rows, key=lambda r: r["size"]):
        s = f"{r['size']}x{r['size']}"
        status = r["status"] + (f": {r['reason']}" if r.get("reason") else "")
        if r.get("status") == "fits" and r.get("seed") is not None:
            status += f" (seed {r['seed']})"
        lines.append(f"  {s:>7} {_fmt(r.get('lut4_sites')):>10} {_fmt(r.get('ff')):>8} "
                     f"{_fmt(r.get('dsp'), 'd'):>4} {_fmt(r.get('bram'), 'd'):>4} "
                     f"{_fmt(r.get('fmax_mhz'), '.1f'):>8} {_fmt(r.get('heads_per_s')):>9}  {status}")
    big, best = cap.largest, cap.best
    if big is None:
        lines.append("  no size fits" if cap.complete else "  nothing measured yet")
    else:
        line = f"  largest: {big['size']}x{big['size']}"
        if best is not None and best is not big:
            line += f"; best heads/s: {best['size']}x{best['size']}"
        if not cap.complete:
            line += " (search incomplete: a size is not measured)"
        lines.append(line)
    return lines


def run(args) -> int:
    from inhibitron.cli import UserError, check_output_dir, check_output_file
    from inhibitron.hw import capacity

    if args.json is not None:
        check_output_file(args.json, "--json")
    if not args.cached_only:
        check_output_dir(args.build, "--build")
    elif not args.build.is_dir():
        raise UserError(f"--build {str(args.build)!r} is not a folder (nothing saved to report)")
    if len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds must be distinct, not {' '.join(map(str, args.seeds))}")
    if args.sizes:
        for kind in args.kinds:
            allowed = capacity.allowed_sizes(kind, args.seq_len, args.dims)
            bad = [s for s in args.sizes if s not in allowed]
            if bad:
                rule = (f"at most min(--seq-len, --dims) = {min(args.seq_len, args.dims)}"
                        if kind == "inhibitor" else
                        f"divisors of both --seq-len {args.seq_len} and --dims {args.dims}")
                raise UserError(f"--sizes {' '.join(map(str, bad))}: sizes of {kind} must be {rule}")
    from inhibitron.quant.formats import AttentionFormats

    try:
        AttentionFormats(args.bits, args.bits, args.bits)
    except (TypeError, ValueError) as exc:
        raise UserError(f"--bits {args.bits}: {exc}") from None

    def log(line: str) -> None:
        print(line, flush=True)

    results = []
    for kind in args.kinds:
        cap = capacity.capacity_search(
            kind, args.device, seq_len=args.seq_len, head_dim=args.dims, bits=args.bits,
            sizes=args.sizes, seeds=args.seeds, router=args.router, placer=args.placer,
            freq_mhz=args.freq, pnr_timeout_s=args.pnr_timeout, pnr=not args.no_pnr,
            out_root=args.build, refine=args.refine, lut_margin=args.lut_margin or None,
            cached_only=args.cached_only, retry_failed=args.retry_failed,
            progress=not args.quiet, log=None if args.quiet else log)
        results.append(cap)
        print("\n".join(_table(cap)))
    head = capacity.headline(results)
    print(f"headline on {args.device}, each core at its best:")
    for kind, best in head["best"].items():
        if best is None:
            print(f"  {kind}: no size fits")
        else:
            print(f"  {kind}: {best['size']}x{best['size']}, {_fmt(best['fmax_mhz'], '.1f')} MHz, "
                  f"{_fmt(best['heads_per_s'])} heads/s")
    for kind, ratio in head["ratios"].items():
        print(f"  inhibitor / {kind} heads/s: " + ("–" if ratio is None else f"{ratio:.2f}x"))
    if args.json is not None:
        print(f"wrote {capacity.write_json(args.json, results)}")
    return 0
