"""Measure both cores' switching activity and apply the energy model (``make bench``).

One job: run :func:`inhibitron.sim.toggles.measure` for the inhibitor and
the dot-product baseline of one study point on real and random heads, apply
:func:`inhibitron.hw.energy.energy_pj` and its sensitivity, and save the
result (``docs/energy.json``, the energy section of ``docs/efficiency.md``).
"""

from __future__ import annotations

from dataclasses import asdict

from inhibitron.hw.energy import (COEFFICIENT_NOTES, DEFAULT_COEFFICIENTS, energy_pj,
                                  sensitivity)

__all__ = ["measure_energy", "bench_energy"]


def measure_energy(*, size: int = 4, head_dim: int = 32, seq_len: int = 32, bits: int = 8,
                   datasets=("real", "random"), heads: int = 3,
                   build_root="build/energy", progress: bool = True) -> dict:
    """Measure the activity of both cores of one study point and apply the model.

    Runs :func:`inhibitron.sim.toggles.measure` for the inhibitor and the
    dot-product baseline (same ``size x size`` array, ``n``, ``d``, ``bits``)
    on each of ``datasets``; returns ``{"point", "coefficients", "runs": [...],
    "sensitivity": {data: [...]}}`` with, per run, the activity per head,
    energy per head by component and the operation-count model's figure.
    """
    import time
    from pathlib import Path

    from . import toggles

    from inhibitron.hw.compare import StudyPoint, run_point

    runs = []
    for data in datasets:
        for kind in ("inhibitor", "baseline"):
            p = StudyPoint(kind, size, head_dim, seq_len, bits)
            t0 = time.monotonic()
            if progress:
                print(f"[energy] {p.tag} on {data} heads ...", flush=True)
            m = toggles.measure(p, data, Path(build_root) / p.tag, heads=heads)
            per = m["per_head"]
            runs.append({"kind": kind, "data": data, "tag": p.tag, "activity": per,
                         "netlist": m["netlist"], "energy_pj": energy_pj(per),
                         "opcount_pj": run_point(p, synthesize=False)["energy_pj_per_head"],
                         "cycles_per_head_formula": p.cycles_per_head(),
                         "seconds": round(time.monotonic() - t0, 1)})
    sens = {}
    for data in datasets:
        inh = next(r for r in runs if r["data"] == data and r["kind"] == "inhibitor")
        base = next(r for r in runs if r["data"] == data and r["kind"] == "baseline")
        sens[data] = sensitivity(inh["activity"], base["activity"])
    return {"point": {"size": size, "d": head_dim, "n": seq_len, "bits": bits, "heads": heads},
            "coefficients": asdict(DEFAULT_COEFFICIENTS), "notes": COEFFICIENT_NOTES,
            "runs": runs, "sensitivity": sens}


def bench_energy() -> dict:
    """``make bench`` entry: switching-activity energy of both cores at 4x4, n = d = 32, 8-bit.

    Saves ``docs/energy.json`` and regenerates the energy section of
    ``docs/efficiency.md`` (:func:`inhibitron.hw.compare_report.write_energy_section`).
    """
    import json
    from pathlib import Path

    from inhibitron.hw.energy_report import write_energy_section

    from inhibitron.bench import machine_description

    res = measure_energy()
    m = machine_description()
    res["machine"] = f"{m['cpu']}, {m['cores']} cores"
    Path("docs/energy.json").write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    write_energy_section("docs/energy.json", "docs/efficiency.md")
    rows = [{"core": r["kind"], "data": r["data"], "cycles": r["activity"]["cycles"],
             "toggle_nJ": r["energy_pj"]["total"] / 1e3, "opcount_nJ": r["opcount_pj"] / 1e3}
            for r in res["runs"]]
    return {"title": "energy per head from switching activity", "rows": rows,
            "notes": "Energy section of docs/efficiency.md; raw activity in docs/energy.json."}
