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
    assert "Measured by `make bench`" in text
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
