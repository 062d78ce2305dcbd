"""The whole-device capacity search (hw/capacity.py) and ``inhibitron capacity``.

The search logic runs against an injected point runner (milliseconds); one
test synthesises two tiny cores on iCE40 UP5K with Yosys only.
"""

from __future__ import annotations

import json

import pytest

from inhibitron.cli import main
from inhibitron.hw import capacity, compare, synth
from inhibitron.hw.synth_cache import design_hash
from inhibitron.hw.devices import get_device


class FakeRunner:
    """Stands in for compare.run_point: ``outcomes[(size, seed)]`` (or ``[size]``) is
    ``"fit"``, ``"nofit"``, ``"timeout"``, ``"tool"`` or a dict merged into the row."""

    def __init__(self, outcomes, lut_per_pe=100, base_luts=500):
        self.outcomes = outcomes
        self.calls = []
        self.lut_per_pe, self.base_luts = lut_per_pe, base_luts

    def __call__(self, point, **kw):
        self.calls.append((point.kind, point.size, kw["seed"]))
        assert kw["pnr_retries"] == 0
        row = compare.run_point(point, synthesize=False)
        out = self.outcomes.get((point.size, kw["seed"]), self.outcomes.get(point.size, "fit"))
        if kw.get("cache_only"):
            out = "notcached"
        if out == "fit" or isinstance(out, dict):
            fmax = 200.0 - point.size
            row.update(fits=True, seed=kw["seed"],
                       lut4_sites=self.base_luts + self.lut_per_pe * point.size ** 2, ff=10,
                       dsp=0, bram=1, fmax_mhz=fmax,
                       heads_per_s=fmax * 1e6 / row["cycles_per_head"])
            if isinstance(out, dict):
                row.update(out)
        elif out == "nofit":
            row.update(fits=False, limit="TRELLIS_COMB: needs 99999, has 83640")
        elif out == "notcached":
            row.update(fits=None, failure="not cached", limit="not measured: no saved result")
        else:
            row.update(fits=None, failure=out, limit=f"not measured: {out} on seed {kw['seed']}")
        return row


def search(tmp_path, runner, **kw):
    kw.setdefault("seq_len", 16)
    kw.setdefault("head_dim", 16)
    kw.setdefault("progress", False)
    return capacity.capacity_search(kw.pop("kind", "inhibitor"), kw.pop("device", "ecp5-85f"),
                                    out_root=tmp_path, runner=runner, **kw)


def test_doctests():
    import doctest

    assert doctest.testmod(capacity).failed == 0


def test_kinds_are_the_study_points():
    assert capacity.KINDS == compare.ALL_KINDS


def test_default_sizes():
    assert capacity.default_sizes(128, 64) == (1, 2, 4, 8, 16, 32, 64)
    assert capacity.allowed_sizes("baseline-fabric", 12, 8) == (1, 2, 4)
    assert capacity.allowed_sizes("inhibitor", 6, 4) == (1, 2, 3, 4)


def test_walks_upward_and_stops_at_first_failure(tmp_path):
    run = FakeRunner({8: "nofit"})
    cap = search(tmp_path, run)
    assert [c[1] for c in run.calls] == [1, 2, 4, 8]           # 16 is never tried
    assert [r["status"] for r in cap.rows] == ["fits", "fits", "fits", "no fit"]
    assert cap.largest["size"] == 4 and cap.failed["size"] == 8
    assert cap.failed["reason"] == "TRELLIS_COMB: needs 99999, has 83640"
    assert cap.best["size"] == 4 and cap.complete
    d = cap.to_dict()
    assert d["largest"] == 4 and d["failed"] == 8 and d["failed_reason"].startswith("TRELLIS_COMB")


def test_every_size_fits(tmp_path):
    cap = search(tmp_path, FakeRunner({}), sizes=[2, 1])
    assert [r["size"] for r in cap.rows] == [1, 2] and cap.failed is None and cap.largest["size"] == 2


def test_next_seed_only_when_a_seed_does_not_route(tmp_path):
    run = FakeRunner({(4, 1): "timeout", (8, 1): "timeout", (8, 2): "tool"})
    cap = search(tmp_path, run, seeds=(1, 2))
    assert run.calls == [("inhibitor", 1, 1), ("inhibitor", 2, 1), ("inhibitor", 4, 1),
                         ("inhibitor", 4, 2), ("inhibitor", 8, 1), ("inhibitor", 8, 2)]
    four, eight = cap.rows[2], cap.rows[3]
    assert four["status"] == "fits" and four["seed"] == 2 and four["seeds_tried"] == [1, 2]
    assert four["seed_failures"] == ["seed 1: not measured: timeout on seed 1"]
    assert eight["status"] == "unrouted"
    assert eight["reason"] == ("seed 1: not measured: timeout on seed 1; "
                               "seed 2: not measured: tool on seed 2")


