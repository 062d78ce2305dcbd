"""Parsers of the tools' reports (Yosys stat, nextpnr report and log), on hand-written inputs."""

from __future__ import annotations

import json

import pytest

from inhibitron.hw import synth_reports


def test_parse_overuse_from_nextpnr_log():
    log = ("Info: Device utilisation:\n"
           "Info: \t          TRELLIS_IO:      33/    197    16%\n"
           "Info: \t          MULT18X18D:      40/     28   142%\n"
           "Info: \t        TRELLIS_COMB:    1061/  24288     4%\n")
    assert synth_reports.parse_overuse(log) == [("MULT18X18D", 40, 28)]


def test_parse_reports():
    stat = {"design": {"num_cells_by_type": {"LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 7,
                                             "MULT18X18D": 2, "DP16KD": 1}}}
    got = synth_reports.parse_yosys_stat(stat, "ecp5")
    assert (got["lut4"], got["carry"], got["lut4_equiv"], got["ff"], got["dsp"], got["bram"]) == \
        (10, 3, 16, 7, 2, 1)
    report = {"fmax": {"clk": {"achieved": 123.4, "constraint": 100}},
              "utilization": {"TRELLIS_COMB": {"used": 5, "available": 10},
                              "DCCA": {"used": 0, "available": 4}},
              "critical_paths": [{"from": "clk", "to": "clk", "path": [
                  {"type": "clk-to-q", "delay": 0.5, "from": {"cell": "a"}, "to": {"cell": "a"}},
                  {"type": "routing", "delay": 1.0, "from": {"cell": "a"}, "to": {"cell": "b"},
                   "sources": ["x.py:3"]},
                  {"type": "logic", "delay": 2.0, "from": {"cell": "b"}, "to": {"cell": "b"}},
                  {"type": "setup", "delay": 0.1, "from": {"cell": "b"}, "to": {"cell": "b"}}]}]}
    got = synth_reports.parse_nextpnr_report(report, "ecp5")
    assert got["fmax_mhz"] == pytest.approx(123.4)
    assert got["utilization"] == {"TRELLIS_COMB": [5, 10]}
    cp = got["critical_path"]
    assert cp["delay_ns"] == pytest.approx(3.6) and cp["routing_ns"] == pytest.approx(1.0)
    assert (cp["from_cell"], cp["to_cell"], cp["sources"]) == ("a", "b", ["x.py:3"])
    json.dumps(got)


def test_parse_ice40_counts_carry_beside_the_lut():
    stat = {"modules": {"\\core": {"num_cells_by_type": {"SB_LUT4": 10, "SB_CARRY": 3,
                                                          "SB_DFFE": 4, "SB_DFF": 1,
                                                          "SB_MAC16": 1}}}}
    got = synth_reports.parse_yosys_stat(stat, "ice40", "core")
    assert (got["lut4"], got["carry"], got["lut4_equiv"], got["ff"], got["dsp"]) == (10, 3, 10, 5, 1)


def test_premap_multipliers_and_versions():
    stat = {"creator": "Yosys 0.47 (git sha1 abc)",
            "design": {"num_cells_by_type": {"$mul": 2, "$macc": 1, "$add": 9}}}
    assert synth_reports.premap_multipliers(stat) == 3
    assert synth_reports.yosys_version(stat) == "Yosys 0.47"
    log = "Info: nextpnr-ecp5 -- Next Generation Place and Route (Version 0.7-42)\n"
    assert synth_reports.nextpnr_version(log) == "0.7-42"
    assert synth_reports.nextpnr_version("") is None


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match=r"family must be one of ecp5, ice40, not 'xc7'"):
        synth_reports.parse_yosys_stat({"design": {}}, "xc7")
