"""Synthesis + place-and-route of the small inhibitor core; does-not-fit and argument errors; I/O wrapper."""

from __future__ import annotations

import pytest

from inhibitron.hw import synth
from inhibitron.hw.wrapper_io import wrap_verilog, xor_tree_levels

SMALL = dict(rows=2, cols=2, seq_len=4, head_dim=4, qk_bits=4, v_bits=4, out_bits=4)


def _small_inhibitor():
    from inhibitron.hw.core import CoreConfig, InhibitorAttentionCore

    return InhibitorAttentionCore(CoreConfig.from_dict(SMALL))


@pytest.mark.synth
@pytest.mark.parametrize("device", ["ecp5-25f", "ice40-up5k"])
def test_small_inhibitor_core_synthesizes(tmp_path, device):
    res = synth.synthesize_component(_small_inhibitor(), top="inh_small", out_dir=tmp_path,
                                     device=device, freq_mhz=50, progress=False)
    # wrapped exactly when the core has more port bits than the package has pins
    assert res.wrapped == (res.io_bits > synth.get_device(device).user_io)
    assert res.lut4 > 100 and res.ff > 100
    assert res.dsp == 0 and res.premap_mul == 0  # the inhibitor has no multiplier
    assert res.fmax_mhz is not None and res.fmax_mhz > 0
    assert res.placed_comb and res.placed_comb >= res.lut4
    assert res.critical_path and res.critical_path["delay_ns"] > 0
    # saved next to the design, and the cache returns the same result
    saved = synth.SynthResult.from_json((tmp_path / "inh_small.synth.json").read_text())
    assert saved == res
    again = synth.synthesize_component(_small_inhibitor(), top="inh_small", out_dir=tmp_path,
                                       device=device, freq_mhz=50, progress=False)
    assert again == res
    cached = synth.synthesize_component(_small_inhibitor(), top="inh_small", out_dir=tmp_path,
                                        device=device, freq_mhz=50, cache_only=True)
    assert cached == res
    with pytest.raises(synth.NotCached, match="no saved synthesis result of 'inh_small'"):
        synth.synthesize_component(_small_inhibitor(), top="inh_small", out_dir=tmp_path,
                                   device=device, freq_mhz=60, cache_only=True)


MANY_MULTS = """
module many(input clk, input [7:0] a, input [7:0] b, output reg [15:0] y);
  reg [7:0] ar [0:39]; reg [7:0] br [0:39]; reg [15:0] acc [0:39];
  integer i; reg [15:0] x;
  always @(posedge clk) begin
    ar[0] <= a; br[0] <= b;
    for (i = 1; i < 40; i = i + 1) begin ar[i] <= ar[i-1]; br[i] <= br[i-1]; end
    for (i = 0; i < 40; i = i + 1) acc[i] <= acc[i] + ar[i] * br[i];
    x = 0;
    for (i = 0; i < 40; i = i + 1) x = x ^ acc[i];
    y <= x;
  end
endmodule
"""


@pytest.mark.synth
def test_does_not_fit_names_resource(tmp_path):
    v = tmp_path / "many.v"
    v.write_text(MANY_MULTS)
    with pytest.raises(synth.DesignDoesNotFit,
                       match=r"design 'many' does not fit ecp5-25f: it needs 40 MULT18X18D, "
                             r"the device has 28") as info:
        synth.synthesize(v, top="many", device="ecp5-25f", out_dir=tmp_path / "o", progress=False)
    assert (info.value.needed, info.value.available) == (40, 28)


def test_synthesize_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Verilog file '.*nope.v' does not exist"):
        synth.synthesize(tmp_path / "nope.v", top="x", out_dir=tmp_path)
    v = tmp_path / "x.v"
    v.write_text("module x(input clk, output y); assign y = clk; endmodule\n")
    with pytest.raises(ValueError, match=r"freq_mhz must be a positive number, not 0"):
        synth.synthesize(v, top="x", out_dir=tmp_path, freq_mhz=0)
    with pytest.raises(ValueError, match=r"top must be a Verilog module name, not 'a b'"):
        synth.synthesize(v, top="a b", out_dir=tmp_path)


def test_wrapper_verilog():
    ports = [("clk", "input", 1), ("rst", "input", 1), ("a", "input", 12),
             ("b", "input", 3), ("y", "output", 20), ("z", "output", 1)]
    text = wrap_verilog("core", ports)
    assert "module core_iowrap" in text and "reg [14:0] shreg" in text
    assert "reg [14:0] inreg" in text and "inreg <= shreg;" in text
    assert ".a(inreg[11:0])" in text and ".b(inreg[14:12])" in text
    assert ".z(outs[20:20])" in text and "assign sout = xr2[0];" in text
    assert xor_tree_levels(21) == [6, 2, 1]
    with pytest.raises(ValueError, match=r"needs a clock port"):
        wrap_verilog("core", [("a", "input", 1), ("y", "output", 1)])
    with pytest.raises(ValueError, match=r"does not support inout ports: \['p'\]"):
        wrap_verilog("core", [("clk", "input", 1), ("p", "inout", 2), ("y", "output", 1)])


def test_abc_crash_is_told_from_a_yosys_error(tmp_path):
    """Only a log that stops at the ABC command (no error message) triggers the retry."""
    from inhibitron.hw.synth import _abc_crashed

    crash = tmp_path / "crash.log"
    crash.write_text('7.46.17.5. Executing ABC9.\nRunning ABC command: "/yosys-abc" -s -f x/abc.script 2>&1\n')
    error = tmp_path / "error.log"
    error.write_text('Running ABC command: "/yosys-abc" -s -f x/abc.script 2>&1\nERROR: ABC: execution failed\n')
    other = tmp_path / "other.log"
    other.write_text("ERROR: Module `foo' referenced in module `bar' is not part of the design.\n")
    assert _abc_crashed(crash)
    assert not _abc_crashed(error)
    assert not _abc_crashed(other)
    assert not _abc_crashed(tmp_path / "missing.log")
