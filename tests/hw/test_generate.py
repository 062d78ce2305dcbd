"""Verilog generation: reproducible bytes, lint, no multiplier, errors before writing, CLI."""

import json
import os

import pytest

from inhibitron.hw.core import CoreConfig
from inhibitron.hw.generate import core_verilog, generate, lint

SMALL = dict(rows=2, cols=2, seq_len=5, head_dim=4, qk_bits=4, v_bits=4, out_bits=6,
             name="small_core")


def test_reproducible_bytes(tmp_path):
    cfg = CoreConfig.from_dict(SMALL)
    a = generate(cfg, tmp_path / "a")
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        b = generate(cfg, "b")
    finally:
        os.chdir(cwd)
    assert b.verilog.name == "small_core.v"
    assert a.verilog.read_bytes() == (tmp_path / "b" / "small_core.v").read_bytes()
    assert a.description.read_bytes() == (tmp_path / "b" / "small_core.json").read_bytes()
    text = a.verilog.read_text()
    # no source-location attribute (a signal may well be called src)
    assert str(tmp_path) not in text and "/work/" not in text and "(* src =" not in text
    desc = json.loads(a.description.read_text())
    names = {p["name"] for p in desc["ports"]}
    assert {"s_axis_q_tdata", "s_axis_desc_tdata", "m_axis_h_tlast", "clk", "rst"} <= names
    for port in desc["ports"]:
        assert f" {port['name']}" in text or f"{port['name']}," in text


@pytest.mark.parametrize("kwargs", [
    SMALL,
    dict(rows=3, cols=2, seq_len=7, head_dim=3, qk_bits=12, v_bits=5, out_bits=9, z_shift=2,
         name="odd_core"),
    # one-PE-wide arrays: index signals over one element have zero bits
    dict(rows=2, cols=1, seq_len=5, head_dim=3, name="c2x1"),
    dict(rows=1, cols=3, seq_len=5, head_dim=3, name="c1x3"),
    dict(rows=1, cols=1, seq_len=1, head_dim=1, name="c1x1_n1_d1"),
])
def test_verilator_lint_clean(kwargs, tmp_path):
    gen = generate(CoreConfig.from_dict(kwargs), tmp_path)
    lint(gen.verilog)            # raises on any warning beyond the named waivers


@pytest.mark.synth
def test_no_multiplier_before_mapping(tmp_path):
    """Yosys: no $mul/$macc/$macc_v2 cell after proc; opt (8-bit, 4x4 arrays, n=12)."""
    from inhibitron.sim.toolchain import run_yosys
    cfg = CoreConfig(rows=4, cols=4, seq_len=12, head_dim=8, name="nomul")
    gen = generate(cfg, tmp_path)
    run_yosys(f"read_verilog {gen.verilog.name}; hierarchy -top nomul; proc; opt; "
              "select -assert-none t:$mul t:$macc t:$macc_v2", cwd=tmp_path)
    # The check does catch a multiplier (guards against a vacuous pass):
    (tmp_path / "mul.v").write_text("module m(input [7:0] a, b, output [15:0] y);\n"
                                    "assign y = a * 8'd3 + b;\nendmodule\n")
    with pytest.raises(RuntimeError, match="select"):
        run_yosys("read_verilog mul.v; proc; opt; select -assert-none t:$mul t:$macc t:$macc_v2",
                  cwd=tmp_path)


@pytest.mark.synth
@pytest.mark.slow
def test_no_dsp_after_synth_ecp5(tmp_path):
    """Yosys synth_ecp5: no MULT18X18D (the full 8x8, n=128, d=64 core)."""
    from inhibitron.sim.toolchain import run_yosys
    gen = generate(CoreConfig(name="full8x8"), tmp_path)
    run_yosys(f"read_verilog {gen.verilog.name}; synth_ecp5 -top full8x8; "
              "select -assert-none t:MULT18X18D t:ALU54B", cwd=tmp_path, timeout=3000)


