"""The synthesis cache: the input hash is pinned (saved results stay valid) and validates saved results."""

from __future__ import annotations

import dataclasses

from inhibitron.hw.devices import get_device
from inhibitron.hw.synth_cache import design_hash, load_cached
from inhibitron.hw.synth_result import SynthResult

VERILOG = '(* src = "/a/b.py:3" *)\nmodule x(input clk, output y); assign y = clk; endmodule\n'
EXTRA = "pnr=True wrap=True clk=clk rst=rst outreg=True"


def _hash(tmp_path, text=VERILOG, **kw):
    v = tmp_path / "x.v"
    v.write_text(text)
    args = dict(top="x", device=get_device("ecp5-85f"), freq=150.0, seed=1, extra=EXTRA) | kw
    return design_hash([v], args["top"], args["device"], args["freq"], args["seed"], args["extra"])


def test_hash_is_pinned(tmp_path):
    # Changing this value invalidates every saved result (build/compare, docs/efficiency.json).
    assert _hash(tmp_path) == "f7b64b9021ec0895"


def test_hash_ignores_source_locations_only(tmp_path):
    base = _hash(tmp_path)
    assert _hash(tmp_path, VERILOG.replace("/a/b.py:3", "/elsewhere.py:99")) == base
    assert _hash(tmp_path, VERILOG.replace("assign y = clk", "assign y = ~clk")) != base
    assert _hash(tmp_path, seed=2) != base
    assert _hash(tmp_path, device=get_device("ecp5-25f")) != base
    assert _hash(tmp_path, extra=EXTRA.replace("outreg=True", "outreg=False")) != base


def _result(digest):
    return SynthResult(design="a", top="x", device="ecp5-85f", family="ecp5", freq_target_mhz=150.0,
                       seed=1, design_hash=digest, lut4=1, carry=0, lut4_equiv=1, ff=1, dsp=0,
                       bram=0, premap_mul=0, cells={"LUT4": 1}, io_bits=2, wrapped=False)


def test_load_cached(tmp_path):
    path = tmp_path / "x.synth.json"
    assert load_cached(path, "0123", name="a") is None
    path.write_text(_result("0123").to_json())
    assert load_cached(path, "0123", name="a") == _result("0123")
    assert load_cached(path, "0123", name="b") == dataclasses.replace(_result("0123"), design="b")
    assert load_cached(path, "4567", name="a") is None
    path.write_text("{not json")
    assert load_cached(path, "0123", name="a") is None


def test_has_multiplier_tells_products_from_attributes(tmp_path):
    """Only a real ``*`` operator counts; attribute brackets and comments do not."""
    from inhibitron.hw.synth_cache import has_multiplier

    plain = tmp_path / "plain.v"
    plain.write_text('(* keep = 32\'d1 *)\n(* src = "x.py:1" *)\nmodule m(input [3:0] a, output [3:0] y);\n'
                     '  /* no product here */\n  assign y = a + 4\'d1;\nendmodule\n')
    product = tmp_path / "mul.v"
    product.write_text("module m(input [3:0] a, b, output [7:0] y);\n"
                       "  assign y = $signed(a) * $signed(b);\nendmodule\n")
    assert not has_multiplier([plain])
    assert has_multiplier([product])
    assert has_multiplier([plain, product])
