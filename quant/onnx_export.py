"""ONNX export of inhibitor attention: a float graph and a QDQ integer graph.

Both graphs are built node by node with :mod:`onnx.helper` (no tracing), so
the bytes depend only on the parameters: the same module and formats give the
same file, on any machine (tested). They use standard ONNX operators only,
no custom domain, and are validated with
``onnx.checker.check_model(full_check=True)``.

Float graph (:func:`float_graph`), Eq. 1-3 of the paper::

    inputs   q, k (B, H, n, d) float32,  v (B, H, n, d_v) float32,
             key_mask (B, n) bool (True = valid key; any pattern)
    Z  = gamma/sqrt(d) * ReduceSum(Abs(Sub(q[:, :, :, None], k[:, :, None])), -1)  # (B, H, n, n)
    mu = ReduceSum(Where(mask, Z, 0), -1) / ReduceSum(mask, -1)                      # "valid"
         (ReduceMean(Z, -1) for the thesis variant)
    Zb = Relu(Z - mu - delta)
    C  = Relu(Relu(v) - Zb) + Min(Min(v, 0) + Zb, 0)                                  # (B, H, n, n, d_v)
    H  = eta * ReduceSum(Where(mask, C, 0), keys)                                    # (B, H, n, d_v)

QDQ graph (:func:`qdq_graph`): ``QuantizeLinear`` of q, k, v with the
per-head scales of a :class:`~inhibitron.quant.formats.LayerQuant`
(``axis=1``), then the integer contract of ``docs/numerics.md`` in ``int64``
operators (Sub, Abs, ReduceSum, integer Div for the rounded mean, Max, Min,
Where, Mod for the floor shift), saturation to the output format, and
``DequantizeLinear`` with the output scale. Its integer output ``h_int``
equals :func:`inhibitron.quant.golden.inhibitor_attention_int` bit for bit on
the codes ``QuantizeLinear`` produced (tested); the key mask must be a prefix
(valid length ``L = sum(mask)``), as in the hardware.

:func:`onnx_files` builds both graphs of every layer of a student;
:func:`write_onnx_graphs` is the ``onnx`` exporter
(:mod:`inhibitron.quant.exporters`) that writes them into a checkpoint.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .exporters import ExportJob, ExportResult

__all__ = [
    "OPSET",
    "IR_VERSION",
    "float_graph",
    "qdq_graph",
    "save_model",
    "check_model",
    "run_model",
    "onnx_files",
    "write_onnx_graphs",
]

#: ONNX default-domain opset of both graphs (21: int16 QuantizeLinear, per-axis QDQ).
OPSET = 21
#: IR version matching opset 21 (onnx 1.16), read by onnxruntime >= 1.17.
IR_VERSION = 10
_PRODUCER = "inhibitron"


def _onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:  # pragma: no cover - environment
        raise ImportError("ONNX export needs the 'onnx' package (pip install 'inhibitron[model]')") from None
    import onnx

    return onnx


class _Graph:
    """Tiny deterministic graph builder: numbered node names, ordered initializers."""

    def __init__(self):
        onnx = _onnx()
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.TensorProto = onnx.TensorProto
        self.nodes = []
        self.inits = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name=name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self._n += 1
        out = out or f"{op_type.lower()}_{self._n}"
        self.nodes.append(
            self.helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self._n}", **attrs)
        )
        return out

    def model(self, name: str, inputs, outputs, doc: str):
        graph = self.helper.make_graph(self.nodes, name, inputs, outputs, self.inits, doc_string=doc)
        model = self.helper.make_model(
            graph,
            opset_imports=[self.helper.make_opsetid("", OPSET)],
            producer_name=_PRODUCER,
            ir_version=IR_VERSION,
        )
        return model


def _module_params(module):
    """(gamma, eta, delta) float64 arrays (H,) and the variant of an InhibitorAttention."""
    import torch

    with torch.no_grad():
        gamma = module.gamma.detach().to(torch.float64).cpu().numpy()
        eta = module.eta.detach().to(torch.float64).cpu().numpy()
        delta = module.effective_delta().detach().to(torch.float64).cpu().numpy()
    for name, arr in (("gamma", gamma), ("eta", eta), ("delta", delta)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"InhibitorAttention parameter {name} contains NaN or Inf: {arr.tolist()}")
    return gamma, eta, delta, module.variant


def float_graph(module, *, name: str = "inhibitor_attention"):
    """Float32 ONNX graph of an ``InhibitorAttention`` (its current parameters).

    Parameters
    ----------
    module : inhibitron.model.attention.InhibitorAttention
        Its ``gamma``, ``eta`` and effective ``delta`` (shape (H,)) become
        initializers; ``variant="thesis"`` takes the row mean over all keys.
    name : str
        Graph name.

    Returns
    -------
    onnx.ModelProto
        Inputs ``q``, ``k`` (B, H, n, d) float32, ``v`` (B, H, n, d_v) float32,
        ``key_mask`` (B, n) bool; output ``h`` (B, H, n, d_v) float32. ``B``,
        ``n`` and ``d_v`` are symbolic; ``H`` and ``d`` are fixed.
    """
    gamma, eta, delta, variant = _module_params(module)
    H, d = module.num_heads, module.head_dim
    g = _Graph()
    TP = g.TensorProto
    f32 = np.float32
    # The PyTorch module computes (gamma / sqrt(d)) * L1 in the input dtype.
    zscale = g.const("z_scale", (gamma.astype(f32) / f32(math.sqrt(d))).astype(f32).reshape(1, H, 1, 1))
    eta_c = g.const("eta", eta.astype(f32).reshape(1, H, 1, 1))
    delta_c = g.const("delta", delta.astype(f32).reshape(1, H, 1, 1))
    zero = g.const("zero", np.array(0.0, dtype=f32))
    ax_m1 = g.const("axes_last", np.array([-1], dtype=np.int64))
    ax_3 = g.const("axes_3", np.array([3], dtype=np.int64))
    ax_2 = g.const("axes_2", np.array([2], dtype=np.int64))
    ax_keys = g.const("axes_keys", np.array([-2], dtype=np.int64))
    ax_mask = g.const("axes_mask", np.array([1, 2], dtype=np.int64))

    # Eq. 1: (B, H, n, 1, d) - (B, H, 1, n, d) -> (B, H, n, n)
    qe = g.op("Unsqueeze", ["q", ax_3])
    ke = g.op("Unsqueeze", ["k", ax_2])
    l1 = g.op("ReduceSum", [g.op("Abs", [g.op("Sub", [qe, ke])]), ax_m1], keepdims=0)
    z = g.op("Mul", [zscale, l1], out="z")
    valid = g.op("Unsqueeze", ["key_mask", ax_mask], out="valid")  # (B, 1, 1, n)
    if variant == "valid":
        validf = g.op("Cast", [valid], to=TP.FLOAT)
        zsum = g.op("ReduceSum", [g.op("Where", [valid, z, zero]), ax_m1], keepdims=1)
        cnt = g.op("ReduceSum", [validf, ax_m1], keepdims=1)
        mean = g.op("Div", [zsum, cnt], out="mean")
    else:
        mean = g.op("ReduceMean", [z, ax_m1], keepdims=1, out="mean")
    # Eq. 3: (B, H, n, n)
    zb = g.op("Relu", [g.op("Sub", [g.op("Sub", [z, mean]), delta_c])], out="zb")
    # Eq. 2: (B, H, n, n, 1) against (B, H, 1, n, d_v)
    zb5 = g.op("Unsqueeze", [zb, ax_m1])
    v5 = g.op("Unsqueeze", ["v", ax_2])
    pos = g.op("Relu", [g.op("Sub", [g.op("Relu", [v5]), zb5])])
    neg = g.op("Min", [g.op("Add", [g.op("Min", [v5, zero]), zb5]), zero])
    contrib = g.op("Add", [pos, neg])
    valid5 = g.op("Unsqueeze", [valid, ax_m1])  # (B, 1, 1, n, 1)
    hsum = g.op("ReduceSum", [g.op("Where", [valid5, contrib, zero]), ax_keys], keepdims=0)
    g.op("Mul", [eta_c, hsum], out="h")

    vi = g.helper.make_tensor_value_info
    inputs = [
        vi("q", TP.FLOAT, ["B", H, "n", d]),
        vi("k", TP.FLOAT, ["B", H, "n", d]),
        vi("v", TP.FLOAT, ["B", H, "n", "d_v"]),
        vi("key_mask", TP.BOOL, ["B", "n"]),
    ]
    outputs = [vi("h", TP.FLOAT, ["B", H, "n", "d_v"])]
    doc = (
        f"Inhibitor attention (Eq. 1-3), float32, variant={variant!r}, "
        f"num_heads={H}, head_dim={d}. Standard ONNX operators only."
    )
    return g.model(name, inputs, outputs, doc)


def _container(bits: int, what: str, *, allow32: bool = False) -> tuple[type, int]:
    """numpy dtype and ONNX element type of the QDQ container of a signed ``bits``-bit format."""
    onnx = _onnx()
    if bits <= 8:
        return np.int8, onnx.TensorProto.INT8
    if bits <= 16:
        return np.int16, onnx.TensorProto.INT16
    if allow32:
        return np.int32, onnx.TensorProto.INT32
    raise ValueError(
        f"QDQ graph: {what}={bits} is wider than 16 bits, the widest QuantizeLinear output of "
        f"opset {OPSET}; use {what} <= 16 for the QDQ graph (the golden model and the checkpoint "
        "support up to 32)"
    )


def qdq_graph(layer_quant, *, name: str = "inhibitor_attention_qdq"):
    """QDQ ONNX graph of the integer inhibitor attention of a LayerQuant.

    ``QuantizeLinear`` (per head, ``axis=1``, round half to even, saturating)
    turns float32 q, k, v into codes; the integer contract runs in ``int64``
    operators; ``DequantizeLinear`` applies the output scale ``s_h``.

    Parameters
    ----------
    layer_quant : LayerQuant
        ``qk_bits`` and ``v_bits`` at most 16 (QuantizeLinear's widest
        integer output); ``out_bits`` up to 32.
    name : str
        Graph name.

    Returns
    -------
    onnx.ModelProto
        Inputs ``q``, ``k`` (B, H, n, d), ``v`` (B, H, n, d) float32 and
        ``key_mask`` (B, n) bool, a prefix mask (valid length
        ``L = sum(key_mask)``, 1..n); outputs ``h`` (B, H, n, d) float32 and
        ``h_int`` (B, H, n, d), the output codes in the smallest of
        int8/int16/int32 holding ``out_bits``.

    Notes
    -----
    ``QuantizeLinear`` divides in float32 by float32 scales, the golden model
    in float64: for an input within float32 rounding of a half-way point the
    codes may differ. On the same codes the integer part is bit-exact
    (tested). Memory is ``O(B H n^2 d)`` int64 (the mixing stage is one
    broadcast): a verification artefact, not a deployment kernel.
    """
    from .formats import LayerQuant

    if not isinstance(layer_quant, LayerQuant):
        raise TypeError(f"layer_quant must be a LayerQuant, not {type(layer_quant).__name__}")
    lq = layer_quant
    fmt = lq.formats
    H, d = lq.num_heads, lq.head_dim
    qk_np, qk_onnx = _container(fmt.qk_bits, "qk_bits")
    v_np, v_onnx = _container(fmt.v_bits, "v_bits")
    out_np, out_onnx = _container(fmt.out_bits, "out_bits", allow32=True)
    g = _Graph()
    TP = g.TensorProto
    i64 = np.int64
    per_head = lambda x: np.asarray(x, dtype=i64).reshape(1, H, 1, 1)  # noqa: E731

    a, b, r = lq.v_shift, lq.z_shift, lq.out_shift  # (H,) int64
    clip = np.left_shift(i64(1), fmt.v_bits - 1 + a)  # C = 2**(v_bits-1+a)
    pre = np.right_shift(clip + np.left_shift(i64(1), b) - 1, b)  # ceil(C / 2**b)
    half = np.where(r > 0, np.left_shift(i64(1), np.maximum(r - 1, 0)), 0)

    s_qk = g.const("s_qk", lq.s_qk.astype(np.float32))
    s_v = g.const("s_v", lq.s_v.astype(np.float32))
    s_h = g.const("s_h", lq.s_h.astype(np.float32))
    zp_qk = g.const("zp_qk", np.zeros(H, dtype=qk_np))
    zp_v = g.const("zp_v", np.zeros(H, dtype=v_np))
    zp_h = g.const("zp_h", np.zeros(H, dtype=out_np))
    c = {
        "qk_min": i64(fmt.q.qmin), "qk_max": i64(fmt.q.qmax), "v_min": i64(fmt.v.qmin),
        "v_max": i64(fmt.v.qmax), "out_min": i64(fmt.out.qmin), "out_max": i64(fmt.out.qmax),
        "zero_i": i64(0), "two_i": i64(2),
    }
    c = {k: g.const(k, np.array(v, dtype=i64)) for k, v in c.items()}
    theta = g.const("theta", per_head(lq.theta))
    pow_a = g.const("pow2_a", per_head(np.left_shift(i64(1), a)))
    pow_b = g.const("pow2_b", per_head(np.left_shift(i64(1), b)))
    pow_r = g.const("pow2_r", per_head(np.left_shift(i64(1), r)))
    half_c = g.const("half_r", per_head(half))
    clip_c = g.const("zb_clip", per_head(clip))
    pre_c = g.const("zb_preclip", per_head(pre))
    ax = {k: g.const(f"axes_{k}", np.array(v, dtype=i64)) for k, v in
          {"last": [-1], "3": [3], "2": [2], "keys": [-2], "mask": [1, 2]}.items()}

    def codes(x, scale, zp, lo, hi, out):
        ql = g.op("QuantizeLinear", [x, scale, zp], axis=1)
        return g.op("Min", [g.op("Max", [g.op("Cast", [ql], to=TP.INT64), lo]), hi], out=out)

    qi = codes("q", s_qk, zp_qk, c["qk_min"], c["qk_max"], "q_int")  # (B, H, n, d)
    ki = codes("k", s_qk, zp_qk, c["qk_min"], c["qk_max"], "k_int")
    vi = codes("v", s_v, zp_v, c["v_min"], c["v_max"], "v_int")
    # 1. z = sum_k |q - k|: (B, H, n, 1, d) - (B, H, 1, n, d) -> (B, H, n, n)
    diff = g.op("Sub", [g.op("Unsqueeze", [qi, ax["3"]]), g.op("Unsqueeze", [ki, ax["2"]])])
    z = g.op("ReduceSum", [g.op("Abs", [diff]), ax["last"]], keepdims=0, out="z")
    # 2. L per batch item; masked row sum; m = floor((2S + L) / 2L) (operands > 0: Div truncates = floors)
    valid = g.op("Unsqueeze", ["key_mask", ax["mask"]], out="valid")  # (B, 1, 1, n)
    length = g.op("ReduceSum", [g.op("Cast", [valid], to=TP.INT64), ax["last"]], keepdims=1, out="L")
    row_sum = g.op("ReduceSum", [g.op("Where", [valid, z, c["zero_i"]]), ax["last"]], keepdims=1,
                   out="row_sum")  # (B, H, n, 1)
    num = g.op("Add", [g.op("Mul", [row_sum, c["two_i"]]), length])
    mean = g.op("Div", [num, g.op("Mul", [length, c["two_i"]])], out="mean")
    # 3. t = m + theta; zb = max(z - t, 0)
    t = g.op("Add", [mean, theta], out="threshold")
    zb = g.op("Max", [g.op("Sub", [z, t]), c["zero_i"]], out="zb")
    # 4. y = min(min(zb, ceil(C / 2**b)) << b, C); padded keys y = C; x = v << a
    y = g.op("Min", [g.op("Mul", [g.op("Min", [zb, pre_c]), pow_b]), clip_c])
    y = g.op("Where", [valid, y, clip_c])  # (B, H, n, n)
    x = g.op("Mul", [vi, pow_a])  # (B, H, n, d)
    y5 = g.op("Unsqueeze", [y, ax["last"]])  # (B, H, n, n, 1)
    x5 = g.op("Unsqueeze", [x, ax["2"]])  # (B, H, 1, n, d)
    # softthr(x, y) = x - clip(x, -y, y); 5. acc = sum over keys
    clipped = g.op("Min", [g.op("Max", [x5, g.op("Neg", [y5])]), y5])
    acc = g.op("ReduceSum", [g.op("Sub", [x5, clipped]), ax["keys"]], keepdims=0, out="acc")
    # 6. h = floor((acc + half) / 2**r) = (u - mod(u, 2**r)) / 2**r; saturate
    u = g.op("Add", [acc, half_c])
    hq = g.op("Div", [g.op("Sub", [u, g.op("Mod", [u, pow_r], fmod=0)]), pow_r])
    hq = g.op("Min", [g.op("Max", [hq, c["out_min"]]), c["out_max"]])
    h_int = g.op("Cast", [hq], to=out_onnx, out="h_int")
    g.op("DequantizeLinear", [h_int, s_h, zp_h], axis=1, out="h")

    vi_ = g.helper.make_tensor_value_info
    inputs = [
        vi_("q", TP.FLOAT, ["B", H, "n", d]),
        vi_("k", TP.FLOAT, ["B", H, "n", d]),
        vi_("v", TP.FLOAT, ["B", H, "n", d]),
        vi_("key_mask", TP.BOOL, ["B", "n"]),
    ]
    outputs = [vi_("h", TP.FLOAT, ["B", H, "n", d]), vi_("h_int", out_onnx, ["B", H, "n", d])]
    doc = (
        f"Integer inhibitor attention (docs/numerics.md) of {lq.name}: qk_bits={fmt.qk_bits}, "
        f"v_bits={fmt.v_bits}, out_bits={fmt.out_bits}, num_heads={H}, head_dim={d}; "
        "QuantizeLinear -> int64 contract -> DequantizeLinear. key_mask must be a prefix mask."
    )
    return g.model(name, inputs, outputs, doc)


def check_model(model) -> None:
    """``onnx.checker.check_model(model, full_check=True)`` (raises on an invalid graph)."""
    _onnx().checker.check_model(model, full_check=True)


def save_model(model, path: str | os.PathLike) -> Path:
    """Check and write a model; the bytes are a function of the graph only."""
    check_model(model)
    path = Path(path)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def run_model(model, feeds: dict) -> list[np.ndarray]:
    """Run a model (ModelProto, bytes or path) in onnxruntime on CPU; return its outputs."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - environment
        raise ImportError("running ONNX graphs needs 'onnxruntime' (pip install 'inhibitron[model]')") from None
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, (str, os.PathLike)):
        model = Path(model).read_bytes()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def onnx_files(model, layer_quants: Sequence) -> tuple[dict[str, bytes], list[str]]:
    """ONNX graphs of every layer: ``onnx/layer_XX_float.onnx`` and ``..._qdq.onnx``.

    Parameters
    ----------
    model : a student of :func:`inhibitron.model.surgery.to_inhibitor`
    layer_quants : sequence of LayerQuant, one per layer

    Returns ``(files, notes)``; a QDQ graph is skipped (with a note) when a
    format is wider than QuantizeLinear supports.
    """
    from inhibitron.model.surgery import iter_inhibitors

    files, notes = {}, []
    for (i, inhib), lq in zip(iter_inhibitors(model), layer_quants):
        fg = float_graph(inhib, name=f"layer_{i:02d}_float")
        check_model(fg)
        files[f"onnx/layer_{i:02d}_float.onnx"] = fg.SerializeToString(deterministic=True)
        try:
            qg = qdq_graph(lq, name=f"layer_{i:02d}_qdq")
        except ValueError as exc:
            notes.append(f"layer {i}: no QDQ graph: {exc}")
            continue
        check_model(qg)
        files[f"onnx/layer_{i:02d}_qdq.onnx"] = qg.SerializeToString(deterministic=True)
    return files, notes


def write_onnx_graphs(job: ExportJob) -> ExportResult:
    """The ``onnx`` exporter: :func:`onnx_files` of ``job.model`` with the checkpoint's records."""
    files, notes = onnx_files(job.model, job.checkpoint.layer_quants)
    for rel, data in files.items():
        path = job.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return ExportResult(files=tuple(files), notes=tuple(notes))
