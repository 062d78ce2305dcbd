"""``inhibitron bench``: run the benchmarks and write the performance report."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the benchmarks, write docs/performance.md",
                       description="Run the benchmarks (golden model, utilization, cosim speed, "
                       "FPGA comparison) and write a Markdown report with the machine and the command.")
    p.add_argument("--out", default="docs/performance.md", help="report path (default docs/performance.md)")
    p.add_argument("--only", nargs="+", metavar="FUNCTION", help="run only these benchmark functions")
    p.set_defaults(func=run)


def run(args) -> int:
    from inhibitron.bench import main_bench

    main_bench(args.out, args.only)
    return 0
