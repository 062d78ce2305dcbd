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