def test_does_not_fit_is_not_retried_with_another_seed(tmp_path):
    run = FakeRunner({2: "nofit"})
    search(tmp_path, run, seeds=(1, 2, 3))
    assert run.calls == [("inhibitor", 1, 1), ("inhibitor", 2, 1)]


def test_predicted_dsp_no_fit_is_not_run(tmp_path):
    # ECP5-25F: 28 MULT18X18D; baseline 2x2 needs 2*4 + 3*2 = 14, 4x4 needs 44
    run = FakeRunner({})
    cap = search(tmp_path, run, kind="baseline", device="ecp5-25f")
    assert [c[1] for c in run.calls] == [1, 2]
    assert cap.rows[-1]["status"] == "predicted no fit"
    assert cap.rows[-1]["reason"] == "MULT18X18D: needs >= 44, has 28 (predicted)"
    # the fabric baseline needs no DSP: it runs past 4x4
    run = FakeRunner({})
    cap = search(tmp_path, run, kind="baseline-fabric", device="ecp5-25f")
    assert [c[1] for c in run.calls] == [1, 2, 4, 8, 16]


def test_predicted_lut_no_fit_is_not_run(tmp_path):
    # 500 + 100 S^2 LUT4 sites: 4x4 = 2,100 fits iCE40 UP5K (5,280 logic cells);
    # 8x8 extrapolated from 2x2 and 4x4: 2,100 + 100 * 48 = 6,900 > 1.25 * 5,280
    run = FakeRunner({})
    cap = search(tmp_path, run, device="ice40-up5k")
    assert [c[1] for c in run.calls] == [1, 2, 4]
    assert cap.rows[-1]["status"] == "predicted no fit" and cap.rows[-1]["size"] == 8
    assert "LUT4 sites: needs ~6,900 (extrapolated from 2x2 and 4x4), has 5,280" in cap.rows[-1]["reason"]
    run = FakeRunner({})
    search(tmp_path / "off", run, device="ice40-up5k", lut_margin=None)
    assert [c[1] for c in run.calls] == [1, 2, 4, 8, 16]


def test_rerun_is_free_and_resumes(tmp_path):
    run = FakeRunner({(4, 1): "timeout", 8: "nofit"})
    first = search(tmp_path, run, sizes=[1, 2, 4, 8])
    assert len(run.calls) == 5
    again = FakeRunner({})            # would say "fit" everywhere if it were asked
    second = search(tmp_path, again, sizes=[1, 2, 4, 8])
    assert again.calls == []
    assert [r["status"] for r in second.rows] == [r["status"] for r in first.rows]
    assert all(r["from_cache"] for r in second.rows)
    # a longer timeout tries the seed that timed out again; the does-not-fit stays
    again = FakeRunner({8: "nofit"})
    search(tmp_path, again, sizes=[1, 2, 4, 8], pnr_timeout_s=7200)
    assert again.calls == [("inhibitor", 4, 1)]
    # an interrupted search (here: stopped after 2x2) resumes from what it saved
    fresh = tmp_path / "fresh"
    search(fresh, FakeRunner({}), sizes=[1, 2])
    run = FakeRunner({})
    search(fresh, run, sizes=[1, 2, 4])
    assert run.calls == [("inhibitor", 4, 1)]
    # a different router is a different design run: nothing reused
    run = FakeRunner({})
    search(fresh, run, sizes=[1, 2], router="router2")
    assert len(run.calls) == 2


def test_saved_failure_survives_a_source_edit_elsewhere(tmp_path, monkeypatch):
    # a timed-out size is not run again after an edit of hw/ that leaves its Verilog as it was
    point = compare.StudyPoint("inhibitor", 2, 16, 16)
    folder = compare.build_dir(tmp_path, "ecp5-85f", point)
    folder.mkdir(parents=True)
    (folder / f"{point.tag}.v").write_text(synth.component_verilog(point.build(), top=point.tag))
    monkeypatch.setattr(compare, "_source_digest", lambda: "before")
    search(tmp_path, FakeRunner({2: "timeout"}), sizes=[1, 2], seeds=(1,))
    monkeypatch.setattr(compare, "_source_digest", lambda: "after")
    run = FakeRunner({})
    cap = search(tmp_path, run, sizes=[1, 2], seeds=(1,))
    assert run.calls == [("inhibitor", 1, 1)]            # 1x1's row is looked up again, 2x2 is not
    assert cap.rows[1]["status"] == "unrouted" and cap.rows[1]["from_cache"]
    # a failure saved for other Verilog does not count once the sources differ
    other = compare.build_dir(tmp_path / "other", "ecp5-85f", point)
    other.mkdir(parents=True)
    (other / f"{point.tag}.v").write_text("module other; endmodule\n")
    monkeypatch.setattr(compare, "_source_digest", lambda: "before")
    search(tmp_path / "other", FakeRunner({2: "timeout"}), sizes=[1, 2], seeds=(1,))
    monkeypatch.setattr(compare, "_source_digest", lambda: "after")
    run = FakeRunner({})
    search(tmp_path / "other", run, sizes=[1, 2], seeds=(1,))
    assert run.calls == [("inhibitor", 1, 1), ("inhibitor", 2, 1)]


