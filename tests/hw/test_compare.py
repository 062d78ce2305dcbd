"""The study's bookkeeping and report (no synthesis: rows are built by hand)."""

import json

import pytest

from inhibitron.hw import compare, compare_report


def _row(kind, size, d, **kw):
    p = compare.StudyPoint(kind, size, d, 16)
    r = compare.run_point(p, synthesize=False)
    r.update(fits=True, lut4=100 * size, carry=10, lut4_sites=120 * size, ff=50 * size,
             dsp=size * size if kind == "baseline" else 0, bram=2, premap_mul=0,
             fmax_mhz=100.0 + size, placed_comb=150 * size,
             heads_per_s=(100.0 + size) * 1e6 / r["cycles_per_head"],
             critical_path={"delay_ns": 9.0, "logic_ns": 4.0, "routing_ns": 5.0,
                            "from_cell": "a", "to_cell": "b", "logic_levels": 7, "sources": []})
    r.update(kw)
    return r


def test_points_cycles_and_energy():
    inh = compare.run_point(compare.StudyPoint("inhibitor", 2, 8, 16), synthesize=False)
    base = compare.run_point(compare.StudyPoint("baseline", 2, 8, 16), synthesize=False)
    assert inh["muls_per_head"] == 0 and base["muls_per_head"] > 0
    assert base["energy_pj_per_head"] > inh["energy_pj_per_head"]
    assert inh["cycles_per_head"] > 0 and base["cycles_per_head"] > 0


def test_point_errors():
    with pytest.raises(ValueError, match=r"kind must be one of \('inhibitor', 'baseline', 'baseline-fabric'\), not 'x'"):
        compare.StudyPoint("x", 2, 8)
    with pytest.raises(ValueError, match=r"must be multiples of the array size 3"):
        compare.StudyPoint("baseline", 3, 8, 16)
    with pytest.raises(TypeError, match=r"slices must be a bool, not 'yes'"):
        compare.StudyPoint("inhibitor", 2, 8, 16, slices="yes")


def test_sliced_points_are_their_own_designs():
    """slices=True builds the core with stream_slices, under its own tag, same cycles."""
    for kind in ("inhibitor", "baseline", "baseline-fabric"):
        plain, sliced = (compare.StudyPoint(kind, 2, 8, 16, slices=s) for s in (False, True))
        assert sliced.tag == plain.tag + "_sl"
        assert sliced.build_config().stream_slices and not plain.build_config().stream_slices
        assert sliced.cycles_per_head() == plain.cycles_per_head()
        assert compare.run_point(sliced, synthesize=False)["slices"] is True


def test_predicted_dsp_limit_skips_synthesis():
    row = compare.run_point(compare.StudyPoint("baseline", 16, 16, 16), device="ecp5-25f")
    assert row["fits"] is False
    assert row["limit"] == "MULT18X18D: needs >= 560, has 28 (predicted)"   # 2*16*16 MAC PEs + 3*16 softmax


def test_report(tmp_path):
    rows = [_row(k, s, 8) for s in (2, 4) for k in ("inhibitor", "baseline")]
    rows.append(dict(_row("baseline", 8, 8), fits=False, limit="MULT18X18D: needs 67, has 28"))
    path = compare_report.write_report(rows, tmp_path / "eff.md", command="pytest")
    text = path.read_text()
    assert "## Headline" in text and "4x4, d = 8" in text
    assert "| 2x2 |" in text and "no fit" in text
    assert "8x8 does not fit (MULT18X18D: needs 67, has 28)" in text
    assert "Horowitz, ISSCC 2014" in text
    for name in ("eff_resources.png", "eff_fmax.png", "eff_energy.png"):
        assert (tmp_path / "img" / name).stat().st_size > 1000
    saved = (tmp_path / "eff.json").read_bytes()
    assert json.loads(saved)[0]["fmax_mhz"] == rows[0]["fmax_mhz"]
    # how a row was obtained is not a result: a re-render from the cache rewrites the same bytes
    compare_report.write_report([dict(r, from_cache=True) for r in rows], tmp_path / "eff.md",
                                command="pytest")
    assert (tmp_path / "eff.json").read_bytes() == saved and b"from_cache" not in saved


