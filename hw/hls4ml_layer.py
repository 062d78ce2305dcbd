"""hls4ml extension: an ``InhibitorAttention`` layer for hls4ml 1.3 (PyTorch front end).

:func:`register` adds, through hls4ml's extension API (the pattern of its
``test/pytest/test_extensions.py``):

* a PyTorch layer handler (``hls4ml.converters.register_pytorch_layer_handler``)
  for ``InhibitorAttention`` and ``QATInhibitorAttention`` modules;
* an IR layer (``hls4ml.model.layers.register_layer``), :class:`HInhibitorAttention`;
* config and function-call templates and the HLS source
  (``backend.register_template``, ``backend.register_source``) for the
  Vivado and Vitis backends: the kernel header of the HLS C++ backend
  (:mod:`inhibitron.hw.hls_cpp`, ``nnet_inhibitor_attention.h``), so the
  layer computes the integer contract of ``docs/numerics.md`` bit for bit,
  key-padding masks included.

The layer's ports carry **integer codes**: ``q``, ``k`` (``ap_int<qk_bits>``),
``v`` (``ap_int<v_bits>``), each ``(H, n, d)`` per sample, an optional
key mask ``(n,)`` (nonzero = valid key; a prefix), and the output ``h``
(``ap_int<out_bits>``, ``(H, n, d)``). Quantizing the float Q/K/V with the
per-head scales ``s_qk``, ``s_v`` and dequantizing with ``s_h`` (arbitrary
floats: a multiplier each) belong to the layers around attention, as in any
integer pipeline; ``inhibitron.quant.golden.quantize_inputs`` /
``dequantize_output`` do it in numpy. ``theta``, ``r`` (per head) and the
formats and shifts come from a :class:`~inhibitron.quant.formats.LayerQuant`:
a ``QATInhibitorAttention`` brings its own (``current_layer_quant()``), a
plain ``InhibitorAttention`` gets one from :func:`prepare`.

Why :func:`prepare` is needed (found in hls4ml's source): the PyTorch front
end traces the model with ``hls4ml.utils.torch.CustomFXTracer``, which keeps
a submodule as one node only if it comes from ``torch.nn``, ``torch.ao.nn``,
``brevitas.nn`` or subclasses ``hls4ml.utils.torch.HLS4MLModule``; any other
module is traced *through*, and ``InhibitorAttention.forward`` cannot be
traced by ``torch.fx`` (its input checks branch on tensor values) nor would its
``cdist`` calls map to hls4ml layers. :func:`prepare` therefore re-types each
inhibitor module in place to a subclass that also derives from
``HLS4MLModule`` (same class name, same forward, same parameters) and
attaches its ``LayerQuant``. The parser also requires the module to be called
with positional tensors: ``attn(q, k, v)`` or ``attn(q, k, v, key_mask)``.

Only ``io_parallel`` is supported, and hls4ml's channels-last conversion
must be off (:func:`hls_config` does both).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .hls_cpp import KERNEL_HEADER, TEMPLATE_DIR, config_struct

__all__ = ["LAYER_CLASSES", "convert", "hls_config", "prepare", "register"]

#: PyTorch classes the handler accepts (their ``__class__.__name__``).
LAYER_CLASSES = ("InhibitorAttention", "QATInhibitorAttention")
_REGISTERED: set[str] = set()
_LEAF_CLASSES: dict[type, type] = {}


def _hls4ml():
    try:
        import hls4ml
    except ImportError:  # pragma: no cover - environment
        raise ImportError("the hls4ml layer needs hls4ml 1.3: pip install 'inhibitron[integration]'") from None
    return hls4ml


def _core_config(lq, seq_len: int):
    from .core import CoreConfig

    a, b = np.unique(lq.v_shift), np.unique(lq.z_shift)
    if len(a) != 1 or len(b) != 1:
        raise ValueError(f"{lq.name}: the hls4ml layer needs v_shift and z_shift shared by the "
                         f"heads (one kernel per layer), got v_shift {lq.v_shift.tolist()} and "
                         f"z_shift {lq.z_shift.tolist()}; fold with shared_shifts='ab'")
    fmt = lq.formats
    return CoreConfig.from_dict(dict(
        rows=1, cols=1, seq_len=seq_len, head_dim=lq.head_dim, qk_bits=fmt.qk_bits,
        v_bits=fmt.v_bits, out_bits=fmt.out_bits, v_shift=int(a[0]), z_shift=int(b[0])))


# ---------------------------------------------------------------------------
# PyTorch side
# ---------------------------------------------------------------------------


def _leaf_class(cls: type) -> type:
    """``cls`` plus ``HLS4MLModule`` (same name), so hls4ml's tracer keeps it as one node."""
    from hls4ml.utils.torch import HLS4MLModule

    if issubclass(cls, HLS4MLModule):
        return cls
    if cls not in _LEAF_CLASSES:
        _LEAF_CLASSES[cls] = type(cls.__name__, (cls, HLS4MLModule), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "__doc__": f"{cls.__name__} as one hls4ml node (see inhibitron.hw.hls4ml_layer)."})
    return _LEAF_CLASSES[cls]