def test_cached_only_stops_at_first_missing_size(tmp_path):
    search(tmp_path, FakeRunner({}), sizes=[1, 2])
    run = FakeRunner({})
    cap = search(tmp_path, run, cached_only=True)
    assert [r["status"] for r in cap.rows] == ["fits", "fits", "not measured"]
    assert not cap.complete and cap.largest["size"] == 2 and cap.failed is None


def test_refine_bisects_between_fit_and_failure(tmp_path):
    run = FakeRunner({16: "nofit", 13: "nofit", 14: "nofit", 15: "nofit"})
    cap = search(tmp_path, run, seq_len=32, head_dim=16, refine=True, lut_margin=None)
    sizes = [c[1] for c in run.calls]
    assert sizes[:5] == [1, 2, 4, 8, 16]
    assert sizes[5:] == [12, 14, 13]                      # bisection over 9..15
    assert cap.largest["size"] == 12 and cap.failed["size"] == 13
    assert all(r["refine"] for r in cap.rows[5:])
    run = FakeRunner({8: "nofit"})
    cap = search(tmp_path / "b", run, kind="baseline", refine=True)
    assert [c[1] for c in run.calls] == [1, 2, 4, 8]       # no baseline size between 4 and 8


def test_headline_and_json(tmp_path):
    inh = search(tmp_path, FakeRunner({8: "nofit"}))
    base = search(tmp_path, FakeRunner({4: "nofit"}), kind="baseline")
    head = capacity.headline([inh, base])
    assert head["best"]["inhibitor"]["size"] == 4 and head["best"]["baseline"]["size"] == 2
    assert head["ratios"]["baseline"] == pytest.approx(
        inh.best["heads_per_s"] / base.best["heads_per_s"])
    path = capacity.write_json(tmp_path / "out" / "cap.json", [inh, base])
    saved = json.loads(path.read_text())
    assert saved["headline"]["ratios"]["baseline"] == pytest.approx(head["ratios"]["baseline"])
    assert [r["kind"] for r in saved["results"]] == ["inhibitor", "baseline"]
    assert not list(path.parent.glob(".*tmp*"))


def test_parameter_errors(tmp_path):
    with pytest.raises(ValueError, match="sizes \\[3\\] cannot be built for baseline"):
        search(tmp_path, FakeRunner({}), kind="baseline", sizes=[2, 3])
    with pytest.raises(ValueError, match="sizes \\[17\\] cannot be built for inhibitor"):
        search(tmp_path, FakeRunner({}), sizes=[17])
    with pytest.raises(ValueError, match="router must be one of router1, router2 or None, not 'r3'"):
        search(tmp_path, FakeRunner({}), router="r3")
    with pytest.raises(ValueError, match="seeds must be distinct"):
        search(tmp_path, FakeRunner({}), seeds=(1, 1))
    with pytest.raises(ValueError, match="kind must be one of"):
        search(tmp_path, FakeRunner({}), kind="softmax")
    with pytest.raises(ValueError, match="device must be one of"):
        search(tmp_path, FakeRunner({}), device="xc7")


def test_router_keeps_the_cache_key_when_not_given(tmp_path):
    v = tmp_path / "a.v"
    v.write_text("module a; endmodule\n")
    dev = get_device("ecp5-85f")
    old = "pnr=True wrap=True clk=clk rst=rst outreg=True"
    assert synth.pnr_options_extra(None, None) == ""
    base = design_hash([v], "a", dev, 150.0, 1, old + synth.pnr_options_extra(None, None))
    assert base == design_hash([v], "a", dev, 150.0, 1, old)
    assert design_hash([v], "a", dev, 150.0, 1, old + synth.pnr_options_extra("router2", None)) != base
    p = compare.StudyPoint("inhibitor", 2, 8, 16)
    assert compare.build_dir("b", "ecp5-85f", p).name == p.tag
    assert compare.build_dir("b", "ecp5-85f", p, router="router2").name == p.tag + "_router2"
    with pytest.raises(ValueError, match="router must be one of router1, router2 or None"):
        synth.synthesize([v], top="a", out_dir=tmp_path, router="fast")


