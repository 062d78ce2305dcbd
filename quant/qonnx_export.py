"""QONNX export of quantized inhibitor attention, with an executable custom op.

The graph of one layer (:func:`qonnx_graph`)::

    inputs   q, k (B, H, n, d), v (B, H, n, d) float32 or float64,  key_mask (B, n) bool (prefix)
    q_quant = Quant(q, s_qk, 0, qk_bits)          qonnx.custom_op.general, signed, ROUND (half even)
    k_quant = Quant(k, s_qk, 0, qk_bits)          (Q and K share the per-head scale)
    v_quant = Quant(v, s_v, 0, v_bits)
    h_int   = InhibitorAttention(q_quant, k_quant, v_quant, key_mask, s_qk, s_v)   domain inhibitron.qonnx
    h       = Mul(h_int, s_h)
    outputs  h (dequantized), h_int (the output codes, integer-valued floats, datatype INT<out_bits>)

Scales are per head, shaped ``(1, H, 1, 1)`` (initializers). The
``InhibitorAttention`` node carries the integer contract's parameters as
attributes: ``qk_bits``, ``v_bits``, ``out_bits`` and per head ``theta``,
``v_shift`` (a), ``z_shift`` (b), ``out_shift`` (r). It receives the
fake-quantized tensors of the ``Quant`` nodes (as every QONNX consumer does),
recovers the codes exactly (``rint(x / s)``, ``x`` being ``code * s``) and runs
:func:`inhibitron.quant.golden.inhibitor_attention_int` — so
``qonnx.core.onnx_exec.execute_onnx`` computes the integer contract bit for
bit: with ``dtype="float64"`` ``h_int`` equals
:func:`~inhibitron.quant.golden.golden_from_float` on the float inputs (the
``Quant`` division is the golden model's float64 division); with
``"float32"`` (FINN's usual type) it equals the golden model on the codes the
float32 ``Quant`` nodes produced. qonnx's ``Quant`` always returns float32
(``code * scale`` rounded to float32), so the codes are recovered exactly only
up to 16-bit formats: wider formats are refused.

The op is registered in qonnx's custom-op registry when this module is
imported, under the domain ``inhibitron.qonnx``; qonnx also finds it on its
own in a fresh process (the domain is the importable module
:mod:`inhibitron.qonnx`, which re-exports the op).

Key masks must be prefixes (key padding, valid length ``L = sum(mask)``), as
in the hardware. ONNX float and QDQ graphs (:mod:`inhibitron.quant.onnx_export`)
are unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.datatype import DataType
from qonnx.custom_op.base import CustomOp
from qonnx.custom_op.registry import add_op_to_domain

from .formats import LayerQuant
from .golden import inhibitor_attention_int, valid_len_from_mask

__all__ = [
    "DOMAIN",
    "InhibitorAttention",
    "MAX_BITS",
    "QUANT_DOMAIN",
    "execute",
    "export_qonnx",
    "qonnx_graph",
    "write_qonnx",
]

#: Domain of the ``InhibitorAttention`` custom op (an importable module: qonnx resolves it).
DOMAIN = "inhibitron.qonnx"
#: Domain of QONNX's ``Quant`` op.
QUANT_DOMAIN = "qonnx.custom_op.general"
#: Default-domain opset of the standard nodes (``Mul``).
ONNX_OPSET = 13
#: Widest format a QONNX graph carries exactly (float32 ``Quant`` outputs).
MAX_BITS = 16

_DTYPES = {"float32": (np.float32, TensorProto.FLOAT), "float64": (np.float64, TensorProto.DOUBLE)}


class InhibitorAttention(CustomOp):
    """QONNX custom op: integer inhibitor attention on fake-quantized Q/K/V.

    Inputs: ``q``, ``k``, ``v`` (``(B, H, n, d)``, values ``code * scale``),
    ``key_mask`` (``(B, n)`` bool, a prefix), ``s_qk``, ``s_v`` (per-head
    scales broadcastable to ``(B, H, 1, 1)``). Output: ``h_int`` (``(B, H, n,
    d_v)``, integer-valued, the input float type). Attributes: see the module
    docstring.
    """

    def get_nodeattr_types(self):
        return {
            "qk_bits": ("i", True, 8),
            "v_bits": ("i", True, 8),
            "out_bits": ("i", True, 8),
            "theta": ("ints", True, []),
            "v_shift": ("ints", True, []),
            "z_shift": ("ints", True, []),
            "out_shift": ("ints", True, []),
        }

    def make_shape_compatible_op(self, model):
        q_shape = model.get_tensor_shape(self.onnx_node.input[0])
        v_shape = model.get_tensor_shape(self.onnx_node.input[2])
        return self.make_const_shape_op(list(q_shape[:-1]) + [v_shape[-1]])

    def infer_node_datatype(self, model):
        model.set_tensor_datatype(self.onnx_node.output[0],
                                  DataType[f"INT{self.get_nodeattr('out_bits')}"])

    def verify_node(self):
        info = []
        if len(self.onnx_node.input) != 6:
            info.append(f"InhibitorAttention needs 6 inputs (q, k, v, key_mask, s_qk, s_v), "
                        f"has {len(self.onnx_node.input)}")
        heads = {len(self.get_nodeattr(a)) for a in ("theta", "v_shift", "z_shift", "out_shift")}
        if len(heads) != 1:
            info.append("theta, v_shift, z_shift, out_shift must have one entry per head")
        return info

    def execute_node(self, context, graph):
        node = self.onnx_node
        q, k, v, mask, s_qk, s_v = (context[name] for name in node.input)
        context[node.output[0]] = execute(
            q, k, v, mask, s_qk, s_v,
            qk_bits=self.get_nodeattr("qk_bits"), v_bits=self.get_nodeattr("v_bits"),
            out_bits=self.get_nodeattr("out_bits"),
            theta=self.get_nodeattr("theta"), v_shift=self.get_nodeattr("v_shift"),
            z_shift=self.get_nodeattr("z_shift"), out_shift=self.get_nodeattr("out_shift"),
        ).astype(context[node.output[0]].dtype)  # the declared type of h_int


def _codes(name: str, x, scale) -> np.ndarray:
    """Exact codes of fake-quantized values ``x = code * scale``."""
    x = np.asarray(x)
    ratio = x / np.asarray(scale, dtype=x.dtype)
    codes = np.rint(ratio)
    err = np.abs(ratio - codes)
    if np.any(err > 1e-3):
        bad = tuple(int(i) for i in np.argwhere(err > 1e-3)[0])
        raise ValueError(f"{name} is not on its quantization grid at index {bad} "
                         f"({x[bad]!r} / scale is not an integer): feed it through its Quant node")
    return codes.astype(np.int64)


def execute(q, k, v, key_mask, s_qk, s_v, *, qk_bits, v_bits, out_bits, theta, v_shift, z_shift,
            out_shift) -> np.ndarray:
    """The op's execution function: ``h`` codes (int64, ``(B, H, n, d_v)``)."""
    qc, kc, vc = _codes("q", q, s_qk), _codes("k", k, s_qk), _codes("v", v, s_v)
    length = valid_len_from_mask(np.asarray(key_mask))  # (B,)
    return inhibitor_attention_int(
        qc, kc, vc, length[:, None], theta=np.asarray(theta, dtype=np.int64),
        v_shift=np.asarray(v_shift, dtype=np.int64), z_shift=np.asarray(z_shift, dtype=np.int64),
        out_shift=np.asarray(out_shift, dtype=np.int64),
        qk_bits=int(qk_bits), v_bits=int(v_bits), out_bits=int(out_bits))


