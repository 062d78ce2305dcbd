"""QONNX export: Quant nodes + the InhibitorAttention custom op, executed by qonnx,
bit-exact against quant.golden (round trip through a file and ModelWrapper)."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("qonnx", reason="QONNX export needs qonnx (extra 'integration')")

from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.core.onnx_exec import execute_onnx  # noqa: E402

from inhibitron.quant.formats import AttentionFormats, HeadQuant, LayerQuant  # noqa: E402
from inhibitron.quant.golden import golden_from_float, inhibitor_attention_int  # noqa: E402
from inhibitron.quant.qonnx_export import DOMAIN, export_qonnx, qonnx_graph, write_qonnx  # noqa: E402
from inhibitron.sim.stimulus import REAL_VECTORS  # noqa: E402

# (qk_bits, v_bits, out_bits, shift kind): 8-bit with a, 4-bit with b, 16-bit with a
FORMATS = [(8, 8, 8, "a"), (4, 4, 4, "b"), (16, 12, 16, "a"), (6, 8, 10, "b")]


def _layer_quant(rng, qk, vb, ob, kind, heads=3, d=5):
    fmt = AttentionFormats(qk, vb, ob)
    w = fmt.widths(head_dim=d, seq_len=16)
    shift = dict(v_shift=1) if kind == "a" else dict(z_shift=2)
    hs = [HeadQuant(s_qk=float(rng.uniform(0.01, 0.2)), s_v=float(rng.uniform(0.01, 0.1)),
                    s_h=float(rng.uniform(0.01, 0.1)),
                    theta=int(rng.integers(w.theta_min, w.theta_max + 1)) if h == 0 else int(rng.integers(-40, 10)),
                    out_shift=int(rng.integers(0, 6)), **shift) for h in range(heads)]
    return LayerQuant(formats=fmt, head_dim=d, heads=hs)


def assert_equal_codes(got, want, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    if len(bad):
        lines = [f"index {tuple(int(i) for i in b)}: got {got[tuple(b)]}, expected {want[tuple(b)]}"
                 for b in bad[:10]]
        pytest.fail(f"{what}: {len(bad)} of {got.size} elements differ:\n" + "\n".join(lines))


def _inputs(rng, lq, n, lengths, *, scale=3.0):
    B = len(lengths)
    shape = (B, lq.num_heads, n, lq.head_dim)
    q, k, v = (rng.normal(0, scale, shape) for _ in range(3))
    # extremes: far beyond the formats (Quant saturates), exact half-way points
    q[0, 0, 0] = 1e6
    k[0, 0, 0] = -1e6
    v[0, -1, 1] = -1e6
    q[-1, 0, 1] = 2.5 * lq.s_qk[0]
    mask = np.arange(n)[None, :] < np.asarray(lengths)[:, None]
    return q, k, v, mask


@pytest.mark.parametrize("qk,vb,ob,kind", FORMATS)
def test_round_trip_bit_exact_every_length(tmp_path, qk, vb, ob, kind):
    rng = np.random.default_rng(qk * 100 + vb)
    n = 11  # non-power-of-two
    lq = _layer_quant(rng, qk, vb, ob, kind)
    lengths = list(range(1, n + 1))  # every valid length, one batch item each
    path = export_qonnx(lq, tmp_path / "attn.onnx", seq_len=n, batch=len(lengths), dtype="float64")
    model = ModelWrapper(str(path))
    q, k, v, mask = _inputs(rng, lq, n, lengths)
    out = execute_onnx(model, {"q": q, "k": k, "v": v, "key_mask": mask})
    hf, trace = golden_from_float(q, k, v, np.asarray(lengths)[:, None], lq, return_trace=True)
    assert_equal_codes(out["h_int"].astype(np.int64), trace.h, "h_int")
    assert_equal_codes(out["h"], hf, "h")
    assert out["h_int"].size == len(lengths) * lq.num_heads * n * lq.head_dim
    if ob <= vb:  # the outputs saturate somewhere
        assert np.abs(trace.h).max() >= (1 << (ob - 1)) - 1


def test_float32_graph_matches_golden_on_its_codes():
    rng = np.random.default_rng(7)
    lq = _layer_quant(rng, 8, 8, 8, "a")
    n, lengths = 9, [9, 4, 1]
    model = qonnx_graph(lq, seq_len=n, batch=3)  # float32, FINN's usual type
    q, k, v, mask = (x.astype(np.float32) if x.dtype == np.float64 else x
                     for x in _inputs(rng, lq, n, lengths))
    ctx = execute_onnx(model, {"q": q, "k": k, "v": v, "key_mask": mask}, return_full_exec_context=True)
    s_qk = lq.s_qk.astype(np.float32)[None, :, None, None]
    s_v = lq.s_v.astype(np.float32)[None, :, None, None]
    codes = [np.rint(ctx[name] / s).astype(np.int64)
             for name, s in (("q_quant", s_qk), ("k_quant", s_qk), ("v_quant", s_v))]
    want = inhibitor_attention_int(*codes, np.asarray(lengths)[:, None], **lq.golden_kwargs())
    assert_equal_codes(ctx["h_int"].astype(np.int64), want, "h_int (float32 graph)")
    assert ctx["h"].dtype == np.float32


def test_real_minilm_codes():
    """Real MiniLM Q/K/V codes (12 heads, 16 tokens, d = 32), on their grid."""
    z = np.load(REAL_VECTORS)
    qc, kc, vc = (z[name].astype(np.int64) for name in ("q", "k", "v"))  # (12, 16, 32)
    H, n, d = qc.shape
    fmt = AttentionFormats(int(z["qk_bits"]), int(z["v_bits"]), 8)
    w = fmt.widths(head_dim=d, seq_len=n)
    rng = np.random.default_rng(3)
    lq = LayerQuant(formats=fmt, head_dim=d, heads=[
        HeadQuant(s_qk=0.03 + 0.001 * h, s_v=0.02, s_h=0.05, v_shift=2,
                  theta=int(np.clip(z["theta"][h], w.theta_min, w.theta_max)), out_shift=int(rng.integers(3, 8)))
        for h in range(H)])
    lengths = [int(z["length"].min()), n]
    s_qk, s_v = lq.s_qk[:, None, None], lq.s_v[:, None, None]
    q = np.stack([qc * s_qk] * 2)
    k = np.stack([kc * s_qk] * 2)
    v = np.stack([vc * s_v] * 2)
    mask = np.arange(n)[None, :] < np.asarray(lengths)[:, None]
    out = execute_onnx(qonnx_graph(lq, seq_len=n, batch=2, dtype="float64"),
                       {"q": q, "k": k, "v": v, "key_mask": mask})
    want = inhibitor_attention_int(np.stack([qc] * 2), np.stack([kc] * 2), np.stack([vc] * 2),
                                   np.asarray(lengths)[:, None], **lq.golden_kwargs())
    assert_equal_codes(out["h_int"].astype(np.int64), want, "h_int (real MiniLM)")
    assert np.count_nonzero(want) > want.size // 4


def test_comparison_can_fail():
    rng = np.random.default_rng(11)
    lq = _layer_quant(rng, 8, 8, 8, "a")
    n = 6
    q, k, v, mask = _inputs(rng, lq, n, [6, 3])
    out = execute_onnx(qonnx_graph(lq, seq_len=n, batch=2, dtype="float64"),
                       {"q": q, "k": k, "v": v, "key_mask": mask})
    _, trace = golden_from_float(q, k, v, np.array([[5], [3]]), lq, return_trace=True)  # wrong L
    with pytest.raises(pytest.fail.Exception, match=r"elements differ:\nindex \(0, "):
        assert_equal_codes(out["h_int"].astype(np.int64), trace.h, "h_int")


def test_graph_structure_and_bytes(tmp_path):
    rng = np.random.default_rng(1)
    lq = _layer_quant(rng, 8, 8, 8, "b", heads=2)
    a = export_qonnx(lq, tmp_path / "a.onnx", seq_len=8).read_bytes()
    b = export_qonnx(lq, tmp_path / "b.onnx", seq_len=8).read_bytes()
    assert a == b
    model = ModelWrapper(str(tmp_path / "a.onnx"))
    ops = [(node.domain, node.op_type) for node in model.graph.node]
    assert ops == [("qonnx.custom_op.general", "Quant")] * 3 + [(DOMAIN, "InhibitorAttention"),
                                                                ("", "Mul")]
    assert model.get_tensor_datatype("h_int").name == "INT8"
    assert model.get_tensor_datatype("q_quant").name == "SCALEDINT<8>"
    attn = model.graph.node[3]
    attrs = {a.name: a for a in attn.attribute}
    assert list(attrs["theta"].ints) == [int(t) for t in lq.theta]
    assert list(attrs["out_shift"].ints) == [int(r) for r in lq.out_shift]


def test_fresh_process_finds_the_op(tmp_path):
    """qonnx resolves the domain 'inhibitron.qonnx' by itself (no registration call)."""
    rng = np.random.default_rng(2)
    lq = _layer_quant(rng, 4, 4, 4, "b", heads=1, d=3)
    path = export_qonnx(lq, tmp_path / "m.onnx", seq_len=4, dtype="float64")
    code = (
        "import numpy as np, sys\n"
        "from qonnx.core.modelwrapper import ModelWrapper\n"
        "from qonnx.core.onnx_exec import execute_onnx\n"
        f"m = ModelWrapper({str(path)!r})\n"
        "x = np.linspace(-1, 1, 12).reshape(1, 1, 4, 3)\n"
        "out = execute_onnx(m, {'q': x, 'k': -x, 'v': x, 'key_mask': np.array([[1, 1, 1, 0]], bool)})\n"
        "assert 'inhibitron.quant.qonnx_export' in sys.modules\n"
        "print(out['h_int'].ravel().tolist())\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    x = np.linspace(-1, 1, 12).reshape(1, 1, 4, 3)
    _, trace = golden_from_float(x, -x, x, np.array([[3]]), lq, return_trace=True)
    assert eval(res.stdout.strip().splitlines()[-1]) == trace.h.ravel().astype(float).tolist()


def test_errors():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="at most 16 bits"):
        qonnx_graph(_layer_quant(rng, 20, 8, 8, "a"), seq_len=4)
    with pytest.raises(ValueError, match="dtype must be one of"):
        qonnx_graph(_layer_quant(rng, 8, 8, 8, "a"), seq_len=4, dtype="int8")
    with pytest.raises(ValueError, match="seq_len must be a positive integer"):
        qonnx_graph(_layer_quant(rng, 8, 8, 8, "a"), seq_len=0)
    lq = _layer_quant(rng, 8, 8, 8, "a", heads=1, d=2)
    model = qonnx_graph(lq, seq_len=3, dtype="float64")
    x = np.zeros((1, 1, 3, 2))
    with pytest.raises(ValueError, match="not a prefix mask"):
        execute_onnx(model, {"q": x, "k": x, "v": x, "key_mask": np.array([[True, False, True]])})


def test_exporter_writer(tmp_path):
    """write_qonnx: the exporter-registry writer (one graph per layer, >16-bit layers noted)."""
    rng = np.random.default_rng(8)
    layers = [SimpleNamespace(index=0, seq_len=8, attention=_layer_quant(rng, 8, 8, 8, "a")),
              SimpleNamespace(index=1, seq_len=8, attention=_layer_quant(rng, 24, 8, 8, "a"))]
    job = SimpleNamespace(checkpoint=SimpleNamespace(layers=layers), out_dir=tmp_path, model=None)
    res = write_qonnx(job)
    assert res.files == ("qonnx/layer_00.onnx",)
    assert (tmp_path / "qonnx" / "layer_00.onnx").is_file()
    assert res.notes == ("layer 1: no QONNX graph: formats above 16 bits",)


def test_existing_qdq_graph_still_runs_in_onnxruntime():
    """The standard-ops QDQ graph is untouched by the QONNX install (onnxruntime runs it)."""
    from inhibitron.quant.onnx_export import qdq_graph, run_model
    rng = np.random.default_rng(9)
    lq = _layer_quant(rng, 8, 8, 8, "a")
    n = 7
    q, k, v, mask = (x.astype(np.float32) if x.dtype == np.float64 else x
                     for x in _inputs(rng, lq, n, [7, 2]))
    h, h_int = run_model(qdq_graph(lq), {"q": q, "k": k, "v": v, "key_mask": mask})
    qonnx_out = execute_onnx(qonnx_graph(lq, seq_len=n, batch=2),
                             {"q": q, "k": k, "v": v, "key_mask": mask})
    # Both divide in float32 by float32 scales: the same codes, the same outputs.
    assert_equal_codes(qonnx_out["h_int"].astype(np.int64), h_int.astype(np.int64), "QONNX vs QDQ")