def test_errors_before_anything_is_written(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": 8, "cols": 8, "seq_len": 4, "head_dim": 64}))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="array rows=8 is larger than the sequence allows"):
        generate(CoreConfig.from_json(bad), out)
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CoreConfig.from_json(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        CoreConfig.from_json(tmp_path / "junk.json")


def test_manifest_errors():
    with pytest.raises(ValueError, match="unknown manifest format_version 99"):
        CoreConfig.from_manifest({"format_version": 99, "layers": []}, layer=0)
    with pytest.raises(ValueError, match="layer 3 does not exist"):
        CoreConfig.from_manifest({"format_version": 1, "layers": []}, layer=3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CoreConfig.from_manifest("/nonexistent/ckpt", layer=0)


def test_manifest_from_layer_quant():
    """Per-head r is accepted (a run-time descriptor field); a/b must be shared."""
    from inhibitron.quant.formats import AttentionFormats, HeadQuant, LayerQuant
    fmt = AttentionFormats(qk_bits=6, v_bits=7, out_bits=8)
    heads = [HeadQuant(s_qk=0.1, s_v=0.05, s_h=0.2, theta=-3 + i, v_shift=0, z_shift=1,
                       out_shift=2 + 3 * i) for i in range(2)]
    lq = LayerQuant(formats=fmt, head_dim=16, heads=tuple(heads))
    manifest = {"format_version": 1, "layers": [{"attention": lq.to_dict(), "seq_len": 24}]}
    cfg = CoreConfig.from_manifest(manifest, layer=0, rows=4, cols=4)
    assert (cfg.seq_len, cfg.head_dim, cfg.qk_bits, cfg.v_bits, cfg.out_bits) == (24, 16, 6, 7, 8)
    assert (cfg.v_shift, cfg.z_shift) == (0, 1)
    assert max(lq.out_shift) <= cfg.out_shift_max == cfg.widths.acc_bits
    assert cfg.name == "inhibitor_attention_layer0"
    mixed = LayerQuant(formats=fmt, head_dim=16, heads=(heads[0], HeadQuant(
        s_qk=0.1, s_v=0.05, s_h=0.2, theta=0, v_shift=0, z_shift=2, out_shift=2)))
    bad = {"format_version": 1, "layers": [{"attention": mixed.to_dict(), "seq_len": 24}]}
    with pytest.raises(ValueError, match=r"layer 0: heads use different \(v_shift, z_shift\)"):
        CoreConfig.from_manifest(bad, layer=0, rows=4, cols=4)


def test_legacy_out_shift_key():
    """Configs written when r was a constant still load; the key is checked and ignored."""
    cfg = CoreConfig.from_dict({**SMALL, "out_shift": 3})
    assert cfg == CoreConfig.from_dict(SMALL) and "out_shift" not in cfg.to_dict()
    with pytest.raises(ValueError, match="out_shift must be a non-negative integer, not -1"):
        CoreConfig.from_dict({**SMALL, "out_shift": -1})
    with pytest.raises(TypeError):
        CoreConfig(**SMALL, out_shift=3)


def _cli(argv):
    """``inhibitron`` main, with the generate command registered even before cli.py lists it."""
    import inhibitron.cli as cli
    if "inhibitron.commands.generate" in cli.COMMAND_MODULES:
        return cli.main(argv)
    old = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = old + ("inhibitron.commands.generate",)
    try:
        return cli.main(argv)
    finally:
        cli.COMMAND_MODULES = old


def test_cli_generate(tmp_path, capsys):
    main = _cli
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(SMALL))
    assert main(["generate", "--config", str(cfg), "--out", str(tmp_path / "rtl")]) == 0
    assert (tmp_path / "rtl" / "small_core.v").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SMALL, "head_dim": 0}))
    assert main(["generate", "--config", str(bad), "--out", str(tmp_path / "rtl2")]) == 1
    assert "head_dim must be a positive integer, not 0" in capsys.readouterr().err
    assert not (tmp_path / "rtl2").exists()


def test_core_verilog_type_error():
    with pytest.raises(TypeError, match="config must be a CoreConfig"):
        core_verilog({"rows": 2})


def test_zero_width_wires_dropped_per_module():
    """Yosys's `wire [-1:0] x;` (zero-width, never referenced) is removed; referenced names stay."""
    from inhibitron.hw.generate import drop_zero_width_wires

    text = ("module a(x);\n  wire [-1:0] bank;\n  wire [-1:0] \\col[0] ;\n  wire [-1:0] used;\n"
            "  assign y = used;\nendmodule\nmodule b(x);\n  wire [-1:0] bank;\nendmodule\n")
    out = drop_zero_width_wires(text)
    assert "bank" not in out and "col[0]" not in out
    assert "wire [-1:0] used;" in out
