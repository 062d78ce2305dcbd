"""The switching-activity energy model and its report section (activity given by hand)."""

import json

import pytest

from inhibitron.hw import compare_report
from inhibitron.hw.energy import DEFAULT_COEFFICIENTS, EnergyCoefficients, energy_pj, sensitivity


def _act(lut, ff, fan, ffs, cycles, bram=0, mul=0):
    return {"toggles": {"lut": lut, "ff": ff, "ram": 0, "dsp": 0, "input": 0},
            "fanout_toggles": {"lut": fan, "ff": 0, "ram": 0, "dsp": 0, "input": 0},
            "ff_cells": ffs, "cycles": cycles, "bram_block_accesses": bram,
            "lutram_accesses": 0, "mul_active": mul}


def test_energy_components():
    c = EnergyCoefficients(lut_toggle_pj=1, ff_toggle_pj=2, clock_pj_per_ff_cycle=3,
                           wire_pj_per_fanout=4, bram_access_pj=5, lutram_access_pj=6, dsp_op_pj=7)
    e = energy_pj(_act(10, 20, 30, 2, 5, bram=1, mul=3), c)
    assert e == {"lut": 10, "ff": 40, "clock": 30, "wire": 120, "bram": 5, "lutram": 0,
                 "dsp": 21, "total": 226}


def test_sensitivity_moves_the_ratio_the_right_way():
    inh = _act(1000, 500, 3000, 100, 100)
    base = _act(1000, 500, 3000, 100, 400, bram=10, mul=50)   # more cycles, BRAM, DSP
    rows = {r["coefficient"]: r for r in sensitivity(inh, base)}
    assert set(rows) == {f for f in DEFAULT_COEFFICIENTS.__dataclass_fields__}
    assert rows["dsp_op_pj"]["ratio_half"] < rows["dsp_op_pj"]["ratio"] < rows["dsp_op_pj"]["ratio_double"]
    assert rows["clock_pj_per_ff_cycle"]["ratio_double"] > rows["clock_pj_per_ff_cycle"]["ratio"]
    # a class both cores share equally pulls the ratio toward 1 when it grows
    assert rows["lut_toggle_pj"]["ratio_double"] < rows["lut_toggle_pj"]["ratio"]


def _res():
    runs = []
    for data in ("real", "random"):
        for kind, act in (("inhibitor", _act(1000, 500, 3000, 100, 100)),
                          ("baseline", _act(800, 900, 4000, 120, 400, bram=10, mul=50))):
            runs.append({"kind": kind, "data": data, "tag": kind, "activity": act,
                         "netlist": {"lut4": 10, "ff": act["ff_cells"], "mul": 1},
                         "energy_pj": energy_pj(act), "opcount_pj": 1000.0 if kind == "inhibitor" else 2000.0})
    sens = {d: sensitivity(runs[2 * i]["activity"], runs[2 * i + 1]["activity"])
            for i, d in enumerate(("real", "random"))}
    return {"point": {"size": 4, "d": 32, "n": 32, "bits": 8, "heads": 3}, "runs": runs,
            "sensitivity": sens}


def test_energy_section_written_and_replaced(tmp_path):
    res = _res()
    js = tmp_path / "energy.json"
    js.write_text(json.dumps(res))
    md = tmp_path / "eff.md"
    md.write_text("# Efficiency\n\n## How to read this\n\n- text\n")
    compare_report.write_energy_section(js, md)
    text = md.read_text()
    assert text.index("## Energy per head from switching activity") < text.index("## How to read this")
    assert "| inhibitor | real | 100 |" in text
    assert "| real | " in text and "2.00x |" in text          # op-count ratio 2000/1000
    assert "`dsp_op_pj` | 2 |" in text
    # rewriting replaces the section, it does not add a second one
    compare_report.write_energy_section(js, md)
    assert md.read_text().count("## Energy per head from switching activity") == 1


@pytest.mark.parametrize("with_json", [True, False])
def test_write_report_includes_saved_energy(tmp_path, with_json):
    from inhibitron.hw import compare

    rows = []
    for k in ("inhibitor", "baseline"):
        r = compare.run_point(compare.StudyPoint(k, 2, 8, 16), synthesize=False)
        r.update(fits=True, lut4=100, carry=10, lut4_sites=120, ff=50, dsp=4 if k == "baseline" else 0,
                 bram=2, premap_mul=0, fmax_mhz=120.0, placed_comb=150,
                 heads_per_s=120e6 / r["cycles_per_head"], critical_path=None)
        rows.append(r)
    if with_json:
        (tmp_path / "energy.json").write_text(json.dumps(_res()))
    text = compare_report.write_report(rows, tmp_path / "efficiency.md", command="pytest").read_text()
    assert ("## Energy per head from switching activity" in text) == with_json
