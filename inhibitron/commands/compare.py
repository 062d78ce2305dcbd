"""``inhibitron compare``: the efficiency study, inhibitor core vs dot-product baseline.

Examples::

    inhibitron compare --sizes 2 4 8 --dims 32 --out docs/efficiency.md
    inhibitron compare --sizes 8 --dims 64 --device ecp5-85f --freq 150
    inhibitron compare --no-synth          # cycle and energy columns only (seconds)
    inhibitron compare --sizes 2 4 --dims 8 --seq-len 16 --no-pnr --jobs 2   # Yosys only
    inhibitron compare --scheduler tcp://10.0.0.5:8786   # points on a running Dask cluster
    inhibitron compare --sizes 8 --dims 64 --seq-len 128 --freq 200 --stream-slices
    inhibitron compare --rows docs/efficiency.json --note docs/efficiency_note.md  # re-render

Points run on ``dask.distributed`` (a ``LocalCluster`` of ``--jobs`` workers, or
the scheduler at ``--scheduler``); ``--jobs 1`` runs them in this process.
Every finished point is cached under ``--build``, so an interrupted sweep
resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    from inhibitron.hw.devices import DEFAULT_DEVICE, device_names

    p = subparsers.add_parser(
        "compare",
        help="inhibitor vs dot-product baseline: resources, Fmax, cycles, energy per head",
        description="Generate, synthesise and place-and-route the inhibitor core and the "
        "dot-product baseline core for a sweep of square array sizes and head dimensions, "
        "and write a Markdown report with tables and PNG plots. Synthesis results are cached "
        "per design hash under --build, so a rerun only synthesises what changed. The full "
        "sweep (2..16, d=32/64) takes hours on 2 cores; limit it with --sizes/--dims.",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16], metavar="S",
                   help="square array sizes S (S x S PEs; default 2 4 8 16; --seq-len and every --dims must be multiples)")
    p.add_argument("--dims", type=int, nargs="+", default=[32, 64], metavar="D",
                   help="head dimensions (default 32 64)")
    p.add_argument("--seq-len", type=int, default=64, metavar="N",
                   help="keys per head n, a multiple of every size (default 64)")
    p.add_argument("--bits", type=int, default=8, help="Q/K/V/H code width (default 8)")
    p.add_argument("--device", default=DEFAULT_DEVICE, choices=device_names(),
                   help=f"target device (default {DEFAULT_DEVICE})")
    p.add_argument("--freq", type=float, default=150.0, metavar="MHZ",
                   help="nextpnr target clock (default 150)")
    p.add_argument("--build", type=Path, default=Path("build/compare"), metavar="DIR",
                   help="synthesis cache directory (default build/compare)")
    p.add_argument("--out", type=Path, default=Path("docs/efficiency.md"), metavar="FILE.md",
                   help="report path; plots go to <dir>/img (default docs/efficiency.md)")
    p.add_argument("--jobs", type=int, default=None, metavar="J",
                   help="workers of the local Dask cluster, one design and one core each "
                        "(default: min(4, CPUs)); 1 runs the points in this process, no cluster")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running Dask scheduler (e.g. tcp://host:8786) to run "
                        "the points on instead of a local cluster; its workers must have "
                        "inhibitron installed and see --build at the same path")
    p.add_argument("--no-pnr", action="store_true",
                   help="synthesis only (Yosys): resources, no place-and-route, no Fmax")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--stream-slices", action="store_true",
                   help="build every core with register slices on its streams "
                        "(stream_slices; designs tagged _sl)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--cached-only", action="store_true",
                   help="report only what --build already holds; run no synthesis (missing "
                        "points are marked 'not measured')")
    p.add_argument("--note", type=Path, metavar="FILE.md",
                   help="Markdown paragraph placed under the report's header (e.g. what this "
                        "run could not measure and why)")
    p.add_argument("--rows", type=Path, metavar="FILE.json",
                   help="render the report from the rows saved beside an earlier one (e.g. "
                        "docs/efficiency.json) instead of running or looking up the sweep "
                        "(the sweep options are then unused); runs no tool")
    p.add_argument("--no-synth", action="store_true",
                   help="skip synthesis: cycles and energy only (printed, no report)")
    p.set_defaults(func=run)


def run(args) -> int:
    from inhibitron.cli import UserError, check_output_dir, check_output_file
    from inhibitron.hw import compare, compare_report

    if not args.no_synth:  # before hours of synthesis
        check_output_file(args.out, "--out")
        check_output_dir(args.build, "--build")
        if args.note is not None and not args.note.is_file():
            raise UserError(f"--note file {str(args.note)!r} does not exist")

    for s in args.sizes:
        if s < 1:
            raise ValueError(f"--sizes: array sizes must be positive, not {s}")
        for d in args.dims:
            if args.seq_len % s or d % s:
                raise ValueError(f"--sizes {s}: --seq-len {args.seq_len} and --dims {d} must be "
                                 f"multiples of every array size")
    if args.no_synth:
        for d in args.dims:
            for s in sorted(args.sizes):
                for kind in compare.KINDS:
                    r = compare.run_point(compare.StudyPoint(kind, s, d, args.seq_len, args.bits),
                                          synthesize=False)
                    print(f"{kind:9s} {s:2d}x{s:<2d} d={d:3d} n={args.seq_len}: "
                          f"{r['cycles_per_head']:8d} cycles/head, "
                          f"{r['energy_pj_per_head'] / 1e3:9.2f} nJ/head "
                          f"({r['adds_per_head']} adds, {r['muls_per_head']} mults)")
        return 0
    rows, device, cmd, pes = _saved_rows(args) if args.rows is not None else _sweep_rows(args)
    cmd += f" --note {args.note}" if args.note else ""
    path = compare_report.write_report(rows, args.out, command=cmd, device=device,
                                       freq_mhz=args.freq, pe_rows=pes,
                                       note=args.note.read_text() if args.note else "")
    print(f"wrote {path} (+ {path.with_suffix('.json').name}, plots in {path.parent / 'img'})")
    return 0


def _saved_rows(args):
    """``--rows``: the rows, device, command and single-PE rows of an earlier report."""
    from inhibitron.cli import UserError
    from inhibitron.hw import compare_report

    try:
        rows = compare_report.load_rows(args.rows)
    except ValueError as exc:
        raise UserError(f"--rows: {exc}") from None
    saved_pes = compare_report.pes_path(args.rows)
    try:
        pes = json.loads(saved_pes.read_text()) if saved_pes.is_file() else None
    except json.JSONDecodeError as exc:
        raise UserError(f"--rows: {str(saved_pes)!r} is not JSON: {exc.msg}") from None
    return rows, rows[0].get("device", args.device), f"inhibitron compare --rows {args.rows}", pes


def _sweep_rows(args):
    """The sweep's rows (run, or looked up with ``--cached-only``), device, command and PE rows."""
    import os

    from inhibitron.hw import compare, synth

    jobs = args.jobs if args.jobs is not None else max(1, min(4, os.cpu_count() or 1))
    rows = compare.run_study(sizes=args.sizes, dims=args.dims, seq_len=args.seq_len,
                             bits=args.bits, device=args.device, freq_mhz=args.freq,
                             out_root=args.build, jobs=jobs, cache_only=args.cached_only,
                             pnr=not args.no_pnr, seed=args.seed, scheduler=args.scheduler,
                             progress=not args.quiet, slices=args.stream_slices)
    cmd = ("inhibitron compare --sizes " + " ".join(map(str, args.sizes)) + " --dims "
           + " ".join(map(str, args.dims)) + f" --seq-len {args.seq_len} --device {args.device}"
           + (f" --bits {args.bits}" if args.bits != 8 else "")
           + f" --freq {args.freq:g}" + (" --cached-only" if args.cached_only else "")
           + (" --no-pnr" if args.no_pnr else "") + (f" --seed {args.seed}" if args.seed != 1 else "")
           + (" --stream-slices" if args.stream_slices else ""))
    try:
        pes = None if args.no_pnr else compare.run_pes(
            device=args.device, bits=args.bits, out_root=args.build,
            cache_only=args.cached_only, progress=not args.quiet)
    except synth.NotCached:
        pes = None
    return rows, args.device, cmd, pes
