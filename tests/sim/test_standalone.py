"""The self-checking Verilog testbench (``sim/standalone.py``, ``inhibitron testbench``).

One small core is written once; the testbench is built with Verilator
(``--binary``) and, when installed, Icarus (``iverilog -g2012``) and must:
pass at full rate and with idle cycles + backpressure; report a corrupted
expected element by (head, row, column) and exit non-zero; fail with the
named stall message when the core cannot make progress; run from
``run.sh`` without Python.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from inhibitron.cli import main
from inhibitron.hw.config import CoreConfig
from inhibitron.sim import standalone as S
from inhibitron.sim.stimulus import pack_rows
from inhibitron.sim.toolchain import have_icarus

CFG = dict(rows=2, cols=4, seq_len=10, head_dim=8, qk_bits=8, v_bits=8, out_bits=8,
           name="tb_small")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    cfg = CoreConfig.from_dict(CFG)
    heads = S.stimulus_heads(cfg, kind="mixed", heads=3, seed=4)
    return S.write_testbench(cfg, heads, tmp_path_factory.mktemp("standalone"), stimulus="mixed")


@pytest.fixture(scope="module")
def verilator_runner(bench):
    return S.build(bench, "verilator", jobs=2)


def test_hex_rows_equals_pack_rows():
    rng = np.random.default_rng(0)
    for bits, count in ((2, 5), (4, 3), (6, 7), (12, 4), (16, 9), (13, 1)):
        codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (6, count))
        digits = -(-bits * count // 4)
        assert S.hex_rows(codes, bits) == [f"{v:0{digits}x}" for v in pack_rows(codes, bits)]


def test_files_written(bench):
    cfg = bench.config
    assert bench.testbench.name == "tb_small_tb.sv" and bench.verilog.is_file()
    lines = [ln for ln in bench.memfiles["h"].read_text().splitlines() if not ln.startswith("//")]
    assert len(lines) == bench.heads * cfg.seq_len
    assert (bench.directory / "run.sh").stat().st_mode & 0o100
    assert "$readmemh" in bench.testbench.read_text()


@pytest.mark.cosim
@pytest.mark.parametrize("pacing", [(0, 0), (250, 350), (900, 900)], ids=["full", "bp", "heavy"])
def test_verilator_pass(bench, verilator_runner, pacing):
    res = S.run(bench, "verilator", runner=verilator_runner, idle=pacing[0], stall=pacing[1])
    assert res["passed"], res["output"][-2000:]
    assert res["elements"] == bench.heads * bench.config.seq_len * bench.config.head_dim
    assert res["mismatches"] == 0 and res["cycles"] > 0 and res["cycles_per_s"] > 0


@pytest.mark.cosim
def test_verilator_reports_mismatch(bench, verilator_runner, tmp_path):
    """One expected element off by one: reported at its (head, row, column), exit status 1."""
    import shutil
    cfg = bench.config
    lines = bench.memfiles["h"].read_text().splitlines()
    header, rows = lines[0], lines[1:]
    codes = np.stack([S.unpack_hex(r, cfg.out_bits, cfg.head_dim) for r in rows])
    index = 1 * cfg.seq_len + 3
    codes[index, 5] = codes[index, 5] - 1 if codes[index, 5] > 0 else codes[index, 5] + 1
    for s, path in bench.memfiles.items():
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / bench.memfiles["h"].name).write_text(
        "\n".join([header, *S.hex_rows(codes, cfg.out_bits)]) + "\n")
    res = S.run(bench, "verilator", runner=verilator_runner, memdir=tmp_path)
    assert not res["passed"] and res["returncode"] != 0
    assert res["status"] == "FAIL" and res["mismatches"] == 1
    assert res["mismatch_lines"][0].startswith("MISMATCH head 1 row 3 col 5: got ")


@pytest.mark.cosim
def test_verilator_stall_named(bench, verilator_runner):
    # The output never ready: the core fills its buffers and stops; the bound is forced small.
    res = S.run(bench, "verilator", runner=verilator_runner, stall=1000,
                extra=("+stall_limit=300",))
    assert not res["passed"] and res["returncode"] != 0
    assert res["stall"] and "no handshake on any stream for" in res["stall"]
    assert res["stalled"] == 1


@pytest.mark.cosim
def test_run_sh_without_python(bench, verilator_runner):
    proc = subprocess.run([str(bench.script), "verilator"], capture_output=True, text=True,
                          timeout=600, env={"PATH": _verilator_path(), "HOME": "/tmp"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "\nPASS\n" in proc.stdout and "cycles/s (verilator)" in proc.stdout


def _verilator_path() -> str:
    import os

    from inhibitron.hw.toolchain import find_verilator
    find_verilator()
    return os.environ["PATH"]


@pytest.mark.cosim
@pytest.mark.icarus
@pytest.mark.skipif(not have_icarus(), reason="Icarus Verilog (iverilog) not installed")
def test_icarus_pass(bench, verilator_runner):
    res = S.run(bench, "icarus", idle=250, stall=350, seed=5)
    assert res["passed"], res["output"][-2000:]
    assert res["mismatches"] == 0
    # same pacing, same cycles in both simulators (the reset and the clock included)
    ver = S.run(bench, "verilator", runner=verilator_runner, idle=250, stall=350, seed=5)
    assert ver["passed"], ver["output"][-2000:]
    assert (ver["cycles"], ver["last_head_cycles"]) == (res["cycles"], res["last_head_cycles"])


@pytest.mark.cosim
def test_only_the_clock_waits(bench):
    """The clock is the testbench's only delay and nothing waits on a falling edge: the reset
    is released by a clocked nonblocking assignment, so Verilator evaluates the core's logic
    once per cycle, in the region of its registers (what makes the binary fast)."""
    import re
    text = bench.testbench.read_text()
    assert re.findall(r"#\s*\d", text) == ["#5"]
    assert "negedge" not in text and "repeat" not in text
    assert "rst <= rst_count != 3'd3;" in text


def test_run_sh_builds_like_build():
    """run.sh passes Verilator the options of standalone_run.build, in the same order."""
    from inhibitron.sim.standalone_run import VERILATOR_OPTIONS
    script = S.run_script("x")
    start = script.index("--binary")
    words = script[start:script.index("--top-module", start)].replace("\\\n", " ").split()
    assert words == ["--binary", *VERILATOR_OPTIONS]
    assert "OPT_FAST=-O2" in VERILATOR_OPTIONS and "OPT_GLOBAL=-O2" in VERILATOR_OPTIONS


@pytest.mark.cosim
def test_cli_testbench(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"rows": 2, "cols": 2, "seq_len": 5, "head_dim": 3, "qk_bits": 4, '
                   '"v_bits": 4, "out_bits": 6, "name": "tb_cli"}')
    out = tmp_path / "tb"
    rc = main(["testbench", "--config", str(cfg), "--out", str(out), "--stimulus", "random",
               "--heads", "5", "--run", "verilator", "--idle", "200", "--stall", "300"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "verilator: PASS: 75 elements compared, 0 mismatches" in text
    assert (out / "tb_cli_tb.sv").is_file() and (out / "tb_cli_h.memh").is_file()


def test_cli_bad_stimulus_count(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"rows": 2, "cols": 2, "seq_len": 5, "head_dim": 3, "name": "tb_cli"}')
    rc = main(["testbench", "--config", str(cfg), "--out", str(tmp_path / "o"),
               "--stimulus", "random", "--heads", "0"])
    assert rc == 1
    assert "no heads of stimulus" in capsys.readouterr().err


def test_checkpoint_heads_take_the_layers_theta_and_r():
    """With a checkpoint, the real heads carry the layer's per-head theta and output shift."""
    from inhibitron.quant.checkpoint import FORMAT_VERSION
    from inhibitron.quant.formats import AttentionFormats, HeadQuant, LayerQuant

    heads = [HeadQuant(s_qk=1.0, s_v=1.0, s_h=1.0, theta=t, v_shift=0, z_shift=0, out_shift=r)
             for t, r in ((-3, 2), (5, 0), (40, 7))]
    lq = LayerQuant(formats=AttentionFormats(8, 8, 8), head_dim=8, heads=heads, name="l0")
    manifest = {"format_version": FORMAT_VERSION,
                "layers": [{"attention": lq.to_dict(), "seq_len": 10}]}
    cfg = CoreConfig.from_manifest(manifest, layer=0, rows=2, cols=4, name="tb_ck")
    got = S.stimulus_heads(cfg, kind="real", checkpoint=manifest, layer=0)
    assert [(h.theta, h.out_shift) for h in got[:4]] == [(-3, 2), (5, 0), (40, 7), (-3, 2)]
    assert got[0].label == "real-head0"


def test_standalone_reexports_its_parts():
    """Packing, testbench text and build/run have their own modules; sim.standalone keeps their names."""
    from inhibitron.sim import memh, standalone_run

    for module in (memh, standalone_run):
        for name in module.__all__:
            if name in S.__all__:
                assert getattr(S, name) is getattr(module, name), name
    assert {"hex_rows", "unpack_hex", "build", "run", "parse_result"} <= set(S.__all__)
