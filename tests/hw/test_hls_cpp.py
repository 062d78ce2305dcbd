"""HLS C++ backend: g++ C-simulation bit-exact against quant.golden.

Every configuration is emitted, compiled once (ap_int headers of the hls4ml
wheel) and run on the standard stimulus mix: extremes of every format and of
theta, every valid length 1..n, random heads, and the real MiniLM Q/K/V codes
(:data:`inhibitron.sim.stimulus.REAL_VECTORS`, all 12 heads), with the output
shift varying head to head. Every output code is compared; mismatches are
reported by (head, row, column).
"""

import re
import shutil
import subprocess

import numpy as np
import pytest

from inhibitron.hw.core import CoreConfig
from inhibitron.hw.hls_cpp import (KERNEL_HEADER, TEMPLATE_DIR, build_csim, config_constants,
                                   emit_hls, run_csim)
from inhibitron.sim.stimulus import REAL_VECTORS, Head, example_heads, golden_outputs, mixed_heads

pytest.importorskip("hls4ml", reason="the ap_int.h headers come with hls4ml (extra 'integration')")
if shutil.which("g++") is None:  # pragma: no cover - g++ is on every project machine
    pytest.skip("g++ not found", allow_module_level=True)

CONFIGS = {
    # 8-bit, power-of-two n and d, v_shift
    "s8_n16_d8_a2": dict(seq_len=16, head_dim=8, qk_bits=8, v_bits=8, out_bits=8, v_shift=2),
    # 4-bit formats, non-power-of-two n and d, z_shift
    "s4_n12_d6_b1": dict(seq_len=12, head_dim=6, qk_bits=4, v_bits=4, out_bits=4, z_shift=1),
    # MiniLM head dim, non-power-of-two n, wider output
    "s8_n13_d32_o10": dict(seq_len=13, head_dim=32, qk_bits=8, v_bits=8, out_bits=10),
    # wide formats, large z_shift (the zb clip bites at small zb)
    "s16_n7_d5_b3": dict(seq_len=7, head_dim=5, qk_bits=16, v_bits=12, out_bits=16, z_shift=3),
    # wide formats: z 32 bits, S 35 bits, acc 27 bits (beyond 32-bit C integers)
    "s30_24_n5_d3": dict(seq_len=5, head_dim=3, qk_bits=30, v_bits=24, out_bits=24),
}


def _cfg(name, kwargs):
    return CoreConfig.from_dict(dict(rows=1, cols=1, name=f"hls_{name}", **kwargs))


def assert_bit_exact(got: np.ndarray, want: np.ndarray, heads=None):
    """Every element equal; otherwise list the first mismatches by (head, row, col)."""
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    if len(bad):
        lines = [f"head {h} ({heads[h].label if heads else '?'}) row {i} col {c}: "
                 f"got {got[h, i, c]}, expected {want[h, i, c]}" for h, i, c in bad[:10]]
        pytest.fail(f"{len(bad)} of {got.size} output codes differ:\n" + "\n".join(lines))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cfg = _cfg(name, CONFIGS[name])
            project = emit_hls(cfg, tmp_path_factory.mktemp(name), heads=example_heads(cfg))
            cache[name] = (cfg, project, build_csim(project))
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(CONFIGS))
def test_csim_bit_exact(built, name):
    cfg, project, exe = built(name)
    rng = np.random.default_rng(sum(map(ord, name)))
    heads = mixed_heads(cfg, rng, random_count=24, real_path=REAL_VECTORS, real_count=12)
    labels = {h.label for h in heads}
    assert labels >= {"extreme", "every-length", "random", "real"}
    assert {h.length for h in heads} == set(range(1, cfg.seq_len + 1))
    got = run_csim(exe, cfg, heads)
    want = golden_outputs(cfg, heads)
    assert_bit_exact(got, want, heads)
    # The stimulus reaches the saturation of h wherever the formats allow it.
    qmax = (1 << (cfg.out_bits - 1)) - 1
    if cfg.seq_len << (cfg.v_bits - 1 + cfg.v_shift) > qmax:
        assert np.any(np.abs(want) >= qmax), "no head saturates"
    assert got.size == len(heads) * cfg.seq_len * cfg.head_dim


def test_comparison_can_fail(built):
    """A one-off theta changes outputs: the check above is sensitive to it."""
    cfg, _, exe = built("s4_n12_d6_b1")
    rng = np.random.default_rng(5)
    heads = mixed_heads(cfg, rng, random_count=8, extremes=False, every_length=False)
    got = run_csim(exe, cfg, heads)
    shifted = [Head(h.q, h.k, h.v, h.length, min(h.theta + 1, cfg.widths.theta_max), h.label,
                    h.out_shift) for h in heads]
    with pytest.raises(pytest.fail.Exception, match=r"output codes differ:\nhead \d+"):
        assert_bit_exact(got, golden_outputs(cfg, shifted), heads)


