"""The text of the standalone testbench: the SystemVerilog module and its ``run.sh``.

:func:`testbench_text` fills the template of ``<name>_tb.sv`` (what it
checks and the plusargs it takes: :mod:`inhibitron.sim.standalone`);
:func:`run_script` the ``run.sh`` that builds and runs it with Verilator or
Icarus. Port widths are in bits: ``d`` codes of ``qk_bits``/``v_bits``/``out_bits``
per row, ``desc_bits`` per descriptor.
"""

from __future__ import annotations

from .standalone_run import VERILATOR_OPTIONS

__all__ = ["testbench_text", "run_script"]

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

  // The clock is the only process with a delay. Reset covers the first 4 rising edges and is
  // released there by a nonblocking assignment, like a register: Verilator then evaluates the
  // core once per cycle (a reset written by an initial block waiting on clock edges made it
  // evaluate all logic reading rst on both edges and in two regions, 1.3x slower).
  reg clk = 1'b0;
  always #5 clk = ~clk;
  reg rst = 1'b1;
  reg [2:0] rst_count = 3'd0;
  always @(posedge clk)
    if (rst) begin
      rst_count <= rst_count + 3'd1;
      rst <= rst_count != 3'd3;
    end

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
    ${{VERILATOR:-verilator}} --binary {verilator_options} \
      --top-module {top} -Mdir obj_verilator -o {top} \
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


#: Seeds of the four input drivers' xorshift generators (beside the ``+seed`` plusarg).
_DRIVERS = (("q", "ROWS", 0x9e3779b9), ("k", "ROWS", 0x7f4a7c15),
            ("v", "ROWS", 0x85ebca6b), ("desc", "HEADS", 0xc2b2ae35))


def testbench_text(*, name: str, heads: int, n: int, d: int, stimulus: str, qk_bits: int,
                   v_bits: int, desc_bits: int, out_bits: int, stall_base: int,
                   cycles_per_head: int) -> str:
    """SystemVerilog of module ``<name>_tb`` for ``heads`` heads of ``n`` rows of ``d`` codes.

    ``stimulus`` is the description in its header; ``stall_base`` the stall
    bound at full rate (cycles without a handshake); ``cycles_per_head`` the
    cycle formula it prints beside the measured count.
    """
    drivers = "".join(_DRIVER.format(s=s, count=count, salt=salt) for s, count, salt in _DRIVERS)
    return _TB.format(top=f"{name}_tb", name=name, heads=heads, n=n, d=d, stimulus=stimulus,
                      qw=d * qk_bits, vw=d * v_bits, dw=desc_bits, ob=out_bits,
                      stall_base=stall_base, cph=cycles_per_head, drivers=drivers)


def run_script(name: str) -> str:
    """``run.sh`` of the testbench ``<name>_tb`` of the core ``<name>``."""
    opts, line = [], ""
    for opt in VERILATOR_OPTIONS:                  # wrapped at about 90 columns
        if len(line) + len(opt) > 80:
            opts.append(line)
            line = ""
        line = f"{line} {opt}" if line else opt
    options = " \\\n      ".join([*opts, line])
    return _RUN_SH.format(top=f"{name}_tb", name=name, sim_label="SIM",
                          verilator_options=options)
