"""FuseSoC: the CAPI2 core of a generated core, and its lint target under Verilator (offline)."""

import pytest

pytest.importorskip("fusesoc", reason="FuseSoC packaging needs fusesoc (extra 'integration')")
pytest.importorskip("edalize", reason="FuseSoC runs tools through edalize (extra 'integration')")

from inhibitron.hw.core import CoreConfig  # noqa: E402
from inhibitron.hw.fusesoc import WAIVERS, core_vlnv, fusesoc_lint, write_fusesoc_core  # noqa: E402
from inhibitron.hw.generate import generate  # noqa: E402
from inhibitron.hw.toolchain import ToolchainError, find_verilator  # noqa: E402

try:
    find_verilator()
except ToolchainError as exc:  # pragma: no cover - Verilator is part of the 'sim' extra
    pytest.skip(f"Verilator not available: {exc}", allow_module_level=True)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    # non-power-of-two n, 4-bit formats, a small array: quick to generate and lint
    cfg = CoreConfig.from_dict(dict(rows=2, cols=2, seq_len=6, head_dim=4, qk_bits=4, v_bits=4,
                                    out_bits=5, z_shift=1, name="fusesoc_core"))
    return generate(cfg, tmp_path_factory.mktemp("rtl"))


def test_core_file(generated):
    core = write_fusesoc_core(generated)
    assert core == generated.verilog.with_name("fusesoc_core.core")
    text = core.read_text()
    assert text.startswith("CAPI=2:\n")
    assert f"name: {core_vlnv('fusesoc_core')}\n" in text
    for line in ("      - fusesoc_core.v\n", "    file_type: verilogSource\n",
                 "      - verilator_waivers.vlt\n", "    file_type: vlt\n",
                 "      - fusesoc_core.json\n", "    flow: lint\n", "      tool: verilator\n",
                 "        - -Wall\n", "    toplevel: fusesoc_core\n"):
        assert line in text, line
    assert (core.parent / WAIVERS.name).read_bytes() == WAIVERS.read_bytes()
    assert str(core.parent) not in text
    assert write_fusesoc_core(generated.verilog).read_text() == text  # deterministic


def test_fusesoc_lint_passes(generated, tmp_path):
    core = write_fusesoc_core(generated)
    log = fusesoc_lint(core, work_root=tmp_path / "work")
    assert "verilator -f" in log
    (vc,) = (tmp_path / "work").glob("*.vc")
    args = vc.read_text().split()
    assert "--lint-only" in args and "-Wall" in args
    assert any(a.endswith("verilator_waivers.vlt") for a in args)
    assert args[args.index("--top-module") + 1] == "fusesoc_core"


def test_fusesoc_lint_can_fail(generated, tmp_path):
    """Without the waiver fileset, -Wall reports Amaranth's width idioms: the run fails."""
    core = write_fusesoc_core(generated)
    text = core.read_text()
    lint = text.index("  lint:")
    broken = text[:lint] + text[lint:].replace("      - waivers\n", "")
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in core.parent.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    (bad / core.name).write_text(broken)
    with pytest.raises(RuntimeError, match="%Warning"):
        fusesoc_lint(bad / core.name)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_fusesoc_core(tmp_path / "missing.v")
    (tmp_path / "x.v").write_text("module x; endmodule\n")
    with pytest.raises(ValueError, match="Verilog identifier"):
        write_fusesoc_core(tmp_path / "x.v", top="1bad")


def test_generate_command_writes_the_core_file_and_hls(tmp_path, capsys):
    """`inhibitron generate --fusesoc --hls`: the .core beside the Verilog, lint-clean under FuseSoC,
    and the HLS C++ project in <out>/hls."""
    from inhibitron.cli import main

    cfg = tmp_path / "c.json"
    cfg.write_text('{"rows": 2, "cols": 2, "seq_len": 5, "head_dim": 4, "qk_bits": 4, '
                   '"v_bits": 4, "out_bits": 6, "name": "cli_core"}')
    assert main(["generate", "--config", str(cfg), "--out", str(tmp_path / "rtl"),
                 "--fusesoc", "--hls"]) == 0
    out = capsys.readouterr().out
    core = tmp_path / "rtl" / "cli_core.core"
    assert core.is_file() and (tmp_path / "rtl" / WAIVERS.name).is_file()
    assert core_vlnv("cli_core") in out
    assert (tmp_path / "rtl" / "hls" / "cli_core.cpp").is_file()
    assert (tmp_path / "rtl" / "hls" / "stimulus.txt").is_file()
    fusesoc_lint(core, work_root=tmp_path / "work")