def prepare(model, layer_quants=None):
    """Make every inhibitor-attention module of ``model`` convertible by hls4ml (in place).

    Parameters
    ----------
    model : torch.nn.Module
        Contains ``InhibitorAttention`` (or ``QATInhibitorAttention``) modules.
    layer_quants : LayerQuant or mapping of module name -> LayerQuant, optional
        The integer record of each plain ``InhibitorAttention`` (one
        ``LayerQuant`` is accepted when the model has one such module).
        ``QATInhibitorAttention`` modules use ``current_layer_quant()`` unless
        given one here.

    Returns
    -------
    model
        The same object; its inhibitor modules now also derive from
        ``hls4ml.utils.torch.HLS4MLModule`` and carry ``hls4ml_layer_quant``.

    Raises
    ------
    ValueError
        No inhibitor module, or one without a record, or a record whose
        head count or head dimension does not match the module.
    """
    _hls4ml()
    from ..model.attention import InhibitorAttention
    from ..quant.formats import LayerQuant

    found = [(name, m) for name, m in model.named_modules() if isinstance(m, InhibitorAttention)]
    if not found:
        raise ValueError("the model has no InhibitorAttention module")
    if isinstance(layer_quants, LayerQuant):
        if len(found) != 1:
            raise ValueError(f"one LayerQuant given for {len(found)} inhibitor modules; pass a "
                             f"mapping of module name -> LayerQuant ({[n for n, _ in found]})")
        layer_quants = {found[0][0]: layer_quants}
    layer_quants = dict(layer_quants or {})
    for name, module in found:
        lq = layer_quants.get(name)
        if lq is None and hasattr(module, "current_layer_quant"):
            lq = module.current_layer_quant()
        if lq is None:
            raise ValueError(f"module {name!r} ({type(module).__name__}) has no LayerQuant: pass "
                             f"layer_quants={{{name!r}: ...}}")
        if lq.num_heads != module.num_heads or lq.head_dim != module.head_dim:
            raise ValueError(f"module {name!r}: LayerQuant has {lq.num_heads} heads of dim "
                             f"{lq.head_dim}, the module {module.num_heads} of dim {module.head_dim}")
        module.__class__ = _leaf_class(type(module))
        module.hls4ml_layer_quant = lq
    return model


# ---------------------------------------------------------------------------
# hls4ml side: parser, IR layer, templates
# ---------------------------------------------------------------------------


def _parse(operation, layer_name, input_names, input_shapes, node, class_object, data_reader, config):
    """PyTorch handler: ``InhibitorAttention(q, k, v[, key_mask])`` -> one hls4ml layer."""
    lq = getattr(class_object, "hls4ml_layer_quant", None)
    if lq is None:
        raise ValueError(f"{layer_name}: call inhibitron.hw.hls4ml_layer.prepare(model, ...) "
                         f"before converting (the module carries no LayerQuant)")
    if node.kwargs:
        raise ValueError(f"{layer_name}: pass q, k, v and key_mask positionally "
                         f"(keyword arguments {sorted(node.kwargs)} are not parsed by hls4ml)")
    if len(input_names) not in (3, 4):
        raise ValueError(f"{layer_name}: expected (q, k, v) or (q, k, v, key_mask), got "
                         f"{len(input_names)} inputs")
    q_shape, k_shape, v_shape = (list(s[1:]) for s in input_shapes[:3])
    H, n, d = q_shape
    if k_shape != q_shape or v_shape != q_shape:
        raise ValueError(f"{layer_name}: q, k, v must all be (H, n, d); got {q_shape}, "
                         f"{k_shape}, {v_shape}")
    if H != lq.num_heads or d != lq.head_dim:
        raise ValueError(f"{layer_name}: inputs have {H} heads of dim {d}, the LayerQuant "
                         f"{lq.num_heads} of dim {lq.head_dim}")
    if len(input_names) == 4 and list(input_shapes[3][1:]) != [n]:
        raise ValueError(f"{layer_name}: key_mask must be ({n},) per sample, got {input_shapes[3][1:]}")
    cfg = _core_config(lq, n)
    layer = {
        "class_name": "InhibitorAttention",
        "name": layer_name,
        "inputs": input_names,
        "num_heads": H,
        "seq_len": n,
        "head_dim": d,
        "masked": len(input_names) == 4,
        "inhibitron_config": cfg.to_dict(),
        "theta_table": [int(t) for t in lq.theta],
        "shift_table": [min(int(r), (1 << cfg.shift_bits) - 1) for r in lq.out_shift],
    }
    return layer, [None, H, n, d]


def _layer_class():
    from hls4ml.model.layers import Layer
    from hls4ml.model.types import IntegerPrecisionType

    class InhibitorAttention(Layer):
        """hls4ml IR node of integer inhibitor attention (see inhibitron.hw.hls4ml_layer)."""

        def initialize(self):
            cfg = self._core_config()
            shape = [self.attributes["num_heads"], self.attributes["seq_len"], self.attributes["head_dim"]]
            self.add_output_variable(shape, precision=IntegerPrecisionType(width=cfg.out_bits, signed=True))

        def _core_config(self):
            from .core import CoreConfig
            return CoreConfig.from_dict(self.attributes["inhibitron_config"])

    return InhibitorAttention


