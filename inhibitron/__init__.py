"""Inhibitron: an FPGA co-design toolkit for inhibitor attention.

The import namespace maps onto the top-level folders of the repository:
``inhibitron.model`` (PyTorch, float reference, surgery, distillation),
``inhibitron.quant`` (fixed-point formats, golden integer model, export),
``inhibitron.hw`` (Amaranth hardware), ``inhibitron.sim`` (verification).
Importing this package imports none of them, so the hardware flow never
pulls in PyTorch.
"""

from ._version import __version__

__all__ = ["__version__"]
