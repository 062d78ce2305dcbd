"""The benchmark report renderer (the benchmarks themselves run in `make bench`, never in tests)."""

from inhibitron.bench import machine_description, render_markdown


def test_render_rows_flat_dicts_and_skips():
    results = [
        {"module": "m", "function": "f", "what": "table", "seconds": 1.0,
         "result": {"summary": "S", "rows": [{"a": 1, "b": 0.123456}], "notes": "N"}},
        {"module": "m", "function": "g", "what": "flat", "seconds": 2.0,
         "result": {"heads_per_s": 1390.0, "ratio": 12.8}},
        {"module": "m", "function": "h", "what": "missing", "skipped": "not available: x"},
    ]
    text = render_markdown(results, machine_description(), "make bench")
    assert "Measured by `make bench`" in text and "`m.f()` by `make bench`" in text
    assert "| a | b |" in text and "| 1 | 0.1235 |" in text and "S" in text and "N" in text
    assert "| heads_per_s | ratio |" in text and "| 1390 | 12.8 |" in text
    assert "Skipped: not available: x" in text
    assert "cores" in text


def test_bench_demo_overrides_follow_the_demo_config():
    """quant may not import the CLI's DemoConfig (tests/test_layers.py), so the bench keeps a copy."""
    from inhibitron.flow import DemoConfig
    from inhibitron.quant.distill_bench import DEMO_OVERRIDES

    d = DemoConfig()
    assert (DEMO_OVERRIDES["max_steps"], DEMO_OVERRIDES["full_max_steps"], DEMO_OVERRIDES["max_length"]) == (
        d.distill_steps, d.full_steps, d.max_length)


def test_only_run_replaces_its_sections_and_keeps_the_others():
    from inhibitron.bench import merge_sections

    old = ("# Performance\n\nMeasured by `make bench`.\n\n## Machine\n\n- CPU: old\n\n"
           "## A\n\nold a (a hand note)\n\n## B\n\nold b\n\n## Z\n\nunknown section\n")
    new = "# Performance\n\nMeasured by `inhibitron bench --only b`.\n\n## Machine\n\n- CPU: new\n\n## B\n\nnew b\n"
    text = merge_sections(old, new, ["A", "B", "C"])
    assert text.startswith("# Performance\n\nMeasured by `inhibitron bench --only b`")
    assert "old a (a hand note)\n\n## B" in text          # sections stay apart
    assert "- CPU: new" in text and "- CPU: old" not in text
    assert "old a (a hand note)" in text and "new b" in text and "old b" not in text
    assert text.index("## Machine") < text.index("## A") < text.index("## B") < text.index("## Z")
    assert merge_sections(text, new, ["A", "B", "C"]) == text   # idempotent


def test_main_bench_only_keeps_other_sections(tmp_path, monkeypatch):
    import inhibitron.bench as bench

    out = tmp_path / "performance.md"
    out.write_text("# Performance\n\n## Machine\n\n- x\n\n## cosimulation speed\n\nkept table\n")
    monkeypatch.setattr(bench, "run_benchmarks", lambda only: [
        {"module": "m", "function": "bench_golden", "what": "golden integer model throughput",
         "seconds": 1.0, "date": "2026-11-30", "load": (1.0, 2.0), "result": {"rows": [{"x": 1}]}}])
    bench.main_bench(str(out), ["bench_golden"])
    text = out.read_text()
    assert "kept table" in text and "| x |" in text and "measured 2026-11-30 (load average 1.0" in text
    assert text.index("## golden integer model") < text.index("## cosimulation speed")
    assert not list(tmp_path.glob("*.tmp"))


def test_distill_bench_row_carries_both_wall_times():
    from inhibitron.quant.distill_bench import _row

    fid = {"cosine_mean": 0.9, "cosine_min": 0.7, "spearman": 0.85, "nn_top1": 0.5, "context_rel_mse": [0.4, 0.6]}
    row = _row("run", {"steps": 3, "train_s": 1.5, "total_s": 2.5, "float": fid,
                       "float embedded:fortunes": fid})
    assert (row["train s"], row["total s"], row["ctx rel. MSE (mean)"]) == (1.5, 2.5, 0.5)
    assert list(row)[-1] == "total s" and row["fortunes: cos"] == 0.9


def test_word_level_cells_counts_a_hand_checked_module(tmp_path):
    """An 8-bit adder into a register and a 4-bit register with enable: 3 cells, 2 of them
    registers; the duplicate adder is merged."""
    from inhibitron.sim.bench import word_level_cells

    v = tmp_path / "t.v"
    v.write_text("module t(input clk, input en, input [7:0] a, input [7:0] b, input [3:0] c,\n"
                 "         output reg [7:0] y, output reg [7:0] z, output reg [3:0] w);\n"
                 "  always @(posedge clk) begin y <= a + b; z <= a + b; if (en) w <= c; end\n"
                 "endmodule\n")
    cells = word_level_cells(v, "t")
    assert cells["by_type"] == {"$add": 1, "$dff": 1, "$dffe": 1}, cells
    assert (cells["cells"], cells["flip_flops"]) == (3, 2)
