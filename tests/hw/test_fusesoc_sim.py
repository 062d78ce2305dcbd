"""FuseSoC simulation targets: `inhibitron generate --fusesoc` writes the standalone testbench
beside the core, and `fusesoc run --target sim` (Icarus) / `sim_verilator` runs it against the
golden model's expected rows (offline, tiny configuration: seconds)."""

import json
import re
import shutil

import pytest

pytest.importorskip("fusesoc", reason="FuseSoC packaging needs fusesoc (extra 'integration')")
pytest.importorskip("edalize", reason="FuseSoC runs tools through edalize (extra 'integration')")

from inhibitron.cli import main  # noqa: E402
from inhibitron.hw.fusesoc import (  # noqa: E402
    SIM_STIMULUS, core_vlnv, fusesoc_sim, write_fusesoc_core,
)
from inhibitron.hw.toolchain import ToolchainError, find_verilator, have_icarus  # noqa: E402
from inhibitron.sim.standalone import parse_result, write_fusesoc_testbench  # noqa: E402

NAME = "fsim_core"
# non-power-of-two n, 4-bit formats, a 2x2 array: 16 extreme heads of 6 rows simulate in a second
CONFIG = {"rows": 2, "cols": 2, "seq_len": 6, "head_dim": 4, "qk_bits": 4, "v_bits": 4,
          "out_bits": 5, "z_shift": 1, "name": NAME}
HEADS, N, D = 16, 6, 4    # len(extreme_heads(cfg)) for this configuration
TB_FILES = [f"{NAME}_tb.sv", f"{NAME}_tb.json", "run.sh",
            *(f"{NAME}_{s}.memh" for s in ("q", "k", "v", "desc", "h"))]


def _need_icarus():
    if not have_icarus():
        pytest.skip("Icarus Verilog (iverilog) is not installed: apt-get install iverilog")


def _generate(folder, cfg_json):
    assert main(["generate", "--config", str(cfg_json), "--out", str(folder), "--fusesoc"]) == 0
    return folder / f"{NAME}.core"


@pytest.fixture(scope="module")
def cfg_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "cfg.json"
    path.write_text(json.dumps(CONFIG))
    return path


@pytest.fixture(scope="module")
def core(tmp_path_factory, cfg_json):
    return _generate(tmp_path_factory.mktemp("rtl"), cfg_json)


def _copy(folder, dest):
    shutil.copytree(folder, dest)
    return dest / f"{NAME}.core"


def test_generate_writes_the_testbench_and_the_sim_targets(core):
    folder = core.parent
    for f in TB_FILES:
        assert (folder / f).is_file(), f
    text = core.read_text()
    for line in ("  tb:\n    files:\n      - fsim_core_tb.sv\n    file_type: systemVerilogSource\n",
                 "      - fsim_core_h.memh: {copyto: fsim_core_h.memh}\n",
                 "      - fsim_core_desc.memh: {copyto: fsim_core_desc.memh}\n",
                 "  sim: &sim\n", "    flow: sim\n", "      tool: icarus\n", "        - -g2012\n",
                 "    toplevel: fsim_core_tb\n", "  sim_verilator:\n", "      mode: binary\n",
                 "    paramtype: plusarg\n", "    toplevel: fsim_core\n"):
        assert line in text, line
    assert str(folder) not in text
    meta = json.loads((folder / f"{NAME}_tb.json").read_text())
    assert meta["stimulus"] == SIM_STIMULUS and meta["heads"] == HEADS


def test_files_reproducible_and_equal_to_the_testbench_command(core, cfg_json, tmp_path, capsys):
    """A second `generate --fusesoc` writes the same bytes; the testbench files are the ones of
    `inhibitron testbench --stimulus extreme` (the core file lists file names only)."""
    again = _generate(tmp_path / "again", cfg_json)
    for f in sorted(p.name for p in core.parent.iterdir()):
        assert (again.parent / f).read_bytes() == (core.parent / f).read_bytes(), f
    assert main(["testbench", "--config", str(cfg_json), "--stimulus", SIM_STIMULUS,
                 "--out", str(tmp_path / "tb")]) == 0
    capsys.readouterr()
    for f in TB_FILES + [f"{NAME}.v"]:
        assert (tmp_path / "tb" / f).read_bytes() == (core.parent / f).read_bytes(), f


