"""A self-checking Verilog testbench of the generated core, for any simulator (no Python).

FPGA engineers verify in Vivado xsim, Questa or Icarus, not in Python. This
module writes, next to the generated core (``<name>.v``, ``<name>.json``):

* ``<name>_tb.sv`` -- a SystemVerilog testbench (the IEEE 1800 subset both
  ``iverilog -g2012`` and ``verilator --binary`` accept) that streams Q, K, V
  and the descriptors through the AXI-Stream ports, compares every output
  row with its expectation, checks ``tlast`` (row ``n - 1`` of each head),
  prints ``PASS`` or the first mismatches by (head, row, column) with both
  values, and ends with ``$fatal`` (non-zero exit status) on a mismatch, a
  ``tlast`` error, a missing memory file or a **stall**: no handshake on any
  stream for a bound derived from the cycle formula
  (:func:`inhibitron.sim.streams.stall_bound`, widened for idle cycles and
  backpressure);
* ``<name>_{q,k,v,desc,h}.memh`` -- ``$readmemh`` images: one packed row per
  line (code ``l`` at bits ``[l*bits +: bits]``, the port layout), the
  descriptor words (:meth:`CoreConfig.pack_descriptor`) and the expected
  rows from the golden model (:func:`inhibitron.sim.stimulus.golden_outputs`,
  i.e. ``quant.golden``);
* ``run.sh`` -- builds and runs it with Verilator or Icarus and prints the
  simulated cycles per second (wall time of the simulation executable);
* ``<name>_tb.json`` -- what was written (heads, stimulus, seed, files).

Run-time options (plusargs, every simulator): ``+memdir=DIR`` (where the
``.memh`` files are, default ``.``), ``+idle=P`` (per mille of cycles each
input holds back its next beat, default 0), ``+stall=P`` (per mille of
cycles ``m_axis_h_tready`` is low, default 0), ``+seed=S`` (of the
testbench's xorshift generators: identical pacing in every simulator),
``+stall_limit=C`` (override the stall bound), ``+max_report=M``.

The last line the testbench prints is machine-readable::

    RESULT PASS heads=8 rows=96 elements=3072 mismatches=0 tlast_errors=0 cycles=4321 last_head_cycles=384

(``FAIL`` instead of ``PASS`` on failure; :func:`parse_result` reads it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .stimulus import Head, golden_outputs

__all__ = ["StandaloneBench", "hex_rows", "unpack_hex", "write_testbench", "build", "run", "parse_result",
           "stimulus_heads", "STIMULI"]

#: Stimulus kinds of :func:`stimulus_heads`.
STIMULI = ("mixed", "random", "extreme", "real")


@dataclass(frozen=True)
class StandaloneBench:
    """The files of one written testbench (all in ``directory``)."""

    directory: Path
    config: object
    heads: int
    top: str                      # testbench module name, "<name>_tb"
    verilog: Path                 # the core
    testbench: Path               # <name>_tb.sv
    memfiles: dict = field(default_factory=dict)   # stream -> Path
    script: Path | None = None    # run.sh
    stall_base: int = 0           # stall bound at full rate (cycles without a handshake)


# ----------------------------------------------------------------------------------------
# Stimulus
# ----------------------------------------------------------------------------------------


def stimulus_heads(cfg, *, kind: str = "mixed", heads: int = 8, seed: int = 0,
                   checkpoint=None, layer: int | None = None) -> list[Head]:
    """Heads of stimulus for the testbench.

    ``kind``: ``"random"`` (``heads`` random heads over the full formats),
    ``"extreme"`` (the extremes of every format and of theta,
    :func:`~inhibitron.sim.stimulus.extreme_heads`), ``"real"`` (real MiniLM
    Q/K/V codes, :data:`~inhibitron.sim.stimulus.REAL_VECTORS`, refitted to the
    formats), ``"mixed"`` (extremes, every valid length 1..n, ``heads``
    random heads and the real ones, output shift varying head to head).
    With ``checkpoint``/``layer``, the real heads take that layer's per-head
    ``theta`` and output shift ``r`` (``LayerQuant.theta``/``out_shift``).
    """
    from dataclasses import replace

    from .stimulus import REAL_VECTORS, extreme_heads, heads_from_npz, mixed_heads, random_heads, with_shifts

    if kind not in STIMULI:
        raise ValueError(f"stimulus must be one of {', '.join(STIMULI)}, not {kind!r}")
    if not isinstance(heads, int) or heads < 0:
        raise ValueError(f"heads must be a non-negative integer, not {heads!r}")
    rng = np.random.default_rng(seed)
    if kind == "random":
        out = with_shifts(cfg, random_heads(cfg, heads, rng), rng)
    elif kind == "extreme":
        out = with_shifts(cfg, extreme_heads(cfg, rng), rng)
    elif kind == "real":
        out = heads_from_npz(cfg, REAL_VECTORS, rng)
    else:
        out = mixed_heads(cfg, rng, random_count=heads, every_length=True, real_path=REAL_VECTORS,
                          real_count=12)
    if checkpoint is not None:
        from inhibitron.hw._manifest import layer_quant
        if layer is None:
            raise ValueError("a checkpoint needs a layer")
        lq, _ = layer_quant(checkpoint, layer=layer)
        w = cfg.widths
        thetas = [int(t) for t in np.atleast_1d(lq.theta)]
        shifts = [int(r) for r in np.atleast_1d(lq.out_shift)]
        count = 0
        for i, h in enumerate(out):
            if h.label != "real":
                continue
            hq = count % len(thetas)
            out[i] = replace(h, theta=int(np.clip(thetas[hq], w.theta_min, w.theta_max)),
                             out_shift=shifts[hq % len(shifts)], label=f"real-head{hq}")
            count += 1
    if not out:
        raise ValueError("no heads of stimulus (heads=0 with stimulus 'random')")
    return out


# ----------------------------------------------------------------------------------------
# $readmemh images
# ----------------------------------------------------------------------------------------

_HEX = np.array(list("0123456789abcdef"))


def hex_rows(codes, bits: int) -> list[str]:
    """Each row of ``codes`` (``(rows, count)`` ints) packed like the ports, as hex digits.

    Code ``l`` of a row occupies bits ``[l*bits +: bits]`` (two's complement),
    the whole row is ``ceil(count*bits/4)`` hex digits, most significant first
    (vectorized; equal to ``f"{v:0{digits}x}"`` of
    :func:`~inhibitron.sim.stimulus.pack_rows`).

    >>> hex_rows([[1, -1], [-2, 3]], 4)
    ['f1', '3e']
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (rows, count), not shape {codes.shape}")
    rows, count = codes.shape
    width = count * bits
    digits = -(-width // 4)
    unsigned = codes & ((1 << bits) - 1)
    bitarr = ((unsigned[:, :, None] >> np.arange(bits)) & 1).reshape(rows, width)  # LSB first
    bitarr = np.pad(bitarr, ((0, 0), (0, digits * 4 - width)))
    nibbles = bitarr.reshape(rows, digits, 4) @ np.array([1, 2, 4, 8])
    chars = _HEX[nibbles[:, ::-1]]
    return ["".join(r) for r in chars]


def unpack_hex(text: str, bits: int, count: int) -> np.ndarray:
    """Inverse of one :func:`hex_rows` line: ``count`` signed ``bits``-bit codes.

    >>> unpack_hex("f1", 4, 2).tolist()
    [1, -1]
    """
    value = int(text, 16)
    codes = [(value >> (i * bits)) & ((1 << bits) - 1) for i in range(count)]
    return np.array([c - (1 << bits) if c >> (bits - 1) else c for c in codes], dtype=np.int64)


def _memh(path: Path, lines: list[str], comment: str) -> None:
    path.write_text(f"// {comment}\n" + "\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------
# The testbench text
# ----------------------------------------------------------------------------------------

_TB = r"""// {top}: self-checking testbench of {name} (written by `inhibitron testbench`; do not edit)
// {heads} heads, n = {n}, d = {d}; stimulus: {stimulus}; expected rows: inhibitron.quant.golden
// Runs with `iverilog -g2012` and `verilator --binary` (see run.sh). Plusargs: +memdir=DIR
// +idle=PERMILLE +stall=PERMILLE +seed=S +stall_limit=CYCLES +max_report=M
`timescale 1ns/1ps
module {top};
  localparam integer HEADS = {heads};
  localparam integer N = {n};
  localparam integer D = {d};
  localparam integer ROWS = HEADS * N;
  localparam integer QW = {qw};
  localparam integer VW = {vw};
  localparam integer DW = {dw};
  localparam integer OB = {ob};
  localparam integer HW = D * OB;
  // cycles without any handshake that count as a stall at full rate: 2 heads of the
  // cycle formula ({cph} cycles/head) + 4*n*d + 1000 (inhibitron.sim.streams.stall_bound)
  localparam integer STALL_BASE = {stall_base};
  localparam integer FORMULA_CYCLES_PER_HEAD = {cph};

  reg clk = 1'b0;
  reg rst = 1'b1;
  always #5 clk = ~clk;

  reg [QW-1:0] q_mem [0:ROWS-1];
  reg [QW-1:0] k_mem [0:ROWS-1];
  reg [VW-1:0] v_mem [0:ROWS-1];
  reg [DW-1:0] desc_mem [0:HEADS-1];
  reg [HW-1:0] h_mem [0:ROWS-1];

  string memdir;
  integer idle_pm, stall_pm, seed, stall_limit, max_report;

  // xorshift32 pacing generators: the same sequence in every simulator
  function automatic [31:0] xs32(input [31:0] x);
    reg [31:0] y;
    begin
      y = x ^ (x << 13);
      y = y ^ (y >> 17);
      xs32 = y ^ (y << 5);
    end
  endfunction
  reg [31:0] r_q, r_k, r_v, r_desc, r_h;

  // ---- stream drivers: a beat stays presented until it is taken (AXI rule) ----
  reg q_valid, k_valid, v_valid, desc_valid, h_ready;
  integer q_idx, k_idx, v_idx, desc_idx;
  wire q_ready, k_ready, v_ready, desc_ready;
  wire [HW-1:0] h_data;
  wire h_valid, h_last;

  {name} dut (
    .clk(clk), .rst(rst),
    .s_axis_q_tdata(q_valid ? q_mem[q_idx] : {{QW{{1'b0}}}}), .s_axis_q_tvalid(q_valid),
    .s_axis_q_tready(q_ready), .s_axis_q_tlast(1'b0),
    .s_axis_k_tdata(k_valid ? k_mem[k_idx] : {{QW{{1'b0}}}}), .s_axis_k_tvalid(k_valid),
    .s_axis_k_tready(k_ready), .s_axis_k_tlast(1'b0),
    .s_axis_v_tdata(v_valid ? v_mem[v_idx] : {{VW{{1'b0}}}}), .s_axis_v_tvalid(v_valid),
    .s_axis_v_tready(v_ready), .s_axis_v_tlast(1'b0),
    .s_axis_desc_tdata(desc_valid ? desc_mem[desc_idx] : {{DW{{1'b0}}}}),
    .s_axis_desc_tvalid(desc_valid), .s_axis_desc_tready(desc_ready), .s_axis_desc_tlast(1'b0),
    .m_axis_h_tdata(h_data), .m_axis_h_tvalid(h_valid), .m_axis_h_tready(h_ready),
    .m_axis_h_tlast(h_last)
  );

{drivers}
  // ---- monitor, scoreboard, stall detection ----
  integer out_row, mismatches, reported, tlast_errors, c;
  longint cycle, last_handshake, last_tlast, prev_tlast;
  reg signed [OB-1:0] got, expected;
  wire any_handshake = (q_valid && q_ready) || (k_valid && k_ready) || (v_valid && v_ready) ||
                       (desc_valid && desc_ready) || (h_valid && h_ready);

  always @(posedge clk) begin
    if (rst) begin
      h_ready <= 1'b0;
      r_h <= 32'h27d4eb2f ^ seed;
    end else begin
      r_h <= xs32(r_h);
      h_ready <= (r_h % 1000) >= stall_pm;
      cycle = cycle + 1;
      if (any_handshake) last_handshake = cycle;
      if (h_valid && h_ready) begin
        if (h_data !== h_mem[out_row]) begin
          for (c = 0; c < D; c = c + 1) begin
            got = h_data[c*OB +: OB];
            expected = h_mem[out_row][c*OB +: OB];
            if (got !== expected) begin
              mismatches = mismatches + 1;
              if (reported < max_report) begin
                $display("MISMATCH head %0d row %0d col %0d: got %0d expected %0d",
                         out_row / N, out_row % N, c, got, expected);
                reported = reported + 1;
              end
            end
          end
        end
        if (h_last !== ((out_row % N) == N - 1)) begin
          tlast_errors = tlast_errors + 1;
          if (tlast_errors <= max_report)
            $display("TLAST head %0d row %0d: got %0d expected %0d", out_row / N, out_row % N,
                     h_last, (out_row % N) == N - 1);
        end
        if (h_last === 1'b1) begin
          prev_tlast = last_tlast;
          last_tlast = cycle;
        end
        out_row = out_row + 1;
        if (out_row == ROWS) finish_run();
      end
      if (cycle - last_handshake > stall_limit) begin
        $display("STALL: no handshake on any stream for %0d cycles (bound %0d, from the cycle formula) at cycle %0d: Q rows in %0d/%0d, K %0d/%0d, V %0d/%0d, descriptors %0d/%0d, H rows out %0d/%0d",
                 cycle - last_handshake, stall_limit, cycle, q_idx, ROWS, k_idx, ROWS, v_idx, ROWS,
                 desc_idx, HEADS, out_row, ROWS);
        $display("RESULT FAIL heads=%0d rows=%0d elements=%0d mismatches=%0d tlast_errors=%0d cycles=%0d stalled=1",
                 HEADS, out_row, out_row * D, mismatches, tlast_errors, cycle);
        $fatal(1, "{name}: the core stalled");
      end
    end
  end

  task finish_run;
    begin
      $display("%0d heads, %0d rows, %0d elements compared, %0d mismatches, %0d tlast errors, %0d cycles (last head %0d cycles, formula %0d)",
               HEADS, out_row, out_row * D, mismatches, tlast_errors, cycle,
               last_tlast - prev_tlast, FORMULA_CYCLES_PER_HEAD);
      if (mismatches == 0 && tlast_errors == 0) begin
        $display("PASS");
        $display("RESULT PASS heads=%0d rows=%0d elements=%0d mismatches=0 tlast_errors=0 cycles=%0d last_head_cycles=%0d",
                 HEADS, out_row, out_row * D, cycle, last_tlast - prev_tlast);
        $finish;
      end else begin
        $display("RESULT FAIL heads=%0d rows=%0d elements=%0d mismatches=%0d tlast_errors=%0d cycles=%0d last_head_cycles=%0d",
                 HEADS, out_row, out_row * D, mismatches, tlast_errors, cycle,
                 last_tlast - prev_tlast);
        $fatal(1, "{name}: %0d mismatches, %0d tlast errors", mismatches, tlast_errors);
      end
    end
  endtask

  task load(input string file, input integer kind);
    integer fd;
    begin
      fd = $fopen({{memdir, "/", file}}, "r");
      if (fd == 0) begin
        $display("RESULT FAIL missing=%s", file);
        $fatal(1, "cannot open %s/%s (set +memdir=DIR)", memdir, file);
      end
      $fclose(fd);
      case (kind)
        0: $readmemh({{memdir, "/", file}}, q_mem);
        1: $readmemh({{memdir, "/", file}}, k_mem);
        2: $readmemh({{memdir, "/", file}}, v_mem);
        3: $readmemh({{memdir, "/", file}}, desc_mem);
        default: $readmemh({{memdir, "/", file}}, h_mem);
      endcase
    end
  endtask

  initial begin
    if (!$value$plusargs("memdir=%s", memdir)) memdir = ".";
    if (!$value$plusargs("idle=%d", idle_pm)) idle_pm = 0;
    if (!$value$plusargs("stall=%d", stall_pm)) stall_pm = 0;
    if (!$value$plusargs("seed=%d", seed)) seed = 1;
    if (!$value$plusargs("max_report=%d", max_report)) max_report = 10;
    if (!$value$plusargs("stall_limit=%d", stall_limit))
      stall_limit = STALL_BASE + STALL_BASE / 1000 * 4 * (idle_pm + stall_pm);
    load("{name}_q.memh", 0);
    load("{name}_k.memh", 1);
    load("{name}_v.memh", 2);
    load("{name}_desc.memh", 3);
    load("{name}_h.memh", 4);
    out_row = 0; mismatches = 0; reported = 0; tlast_errors = 0;
    cycle = 0; last_handshake = 0; last_tlast = 0; prev_tlast = 0;
    $display("{top}: %0d heads of %0d rows, idle %0d/1000, stall %0d/1000, seed %0d, stall bound %0d cycles",
             HEADS, N, idle_pm, stall_pm, seed, stall_limit);
    repeat (4) @(posedge clk);
    @(negedge clk);
    rst = 1'b0;
  end
endmodule
"""

_DRIVER = r"""  always @(posedge clk) begin
    if (rst) begin
      {s}_valid <= 1'b0;
      {s}_idx <= 0;
      r_{s} <= 32'h{salt:08x} ^ seed;
    end else begin
      r_{s} <= xs32(r_{s});
      if ({s}_valid && {s}_ready) begin
        {s}_idx <= {s}_idx + 1;
        {s}_valid <= ({s}_idx + 1 < {count}) && ((r_{s} % 1000) >= idle_pm);
      end else if (!{s}_valid) begin
        {s}_valid <= ({s}_idx < {count}) && ((r_{s} % 1000) >= idle_pm);
      end
    end
  end
"""

_RUN_SH = r"""#!/bin/sh
# Build and run {top} (the self-checking testbench of {name}); no Python needed.
#   ./run.sh [verilator|icarus] [+idle=PERMILLE] [+stall=PERMILLE] [+seed=S]
# Prints the testbench's output, then the simulated cycles per second; exits non-zero
# when the testbench fails. VERILATOR, IVERILOG, VVP override the tools.
cd "$(dirname "$0")" || exit 2
sim=${{1:-verilator}}
[ $# -gt 0 ] && shift
case "$sim" in
  verilator)
    # (re)build unless the binary is newer than both sources
    if [ ! -x obj_verilator/{top} ] || [ {name}.v -nt obj_verilator/{top} ] \
       || [ {top}.sv -nt obj_verilator/{top} ]; then
    ${{VERILATOR:-verilator}} --binary -O3 --x-assign fast --x-initial fast -Wno-fatal \
      -Wno-lint -Wno-style -Wno-TIMESCALEMOD -CFLAGS -std=c++20 \
      -MAKEFLAGS CFG_CXXFLAGS_PCH_I=-include --top-module {top} -Mdir obj_verilator -o {top} \
      {name}.v {top}.sv > build_verilator.log 2>&1 || {{ cat build_verilator.log; exit 2; }}
    fi
    set -- obj_verilator/{top} "$@";;
  icarus)
    ${{IVERILOG:-iverilog}} -g2012 -s {top} -o {top}.vvp {name}.v {top}.sv \
      > build_icarus.log 2>&1 || {{ cat build_icarus.log; exit 2; }}
    set -- ${{VVP:-vvp}} -n {top}.vvp "$@";;
  *) echo "usage: $0 [verilator|icarus] [plusargs]" >&2; exit 2;;
esac
start=$(date +%s%N)
"$@" > sim_$sim.log 2>&1
rc=$?
end=$(date +%s%N)
cat sim_$sim.log
cycles=$(sed -n 's/^RESULT .* cycles=\([0-9]*\).*/\1/p' sim_$sim.log)
if [ -n "$cycles" ]; then
  awk -v c="$cycles" -v ns="$((end - start))" 'BEGIN {{ s = ns / 1e9; printf "simulated %d cycles in %.3f s: %.0f cycles/s ({sim_label})\n", c, s, c / s }}' \
    | sed "s/{sim_label}/$sim/"
fi
exit $rc
"""


def write_testbench(cfg, heads: list[Head], out_dir, *, stimulus: str = "custom",
                    expected=None) -> StandaloneBench:
    """Write the core, the testbench, its ``$readmemh`` images and ``run.sh`` to ``out_dir``.

    ``expected`` (``(H, n, d)`` codes) defaults to the golden model's
    outputs; passing something else is how the tests check that the
    testbench does fail.

    Raises
    ------
    ValueError
        No heads, or a head whose shape does not match ``cfg``.
    """
    from inhibitron.hw.generate import WAIVERS, generate

    from .streams import stall_bound

    if not heads:
        raise ValueError("the testbench needs at least one head")
    n, d = cfg.seq_len, cfg.head_dim
    for i, h in enumerate(heads):
        for nm in ("q", "k", "v"):
            if np.shape(getattr(h, nm)) != (n, d):
                raise ValueError(f"head {i}: {nm} has shape {np.shape(getattr(h, nm))}, "
                                 f"the core takes ({n}, {d})")
    out = Path(out_dir)
    gen = generate(cfg, out)
    shutil.copyfile(WAIVERS, out / WAIVERS.name)
    name, top = cfg.name, f"{cfg.name}_tb"
    if expected is None:
        chunk = max(1, min(512, 4_000_000 // (n * n * d)))      # bounds golden's memory
        expected = np.concatenate([golden_outputs(cfg, heads[i:i + chunk])
                                   for i in range(0, len(heads), chunk)])
    expected = np.asarray(expected, dtype=np.int64)
    if expected.shape != (len(heads), n, d):
        raise ValueError(f"expected must have shape {(len(heads), n, d)}, not {expected.shape}")

    files = {}
    stack = lambda nm: np.concatenate([getattr(h, nm) for h in heads])  # noqa: E731  (H*n, d)
    for s, codes, bits, what in (("q", stack("q"), cfg.qk_bits, "Q rows"),
                                 ("k", stack("k"), cfg.qk_bits, "K rows"),
                                 ("v", stack("v"), cfg.v_bits, "V rows"),
                                 ("h", expected.reshape(-1, d), cfg.out_bits,
                                  "expected H rows (inhibitron.quant.golden)")):
        path = out / f"{name}_{s}.memh"
        _memh(path, hex_rows(codes, bits),
              f"{what}: {len(heads)} heads x {n} rows, {d} codes of signed {bits} bits, "
              f"code l at [l*{bits} +: {bits}]")
        files[s] = path
    dw = cfg.descriptor_layout.size
    digits = -(-dw // 4)
    descs = [cfg.pack_descriptor(length=int(h.length), theta=int(h.theta), shift=int(h.out_shift))
             for h in heads]
    files["desc"] = out / f"{name}_desc.memh"
    _memh(files["desc"], [f"{x:0{digits}x}" for x in descs],
          f"descriptors: {len(heads)} heads, {{shift r, theta, L}} in {dw} bits")

    base = stall_bound(cfg.cycles_per_head, seq_len=n, head_dim=d)
    drivers = "".join(_DRIVER.format(s=s, count=count, salt=salt) for s, count, salt in
                      (("q", "ROWS", 0x9e3779b9), ("k", "ROWS", 0x7f4a7c15),
                       ("v", "ROWS", 0x85ebca6b), ("desc", "HEADS", 0xc2b2ae35)))
    labels = sorted({h.label for h in heads})
    text = _TB.format(top=top, name=name, heads=len(heads), n=n, d=d,
                      stimulus=f"{stimulus} ({', '.join(labels)})",
                      qw=d * cfg.qk_bits, vw=d * cfg.v_bits, dw=dw, ob=cfg.out_bits,
                      stall_base=base, cph=cfg.cycles_per_head, drivers=drivers)
    tb = out / f"{top}.sv"
    tb.write_text(text, encoding="utf-8")
    script = out / "run.sh"
    script.write_text(_RUN_SH.format(top=top, name=name, sim_label="SIM"), encoding="utf-8")
    script.chmod(0o755)
    meta = {"testbench": tb.name, "core": gen.verilog.name, "top": top, "heads": len(heads),
            "stimulus": stimulus, "labels": labels, "stall_base": base,
            "files": {s: p.name for s, p in files.items()},
            "elements": len(heads) * n * d, "config": cfg.to_dict(),
            "run": {"verilator": "./run.sh verilator", "icarus": "./run.sh icarus",
                    "plusargs": "+idle=PERMILLE +stall=PERMILLE +seed=S +memdir=DIR"}}
    (out / f"{top}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n",
                                     encoding="utf-8")
    return StandaloneBench(out, cfg, len(heads), top, gen.verilog, tb, files, script, base)


# ----------------------------------------------------------------------------------------
# Building and running (the tests and the CLI; run.sh does the same without Python)
# ----------------------------------------------------------------------------------------


def build(bench: StandaloneBench, simulator: str = "verilator", *, jobs: int = 1,
          timeout: float = 1800) -> list[str]:
    """Compile the testbench; return the command that runs it (plusargs to be appended).

    Raises
    ------
    ValueError
        Unknown simulator.
    inhibitron.hw.toolchain.ToolchainError
        The simulator is not installed.
    RuntimeError
        The build failed (the message holds the tail of its log).
    """
    from inhibitron.hw.toolchain import find_verilator, require_icarus

    d = bench.directory
    if simulator == "verilator":
        tool = find_verilator()
        cmd = [*tool.command, "--binary", "-O3", "--x-assign", "fast", "--x-initial", "fast",
               "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-TIMESCALEMOD", "-j", str(jobs),
               "-CFLAGS", "-std=c++20", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
               "--top-module", bench.top, "-Mdir", "obj_verilator", "-o", bench.top,
               bench.verilog.name, bench.testbench.name]
        runner = [str(d / "obj_verilator" / bench.top)]
    elif simulator == "icarus":
        tool = require_icarus()
        cmd = [*tool.command, "-g2012", "-s", bench.top, "-o", f"{bench.top}.vvp",
               bench.verilog.name, bench.testbench.name]
        runner = [*tool.runtime, "-n", str(d / f"{bench.top}.vvp")]
    else:
        raise ValueError(f"simulator must be 'verilator' or 'icarus', not {simulator!r}")
    log = d / f"build_{simulator}.log"
    env = dict(os.environ)
    env.setdefault("MAKEFLAGS", f"-j{jobs}")
    proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=timeout, env=env)
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"building the {simulator} testbench failed ({proc.returncode}); "
                           f"log {log}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return runner


_RESULT = re.compile(r"^RESULT (PASS|FAIL)(.*)$", re.M)


def parse_result(text: str) -> dict:
    """The fields of the testbench's ``RESULT`` line (``{"status": "PASS", "cycles": ..}``)
    plus ``mismatch_lines`` (``MISMATCH ...``), ``stall`` (the ``STALL`` line or None).

    >>> parse_result("RESULT PASS heads=2 rows=8 cycles=77")["cycles"]
    77
    """
    found = _RESULT.findall(text)
    res: dict = {"status": found[-1][0] if found else None}
    if found:
        for key, val in re.findall(r"(\w+)=(\S+)", found[-1][1]):
            res[key] = int(val) if val.lstrip("-").isdigit() else val
    res["mismatch_lines"] = re.findall(r"^MISMATCH .*$", text, re.M)
    res["tlast_lines"] = re.findall(r"^TLAST .*$", text, re.M)
    stall = re.findall(r"^STALL: .*$", text, re.M)
    res["stall"] = stall[0] if stall else None
    return res


def run(bench: StandaloneBench, simulator: str = "verilator", *, idle: int = 0, stall: int = 0,
        seed: int = 1, runner: list[str] | None = None, extra: tuple[str, ...] = (),
        memdir=None, timeout: float = 1800) -> dict:
    """Build (unless ``runner`` is given) and run the testbench; return its parsed result.

    ``idle``/``stall`` are per mille. The result has ``passed`` (exit status
    0 and ``RESULT PASS``), ``returncode``, the ``RESULT`` fields
    (``cycles``, ``elements``, ``mismatches``, ...), ``wall_s`` (the
    simulation executable alone, without the build), ``cycles_per_s`` and
    ``output`` (its stdout + stderr). ``memdir``: read the ``.memh`` files
    from there instead (same sizes: the head count is compiled in).
    """
    if runner is None:
        runner = build(bench, simulator)
    cmd = [*runner, f"+memdir={memdir or bench.directory}", f"+idle={idle}", f"+stall={stall}",
           f"+seed={seed}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=bench.directory, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    (bench.directory / f"sim_{simulator}.log").write_text(output, encoding="utf-8")
    res = parse_result(output)
    res.update(returncode=proc.returncode, wall_s=wall, output=output, simulator=simulator,
               passed=proc.returncode == 0 and res["status"] == "PASS")
    cycles = res.get("cycles")
    res["cycles_per_s"] = cycles / wall if isinstance(cycles, int) and wall > 0 else None
    return res