_CONFIG_TEMPLATE_HEAD = "// inhibitor attention {name}: {heads} heads, n = {n}, d = {d}\n"


def _templates():
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate

    layer_cls = _layer_class()

    class ConfigTemplate(LayerConfigTemplate):
        def __init__(self):
            super().__init__(layer_cls)

        def format(self, node):
            cfg = node._core_config()
            a = node.attributes
            head = _CONFIG_TEMPLATE_HEAD.format(name=node.name, heads=a["num_heads"], n=a["seq_len"],
                                                d=a["head_dim"])
            return head + config_struct(cfg, f"config{node.index}", n_heads=a["num_heads"],
                                        reuse_factor=node.get_attr("reuse_factor", 1),
                                        heads=(a["theta_table"], a["shift_table"]))

    class FunctionTemplate(FunctionCallTemplate):
        def __init__(self):
            super().__init__(layer_cls, include_header=[f"nnet_utils/{KERNEL_HEADER}"])

        def format(self, node):
            ins = [node.get_input_variable(name) for name in node.inputs]
            out = node.get_output_variable()
            types = ", ".join(v.type.name for v in ins) + f", {out.type.name}"
            args = ", ".join(v.name for v in ins) + f", {out.name}"
            fn = "inhibitor_attention_masked" if node.attributes["masked"] else "inhibitor_attention_unmasked"
            return f"nnet::{fn}<{types}, config{node.index}>({args});"

    return layer_cls, ConfigTemplate, FunctionTemplate


def register(backends=("Vivado", "Vitis")) -> None:
    """Register the layer, its PyTorch handler, templates and HLS source with hls4ml (idempotent)."""
    hls4ml = _hls4ml()
    from hls4ml.converters import register_pytorch_layer_handler
    from hls4ml.converters.pytorch_to_hls import layer_handlers
    from hls4ml.model.layers import layer_map, register_layer

    if "layer" not in _REGISTERED:
        layer_cls, config_t, function_t = _templates()
        register_layer("InhibitorAttention", layer_cls)
        for name in LAYER_CLASSES:
            if name not in layer_handlers:
                register_pytorch_layer_handler(name, _parse)
        _REGISTERED.add("layer")
        _REGISTERED_TEMPLATES[:] = [config_t, function_t]
    for backend_name in backends:
        if backend_name in _REGISTERED:
            continue
        backend = hls4ml.backends.get_backend(backend_name)
        for template in _REGISTERED_TEMPLATES:
            backend.register_template(template)
        backend.register_source(TEMPLATE_DIR / KERNEL_HEADER)
        _REGISTERED.add(backend_name)
    assert "InhibitorAttention" in layer_map


_REGISTERED_TEMPLATES: list = []


def _inhibitor_inputs(model) -> list[tuple[list[str], Any]]:
    """``(input placeholder names, LayerQuant)`` of each inhibitor call in ``model``'s trace."""
    from hls4ml.utils.torch import CustomFXTracer

    graph = CustomFXTracer().trace(model)
    modules = dict(model.named_modules())
    calls = []
    for node in graph.nodes:
        if node.op == "call_module" and type(modules[node.target]).__name__ in LAYER_CLASSES:
            calls.append(([str(a) for a in node.args], modules[node.target].hls4ml_layer_quant))
    return calls


def hls_config(model, input_shape, *, reuse_factor: int = 1) -> dict:
    """hls4ml config for a :func:`prepare`-d model: integer input precisions, no channels-last.

    The placeholders feeding an inhibitor module's ``q``, ``k`` get
    ``ap_int<qk_bits>``, ``v`` ``ap_int<v_bits>``, ``key_mask`` ``ap_uint<1>``.
    """
    hls4ml = _hls4ml()
    register()
    config = hls4ml.utils.config_from_pytorch_model(
        model, input_shape, granularity="model", channels_last_conversion="off",
        default_reuse_factor=reuse_factor)
    names = config.setdefault("LayerName", {})
    for inputs, lq in _inhibitor_inputs(model):
        fmt = lq.formats
        precisions = [f"ap_int<{fmt.qk_bits}>", f"ap_int<{fmt.qk_bits}>", f"ap_int<{fmt.v_bits}>",
                      "ap_uint<1>"]
        for name, precision in zip(inputs, precisions):
            names.setdefault(name, {})["Precision"] = precision
    return config


def convert(model, input_shape, output_dir, *, layer_quants=None, backend: str = "Vivado",
            project_name: str = "inhibitor", **kwargs):
    """:func:`prepare`, :func:`register`, :func:`hls_config` and
    ``hls4ml.converters.convert_from_pytorch_model`` (``io_parallel``) in one call."""
    hls4ml = _hls4ml()
    prepare(model, layer_quants)
    register()
    config = hls_config(model, input_shape)
    return hls4ml.converters.convert_from_pytorch_model(
        model, output_dir=str(output_dir), project_name=project_name, backend=backend,
        io_type="io_parallel", hls_config=config, **kwargs)