def test_report_timing_section(tmp_path):
    rows = [_row(k, s, 8) for s in (2, 4) for k in ("inhibitor", "baseline")]
    rows[2]["fmax_mhz"] = 160.0
    pes = [{"pe": "L1 PE (inhibitor score)", "lut4": 17, "carry": 16, "lut4_sites": 49, "ff": 44,
            "dsp": 0, "fmax_mhz": 253.2}]
    text = compare_report.write_report(rows, tmp_path / "eff.md", command="pytest", pe_rows=pes).read_text()
    assert "## Timing closure of the inhibitor core" in text
    assert "| 2x2 d=8 n=16 | 102.0 | no | no | `a` -> `b` (4.00 / 5.00) |" in text
    assert "| 4x4 d=8 n=16 | 160.0 | yes | no |" in text
    assert "L1 PE: 49 LUT4 sites (17 LUT4 + 16 CCU2C), within the 60-site target" in text


def test_study_keeps_sweep_order(tmp_path):
    # baselines whose MAC PEs exceed the 28 DSPs of an ECP5-25F are not synthesised
    rows = compare.run_study(sizes=[16, 8], dims=[16], seq_len=16, device="ecp5-25f",
                             kinds=("baseline",), jobs=1, progress=False, out_root=tmp_path)
    assert [(r["size"], r["fits"]) for r in rows] == [(8, False), (16, False)]
    assert rows[0]["limit"] == "MULT18X18D: needs >= 152, has 28 (predicted)"
    with pytest.raises(ValueError, match="jobs must be a positive integer, not 0"):
        compare.run_study(jobs=0)


def test_cached_only_point_is_not_measured(tmp_path):
    row = compare.run_point(compare.StudyPoint("inhibitor", 2, 8, 16), out_root=tmp_path,
                            cache_only=True, progress=False)
    assert row["fits"] is None
    assert row["limit"] == "not measured: no saved result (run without --cached-only)"
    assert not list(tmp_path.rglob("*.synth.json"))


def test_cached_only_falls_back_to_router2(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from inhibitron.hw import synth

    calls = []

    def fake(component, *, top, out_dir, router=None, cache_only=False, **kw):
        component._MustUse__silence = True     # not elaborated here
        calls.append((router, cache_only))
        if router != "router2":
            raise synth.NotCached(out_dir)
        return SimpleNamespace(seed=1, lut4=10, carry=1, lut4_equiv=12, ff=5, dsp=0, bram=2,
                               premap_mul=0, fmax_mhz=80.0, placed_comb=11,
                               critical_path=None, runtime_s=1.0)

    monkeypatch.setattr(synth, "synthesize_component", fake)
    row = compare.run_point(compare.StudyPoint("inhibitor", 2, 8, 16), out_root=tmp_path,
                            cache_only=True, progress=False)
    assert calls == [(None, True), ("router2", True)]
    assert (row["fits"], row["fmax_mhz"], row["router"]) == (True, 80.0, "router2")
    compare_report.write_report([row], tmp_path / "eff.md", command="test")
    assert "- inhibitor 2x2 d = 8: --router router2, seed 1" in (tmp_path / "eff.md").read_text()
    # not cache_only: the default flow's outcome stands (no silent switch of router)
    calls.clear()
    row = compare.run_point(compare.StudyPoint("inhibitor", 2, 8, 16), out_root=tmp_path,
                            progress=False)
    assert calls == [(None, False)] and row["fits"] is None


def test_report_rerendered_from_its_saved_rows(capsys, tmp_path):
    from inhibitron.cli import main

    rows = [_row(k, s, 8) for s in (2, 4) for k in ("inhibitor", "baseline")]
    first = compare_report.write_report(rows, tmp_path / "a" / "eff.md", command="pytest")
    rc = main(["compare", "--rows", str(first.with_suffix(".json")), "--out",
               str(tmp_path / "b" / "eff.md"), "-q"])
    assert rc == 0
    again = tmp_path / "b" / "eff.md"
    assert again.with_suffix(".json").read_bytes() == first.with_suffix(".json").read_bytes()
    # the same page, but for the command that made it
    strip = lambda p: [ln for ln in p.read_text().splitlines() if not ln.startswith("Produced by")]  # noqa: E731
    assert strip(again) == strip(first)
    assert "inhibitron compare --rows" in again.read_text()