def test_baseline_fabric_point():
    p = compare.StudyPoint("baseline-fabric", 2, 8, 16)
    assert p.tag == "baseline_fabric_2x2_d8_n16_b8"
    assert p.build_config().multipliers == "fabric" and compare._predicted_dsp(p) == 0
    assert p.cycles_per_head() == compare.StudyPoint("baseline", 2, 8, 16).cycles_per_head()
    assert compare.StudyPoint("inhibitor", 3, 8, 16).size == 3    # partial tiles
    with pytest.raises(ValueError, match="must be multiples of the array size 3"):
        compare.StudyPoint("baseline-fabric", 3, 8, 16)


def cli(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv, exit_code, message", [
    (["--sizes", "3"], 1, "--sizes 3: sizes of baseline must be divisors of both --seq-len 128 and --dims 64"),
    (["--kinds", "inhibitor", "--sizes", "65"], 1, "--sizes 65: sizes of inhibitor must be at most"),
    (["--seeds", "1", "1"], 1, "--seeds must be distinct"),
    (["--bits", "1"], 1, "--bits 1:"),
    (["--pnr-timeout", "0"], 2, "--pnr-timeout: expected a positive number, got '0'"),
    (["--seeds", "-1"], 2, "--seeds: expected a non-negative integer, got -1"),
    (["--kinds", "softmax"], 2, "--kinds: invalid choice: 'softmax'"),
    (["--lut-margin", "0.5"], 2, "--lut-margin: expected a number >= 1 or 0 (off), got '0.5'"),
])
def test_cli_errors(capsys, tmp_path, argv, exit_code, message):
    rc, out, err = cli(capsys, "capacity", "--build", str(tmp_path / "b"), "-q", *argv)
    assert rc == exit_code and message in err and "Traceback" not in err
    if exit_code == 1:
        assert err.startswith("inhibitron capacity: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_cli_json_that_is_a_folder_is_refused(capsys, tmp_path):
    rc, _, err = cli(capsys, "capacity", "--json", str(tmp_path), "--build", str(tmp_path / "b"))
    assert rc == 1 and "--json" in err and "is a folder, not a file" in err


def test_cli_cached_only_prints_tables_and_headline(capsys, tmp_path):
    # a search saved earlier (fake runner); the CLI reports it without running a tool
    for kind, fail in (("inhibitor", 4), ("baseline", 2)):
        search(tmp_path, FakeRunner({fail: "nofit"}), kind=kind, seq_len=16, head_dim=16)
    rc, out, err = cli(capsys, "capacity", "--cached-only", "--build", str(tmp_path), "-q",
                       "--kinds", "inhibitor", "baseline", "--seq-len", "16", "--dims", "16",
                       "--json", str(tmp_path / "cap.json"))
    assert rc == 0, err
    assert "inhibitor on ecp5-85f (n = 16, d = 16, 8-bit, router default, seeds 1 2):" in out
    assert "largest: 2x2" in out and "largest: 1x1" in out
    assert "no fit: TRELLIS_COMB: needs 99999, has 83640" in out
    assert "inhibitor / baseline heads/s: " in out
    saved = json.loads((tmp_path / "cap.json").read_text())
    assert saved["results"][0]["largest"] == 2 and saved["results"][1]["failed"] == 2


@pytest.mark.synth
def test_real_search_ice40_yosys_only(tmp_path, monkeypatch):
    """Two tiny inhibitor cores through Yosys (no place-and-route) on iCE40 UP5K, then a free rerun."""
    monkeypatch.setattr(compare, "_source_digest", lambda: "fixed")  # others may edit hw/ meanwhile
    kw = dict(seq_len=4, head_dim=4, bits=4, sizes=[1, 2], pnr=False, out_root=tmp_path,
              progress=False)
    cap = capacity.capacity_search("inhibitor", "ice40-up5k", **kw)
    assert [r["status"] for r in cap.rows] == ["fits", "fits"], cap.rows
    assert 0 < cap.rows[0]["lut4_sites"] < cap.rows[1]["lut4_sites"] < 5280
    assert all(r["dsp"] == 0 and r["fmax_mhz"] is None for r in cap.rows)
    again = capacity.capacity_search("inhibitor", "ice40-up5k", **kw)
    assert all(r["from_cache"] for r in again.rows) and again.to_dict()["rows"][1]["lut4_sites"] == \
        cap.rows[1]["lut4_sites"]