# Registered at import (qonnx also discovers it through the domain module inhibitron.qonnx).
add_op_to_domain(DOMAIN, InhibitorAttention)


def qonnx_graph(layer_quant: LayerQuant, *, seq_len: int, batch: int = 1, dtype: str = "float32",
                name: str = "inhibitor_attention_qonnx"):
    """The QONNX ``ModelWrapper`` of one layer's quantized attention.

    Parameters
    ----------
    layer_quant : LayerQuant
        Formats, per-head scales, ``theta`` and shifts.
    seq_len : int
        ``n`` (static shapes, as FINN needs).
    batch : int
        ``B`` (static).
    dtype : {"float32", "float64"}
        Type of the graph's float inputs, outputs and scales (the ``Quant``
        outputs are float32 either way, qonnx's carrier type).

    Returns
    -------
    qonnx.core.modelwrapper.ModelWrapper
        Checked with ``onnx.checker``; every tensor shape is specified.
    """
    from qonnx.core.modelwrapper import ModelWrapper

    if not isinstance(layer_quant, LayerQuant):
        raise TypeError(f"layer_quant must be a LayerQuant, not {type(layer_quant).__name__}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
    for label, value in (("seq_len", seq_len), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be a positive integer, not {value!r}")
    fmt = layer_quant.formats
    if max(fmt.qk_bits, fmt.v_bits, fmt.out_bits) > MAX_BITS:
        raise ValueError(f"QONNX graphs hold codes of at most {MAX_BITS} bits (qonnx's Quant "
                         f"returns float32); formats are {fmt.qk_bits}/{fmt.v_bits}/{fmt.out_bits}")
    layer_quant.widths(seq_len)  # raises if the datapath is too wide for this n
    np_t, onnx_t = _DTYPES[dtype]
    H, d, n, B = layer_quant.num_heads, layer_quant.head_dim, seq_len, batch
    shape = [B, H, n, d]

    def init(name_, arr):
        return numpy_helper.from_array(np.asarray(arr, dtype=np_t), name_)

    per_head = (1, H, 1, 1)
    inits = [
        init("s_qk", layer_quant.s_qk.reshape(per_head)),
        init("s_v", layer_quant.s_v.reshape(per_head)),
        init("s_h", layer_quant.s_h.reshape(per_head)),
        init("zero", 0.0),
        init("qk_bits", float(fmt.qk_bits)),
        init("v_bits", float(fmt.v_bits)),
    ]
    quant = dict(domain=QUANT_DOMAIN, signed=1, narrow=0, rounding_mode="ROUND")
    nodes = [
        helper.make_node("Quant", ["q", "s_qk", "zero", "qk_bits"], ["q_quant"], name="Quant_q", **quant),
        helper.make_node("Quant", ["k", "s_qk", "zero", "qk_bits"], ["k_quant"], name="Quant_k", **quant),
        helper.make_node("Quant", ["v", "s_v", "zero", "v_bits"], ["v_quant"], name="Quant_v", **quant),
        helper.make_node(
            "InhibitorAttention", ["q_quant", "k_quant", "v_quant", "key_mask", "s_qk", "s_v"],
            ["h_int"], name="InhibitorAttention_0", domain=DOMAIN,
            qk_bits=fmt.qk_bits, v_bits=fmt.v_bits, out_bits=fmt.out_bits,
            theta=[int(t) for t in layer_quant.theta], v_shift=[int(a) for a in layer_quant.v_shift],
            z_shift=[int(b) for b in layer_quant.z_shift],
            out_shift=[int(r) for r in layer_quant.out_shift]),
        helper.make_node("Mul", ["h_int", "s_h"], ["h"], name="Dequantize_h"),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, name,
        inputs=[vi("q", onnx_t, shape), vi("k", onnx_t, shape), vi("v", onnx_t, shape),
                vi("key_mask", TensorProto.BOOL, [B, n])],
        outputs=[vi("h", onnx_t, shape), vi("h_int", onnx_t, shape)],
        initializer=inits,
        value_info=[vi("q_quant", TensorProto.FLOAT, shape), vi("k_quant", TensorProto.FLOAT, shape),
                    vi("v_quant", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(
        graph, producer_name="inhibitron",
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(QUANT_DOMAIN, 1),
                       helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8
    import onnx
    onnx.checker.check_model(model)
    wrapper = ModelWrapper(model)
    # What qonnx's own Quant.infer_node_datatype annotates: scaled integers.
    wrapper.set_tensor_datatype("q_quant", DataType[f"SCALEDINT<{fmt.qk_bits}>"])
    wrapper.set_tensor_datatype("k_quant", DataType[f"SCALEDINT<{fmt.qk_bits}>"])
    wrapper.set_tensor_datatype("v_quant", DataType[f"SCALEDINT<{fmt.v_bits}>"])
    wrapper.set_tensor_datatype("h_int", DataType[f"INT{fmt.out_bits}"])
    return wrapper


def export_qonnx(layer_quant: LayerQuant, path, *, seq_len: int, **kwargs) -> Path:
    """Write :func:`qonnx_graph` to ``path`` (deterministic bytes)."""
    model = qonnx_graph(layer_quant, seq_len=seq_len, **kwargs).model
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def write_qonnx(job):
    """Exporter-registry writer: ``qonnx/layer_XX.onnx`` for every layer of ``job.checkpoint``.

    ``job`` is an :class:`inhibitron.quant.exporters.ExportJob`; returns an
    ``ExportResult`` listing the files (float32 graphs). Layers with formats
    above 16 bits get no graph, and a note says so.
    """
    from .exporters import ExportResult

    files, notes = [], []
    for layer in job.checkpoint.layers:
        lq = layer.attention
        fmt = lq.formats
        if max(fmt.qk_bits, fmt.v_bits, fmt.out_bits) > MAX_BITS:
            notes.append(f"layer {layer.index}: no QONNX graph: formats above {MAX_BITS} bits")
            continue
        rel = f"qonnx/layer_{layer.index:02d}.onnx"
        export_qonnx(lq, job.out_dir / rel, seq_len=layer.seq_len,
                     name=f"inhibitor_attention_layer{layer.index}")
        files.append(rel)
    return ExportResult(files=tuple(files), notes=tuple(notes))