def test_harness_self_check(built):
    """The emitted stimulus/expected pair passes; a tampered expected file fails (exit 1)."""
    cfg, project, exe = built("s8_n16_d8_a2")
    d = project.directory
    ok = subprocess.run([str(exe), str(d / "stimulus.txt"), str(d / "o.txt"), str(d / "expected.txt")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "0 mismatches" in ok.stdout
    codes = (d / "expected.txt").read_text().split("\n")
    first = codes[0].split()
    first[3] = str(int(first[3]) + 1)
    codes[0] = " ".join(first)
    (d / "bad.txt").write_text("\n".join(codes))
    bad = subprocess.run([str(exe), str(d / "stimulus.txt"), str(d / "o.txt"), str(d / "bad.txt")],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "mismatch head 0 row 0 col 3" in bad.stderr


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def test_no_multiplier_no_divider_in_kernel(built):
    """The kernel and top function contain no '*', '/' or '%' operator (the row
    mean divides by shift-subtract), and carry the pipelining pragmas."""
    _, project, _ = built("s8_n13_d32_o10")
    for path in (TEMPLATE_DIR / KERNEL_HEADER, project.source):
        code = _strip_comments(path.read_text())
        code = re.sub(r'#include\s+"[^"]+"', "", code)
        for op in ("*", "/", "%"):
            assert op not in code, f"{path.name} contains {op!r}"
    kernel = (TEMPLATE_DIR / KERNEL_HEADER).read_text()
    assert kernel.count("#pragma HLS PIPELINE II=1") == 2
    assert "#pragma HLS ARRAY_PARTITION" in kernel
    assert "#pragma HLS ARRAY_PARTITION variable=k cyclic" in project.source.read_text()


def test_emitted_files_reproducible(tmp_path):
    cfg = _cfg("s4_n12_d6_b1", CONFIGS["s4_n12_d6_b1"])
    a = emit_hls(cfg, tmp_path / "a", heads=example_heads(cfg))
    b = emit_hls(cfg, tmp_path / "b", heads=example_heads(cfg))
    assert [p.name for p in a.files] == [p.name for p in b.files]
    for pa, pb in zip(a.files, b.files):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
        assert str(tmp_path) not in pa.read_text()
    names = {p.name for p in a.files}
    assert names >= {KERNEL_HEADER, "hls_s4_n12_d6_b1.h", "hls_s4_n12_d6_b1.cpp",
                     "hls_s4_n12_d6_b1_tb.cpp", "run_hls.tcl", "stimulus.txt", "expected.txt"}
    consts = config_constants(cfg)
    header = (tmp_path / "a" / "hls_s4_n12_d6_b1.h").read_text()
    for key in ("z_bits", "sum_bits", "acc_bits", "theta_bits"):
        assert f"static const int {key} = {consts[key]};" in header


def test_heads_table_and_errors(tmp_path):
    from inhibitron.quant.formats import AttentionFormats, HeadQuant, LayerQuant
    cfg = _cfg("s4_n12_d6_b1", CONFIGS["s4_n12_d6_b1"])
    lq = LayerQuant(formats=AttentionFormats(4, 4, 4), head_dim=6, heads=[
        HeadQuant(s_qk=0.5, s_v=0.25, s_h=0.5, theta=-3, z_shift=1, out_shift=2),
        HeadQuant(s_qk=0.5, s_v=0.25, s_h=0.5, theta=7, z_shift=1, out_shift=40)])
    p = emit_hls(cfg, tmp_path, layer_quant=lq, layer=3)
    table = (tmp_path / "hls_s4_n12_d6_b1_heads.h").read_text()
    assert "theta[2] = {-3, 7}" in table
    assert f"shift[2] = {{2, {(1 << cfg.shift_bits) - 1}}}" in table
    assert p.directory == tmp_path
    with pytest.raises(ValueError, match="v_shift/z_shift differ"):
        emit_hls(cfg.replace(z_shift=0), tmp_path / "x", layer_quant=lq)
    bad = Head(np.full((12, 6), 8), np.zeros((12, 6), int), np.zeros((12, 6), int), 3, 0)
    with pytest.raises(ValueError, match="head 0 q"):
        run_csim(tmp_path / "nothing", cfg, [bad])
