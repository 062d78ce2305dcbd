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

This module chooses the stimulus and writes the files; the testbench text is
:mod:`inhibitron.sim.standalone_text`, the ``$readmemh`` packing
:mod:`inhibitron.sim.memh`, building and running :mod:`inhibitron.sim.standalone_run`
(their public names are re-exported here).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .memh import hex_rows, unpack_hex, write_memh
from .standalone_run import build, parse_result, run
from .standalone_text import run_script, testbench_text
from .stimulus import Head, golden_outputs

__all__ = ["StandaloneBench", "hex_rows", "unpack_hex", "write_testbench", "build", "run", "parse_result",
           "stimulus_heads", "write_fusesoc_testbench", "STIMULI"]

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
        write_memh(path, hex_rows(codes, bits),
              f"{what}: {len(heads)} heads x {n} rows, {d} codes of signed {bits} bits, "
              f"code l at [l*{bits} +: {bits}]")
        files[s] = path
    dw = cfg.descriptor_layout.size
    digits = -(-dw // 4)
    descs = [cfg.pack_descriptor(length=int(h.length), theta=int(h.theta), shift=int(h.out_shift))
             for h in heads]
    files["desc"] = out / f"{name}_desc.memh"
    write_memh(files["desc"], [f"{x:0{digits}x}" for x in descs],
          f"descriptors: {len(heads)} heads, {{shift r, theta, L}} in {dw} bits")

    base = stall_bound(cfg.cycles_per_head, seq_len=n, head_dim=d)
    labels = sorted({h.label for h in heads})
    text = testbench_text(name=name, heads=len(heads), n=n, d=d,
                          stimulus=f"{stimulus} ({', '.join(labels)})", qk_bits=cfg.qk_bits,
                          v_bits=cfg.v_bits, desc_bits=dw, out_bits=cfg.out_bits,
                          stall_base=base, cycles_per_head=cfg.cycles_per_head)
    tb = out / f"{top}.sv"
    tb.write_text(text, encoding="utf-8")
    script = out / "run.sh"
    script.write_text(run_script(name), encoding="utf-8")
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




def write_fusesoc_testbench(cfg, folder, *, stimulus: str | None = None, heads: int = 8,
                            seed: int = 0) -> StandaloneBench:
    """Write the standalone testbench of ``cfg`` into ``folder`` for a FuseSoC core; return it.

    The same files as ``inhibitron testbench --stimulus STIMULUS --heads HEADS
    --seed SEED`` (byte for byte): ``<name>_tb.sv``, the ``.memh`` images with
    the golden model's expected rows, ``<name>_tb.json``, ``run.sh``, and the
    core's ``<name>.v``/``<name>.json`` (generated again, identical). The
    default stimulus is :data:`inhibitron.hw.fusesoc.SIM_STIMULUS`. Pass the
    result to :func:`inhibitron.hw.fusesoc.write_fusesoc_core` as ``testbench``.
    """
    from inhibitron.hw.fusesoc import SIM_STIMULUS

    stimulus = SIM_STIMULUS if stimulus is None else stimulus
    return write_testbench(cfg, stimulus_heads(cfg, kind=stimulus, heads=heads, seed=seed), folder,
                           stimulus=stimulus)
