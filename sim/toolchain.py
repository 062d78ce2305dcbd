"""Old home of the tool finders; they live in :mod:`inhibitron.hw.toolchain` now.

Re-exports the names that simulation code imported from here, so existing
imports keep working. New code imports from :mod:`inhibitron.hw.toolchain`.
"""

from __future__ import annotations

from inhibitron.hw.toolchain import (
    Tool,
    ToolchainError,
    find_icarus,
    find_verilator,
    have_icarus,
    require_cocotb,
    require_icarus,
    require_verilator,
    require_yosys,
    run_yosys,
    setup_verilator,
    verilator_root,
)

__all__ = [
    "ToolchainError", "Tool", "verilator_root", "setup_verilator", "require_verilator",
    "find_verilator", "find_icarus", "have_icarus", "require_icarus", "require_yosys",
    "run_yosys", "require_cocotb",
]
