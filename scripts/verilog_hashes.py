"""Print the sha256 of the generated Verilog of reference configurations.

Used to show that a refactor of the hardware generators leaves the emitted
Verilog byte-identical (or to list exactly which configurations changed):
run it before and after, and diff the outputs::

    .venv/bin/python scripts/verilog_hashes.py > before.txt
    ... change ...
    .venv/bin/python scripts/verilog_hashes.py | diff before.txt -

Inhibitor cores go through :func:`inhibitron.hw.generate.core_verilog` (the
AXI-Stream top that ``inhibitron generate`` writes); the dot-product baseline
through :func:`inhibitron.hw.generate.convert_verilog` as its cosimulation uses it.
"""

from __future__ import annotations

import hashlib

from inhibitron.hw.baseline import BaselineConfig, DotProductAttentionCore
from inhibitron.hw.core import CoreConfig
from inhibitron.hw.generate import convert_verilog, core_verilog

#: name -> inhibitor core configuration (small, 8x8, non-power-of-two, 4-bit, shifted).
CORES = {
    "small_2x2_n5_d4": dict(rows=2, cols=2, seq_len=5, head_dim=4, qk_bits=4, v_bits=4, out_bits=6),
    "8x8_n128_d64": dict(rows=8, cols=8, seq_len=128, head_dim=64),
    "npot_3x5_n23_d24": dict(rows=3, cols=5, seq_len=23, head_dim=24),
    "4bit_4x4_n16_d16": dict(rows=4, cols=4, seq_len=16, head_dim=16, qk_bits=4, v_bits=4, out_bits=4),
    "shifted_4x2_n12_d8_v2": dict(rows=4, cols=2, seq_len=12, head_dim=8, v_shift=2, out_bits=10),
    "shifted_2x4_n8_d12_z3": dict(rows=2, cols=4, seq_len=8, head_dim=12, z_shift=3, qk_bits=12),
}

#: name -> baseline configuration.
BASELINES = {
    "baseline_4x4_n16_d16": dict(rows=4, cols=4, seq_len=16, head_dim=16),
    "baseline_2x2_n8_d4": dict(rows=2, cols=2, seq_len=8, head_dim=4, qk_bits=4, v_bits=6, out_bits=6),
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def main() -> None:
    for name, params in CORES.items():
        print(f"{name} {_sha(core_verilog(CoreConfig.from_dict(params)))}")
    for name, params in BASELINES.items():
        cfg = BaselineConfig.from_dict(params)
        text = convert_verilog(DotProductAttentionCore(cfg), name=cfg.name)
        print(f"{name} {_sha(text)}")


if __name__ == "__main__":
    main()
