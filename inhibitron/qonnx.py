"""The ``inhibitron.qonnx`` ONNX domain: qonnx imports this module to find its custom ops.

A QONNX graph from :mod:`inhibitron.quant.qonnx_export` names this domain on
its ``InhibitorAttention`` node; ``qonnx.core.onnx_exec.execute_onnx`` resolves
the domain by importing this module, so the graph executes in a fresh process
without any registration call.
"""

from inhibitron.quant.qonnx_export import InhibitorAttention

__all__ = ["InhibitorAttention"]
