"""``inhibitron bench``: run the benchmarks and write the performance report."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the benchmarks, write docs/performance.md",
                       description="Run the benchmarks (golden model, utilization, cosim speed, "
                       "FPGA comparison) and write a Markdown report with the machine and the command.")
    p.add_argument("--out", default="docs/performance.md", help="report path (default docs/performance.md)")
    p.add_argument("--only", nargs="+", metavar="FUNCTION",
                   help="run only these benchmark functions and replace only their sections of an existing "
                        "report (an unknown name is an error; the report is written only if at least one "
                        "benchmark ran)")
    p.set_defaults(func=run)


def run(args) -> int:
    from inhibitron.bench import check_names, main_bench
    from inhibitron.cli import UserError, check_output_file

    check_names(args.only)                 # unknown names: an error, nothing run or written
    check_output_file(args.out, "--out")
    try:
        main_bench(args.out, args.only)
    except RuntimeError as exc:            # every selected benchmark was skipped
        raise UserError(str(exc)) from None
    return 0