@pytest.mark.icarus
def test_fusesoc_sim_icarus_passes(core, tmp_path):
    """`fusesoc run --target sim` as documented, then with idle cycles and backpressure."""
    _need_icarus()
    for idle, stall in ((0, 0), (250, 350)):
        work = tmp_path / f"work{idle}"
        log = fusesoc_sim(core, "icarus", idle=idle, stall=stall, work_root=work)
        assert f"+idle={idle} +stall={stall} +seed=1" in log
        assert "\nPASS\n" in log
        res = parse_result(log)
        assert res["status"] == "PASS", log[-2000:]
        assert (res["heads"], res["elements"], res["mismatches"]) == (HEADS, HEADS * N * D, 0)
        # copyto: the expected rows lie in the work root, where the testbench reads them
        assert (work / f"{NAME}_h.memh").read_bytes() == (core.parent / f"{NAME}_h.memh").read_bytes()


@pytest.mark.icarus
def test_fusesoc_sim_icarus_fails_on_a_corrupted_expected_row(core, tmp_path):
    """One hex digit of one expected row changed: the run fails and names (head, row, col)."""
    _need_icarus()
    bad = _copy(core.parent, tmp_path / "bad")
    memh = bad.parent / f"{NAME}_h.memh"
    lines = memh.read_text().splitlines()
    head, row = 3, 2
    i = 1 + head * N + row                     # line 0 is the comment
    last = lines[i][-1]
    lines[i] = lines[i][:-1] + ("1" if last == "0" else "0")    # column 0's low bits
    memh.write_text("\n".join(lines) + "\n")
    with pytest.raises(RuntimeError) as info:
        fusesoc_sim(bad, "icarus", work_root=tmp_path / "work")
    message = str(info.value)
    assert f"MISMATCH head {head} row {row} col 0:" in message
    res = parse_result(message)
    assert res["status"] == "FAIL" and res["mismatches"] == 1


@pytest.mark.icarus
def test_fusesoc_sim_fails_without_the_expected_rows(core, tmp_path):
    """A missing memory file fails the FuseSoC run before any simulation (the file is listed)."""
    _need_icarus()
    bad = _copy(core.parent, tmp_path / "bad")
    (bad.parent / f"{NAME}_h.memh").unlink()
    with pytest.raises(RuntimeError, match="fsim_core_h.memh"):
        fusesoc_sim(bad, "icarus", work_root=tmp_path / "work")


@pytest.mark.slow
def test_fusesoc_sim_verilator_passes_with_the_same_cycles(core, tmp_path):
    """`sim_verilator` (verilator --binary) passes; same pacing, same cycle count as Icarus."""
    try:
        find_verilator()
    except ToolchainError as exc:  # pragma: no cover - Verilator is part of the 'sim' extra
        pytest.skip(f"Verilator not available: {exc}")
    log = fusesoc_sim(core, "verilator", idle=250, stall=350, seed=7, work_root=tmp_path / "v")
    res = parse_result(log)
    assert res["status"] == "PASS" and res["elements"] == HEADS * N * D, log[-2000:]
    if have_icarus():
        ref = parse_result(fusesoc_sim(core, "icarus", idle=250, stall=350, seed=7,
                                       work_root=tmp_path / "i"))
        assert ref["cycles"] == res["cycles"]


def test_errors(core, tmp_path):
    folder = core.parent
    other = tmp_path / "other"
    other.mkdir()
    (other / f"{NAME}_tb.sv").write_text("")
    with pytest.raises(ValueError, match="must be in the core's folder"):
        write_fusesoc_core(folder / f"{NAME}.v", testbench=other / f"{NAME}_tb.sv")
    with pytest.raises(ValueError, match=re.escape(f"is {NAME}_tb.sv, not 'x_tb.sv'")):
        write_fusesoc_core(folder / f"{NAME}.v", testbench=folder / "x_tb.sv")
    partial = _copy(folder, tmp_path / "partial")
    (partial.parent / f"{NAME}_q.memh").unlink()
    with pytest.raises(FileNotFoundError, match="fsim_core_q.memh"):
        write_fusesoc_core(partial.parent / f"{NAME}.v", testbench=partial.parent / f"{NAME}_tb.sv")
    with pytest.raises(ValueError, match="tool must be one of icarus, verilator, not 'xsim'"):
        fusesoc_sim(core, "xsim")
    with pytest.raises(ValueError, match="idle must be an integer in 0..999 per mille, not 1000"):
        fusesoc_sim(core, idle=1000)


def test_python_api_writes_the_same_core(core, tmp_path):
    """write_fusesoc_testbench + write_fusesoc_core (the library route) == the CLI's files."""
    from inhibitron.hw.core import CoreConfig

    bench = write_fusesoc_testbench(CoreConfig.from_dict(CONFIG), tmp_path)
    written = write_fusesoc_core(bench.verilog, testbench=bench)
    assert written.read_text() == core.read_text()
    assert f"name: {core_vlnv(NAME)}\n" in written.read_text()
