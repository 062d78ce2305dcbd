"""HLS C++ backend: the integer contract as synthesizable Vitis/Vivado HLS C++.

From a :class:`~inhibitron.hw.core.CoreConfig` (or one layer of a quantized
checkpoint) :func:`emit_hls` writes a small HLS project:

``nnet_inhibitor_attention.h``
    The kernel, a template over a config struct (``hw/hls_templates/``; the
    same header serves the hls4ml layer, :mod:`inhibitron.hw.hls4ml_layer`).
    Steps 1-6 of ``docs/numerics.md`` with ``ap_int``/``ap_uint`` types of
    exactly the derived widths, ``PIPELINE II=1`` over keys in the score and
    mixing loops (``d`` lanes unrolled), ``ARRAY_PARTITION`` of the row
    registers, no ``*``, ``/`` or ``%`` anywhere: the row mean is the
    restoring shift-subtract divider of the contract.
``<name>.h``, ``<name>.cpp``
    The config struct (every width from
    :meth:`~inhibitron.quant.formats.AttentionFormats.widths`), the code
    types, and the top function ``<name>(q, k, v, length, theta, shift, h)``
    processing one head: flat row-major ``(n, d)`` arrays, the descriptor
    fields of the RTL core as scalar arguments.
``<name>_tb.cpp``
    A C-simulation harness: ``<name>_csim STIMULUS OUT [EXPECTED]`` reads
    heads from a text file (:func:`write_stimulus`), writes ``h`` and, given
    an expected file, counts mismatches and exits 1 on any (what Vitis
    ``csim_design`` wants of a testbench).
``stimulus.txt``, ``expected.txt``
    A few random heads and their golden outputs for that harness.
``run_hls.tcl``
    ``vitis_hls -f run_hls.tcl``: C simulation, synthesis, IP export (not run
    here: no vendor tools on this machine).
``<name>_heads.h`` (with a ``layer_quant``)
    Per-head ``theta`` and ``r`` of a checkpoint layer as constant tables.

:func:`build_csim` compiles the harness with g++ against the ``ap_int.h``
headers bundled in the hls4ml wheel (:func:`ap_types_dir`), and
:func:`run_csim` runs it on :class:`inhibitron.sim.stimulus.Head` lists;
``tests/hw/test_hls_cpp.py`` checks every output bit against
:mod:`inhibitron.quant.golden`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .core import CoreConfig

__all__ = [
    "HlsProject", "KERNEL_HEADER", "TEMPLATE_DIR", "ap_types_dir", "build_csim",
    "config_constants", "config_struct", "emit_hls", "emit_hls_from_checkpoint", "run_csim",
    "write_stimulus",
]

#: Folder of the C++ templates (package data).
TEMPLATE_DIR = Path(__file__).with_name("hls_templates")
#: The kernel header (a template over a config struct).
KERNEL_HEADER = "nnet_inhibitor_attention.h"


def ap_types_dir() -> Path:
    """The ``ap_int.h``/``ap_fixed.h`` folder bundled in the hls4ml wheel.

    Found without importing hls4ml. Raises ``FileNotFoundError`` (naming the
    extra to install) when hls4ml is not installed.
    """
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the ap_int.h headers come with hls4ml, which is not installed: "
            "pip install 'inhibitron[integration]' (or hls4ml>=1.3)")
    for root in spec.submodule_search_locations:
        path = Path(root) / "templates" / "vivado" / "ap_types"
        if (path / "ap_int.h").is_file():
            return path
    raise FileNotFoundError(f"hls4ml is installed but has no templates/vivado/ap_types/ap_int.h "
                            f"under {list(spec.submodule_search_locations)}")


def config_constants(cfg: CoreConfig, *, n_heads: int = 1) -> dict[str, int]:
    """The integer constants of the C++ config struct, in declaration order.

    Every width is :attr:`CoreConfig.widths` (derived from the formats, ``n``,
    ``d``, ``a``, ``b``); ``len_bits = bits(n)`` and ``shift_bits`` are the
    descriptor field widths of the RTL core.
    """
    if not isinstance(cfg, CoreConfig):
        raise TypeError(f"cfg must be a CoreConfig, not {type(cfg).__name__}")
    if not isinstance(n_heads, int) or isinstance(n_heads, bool) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive integer, not {n_heads!r}")
    w = cfg.widths
    n, d = cfg.seq_len, cfg.head_dim
    return {
        "n": n, "d": d, "nd": n * d, "n_heads": n_heads, "total": n_heads * n * d,
        "qk_bits": cfg.qk_bits, "v_bits": cfg.v_bits, "out_bits": cfg.out_bits,
        "v_shift": cfg.v_shift, "z_shift": cfg.z_shift,
        "len_bits": max(1, n.bit_length()),
        "z_bits": w.z_bits, "sum_bits": w.sum_bits, "divider_bits": w.divider_bits,
        "theta_bits": w.theta_bits, "threshold_bits": w.threshold_bits, "zb_bits": w.zb_bits,
        "mix_bits": w.mix_bits, "acc_bits": w.acc_bits, "shift_bits": cfg.shift_bits,
        "zb_lim": w.zb_clip >> cfg.z_shift,
    }


_UNSIGNED = {"n", "d", "nd", "n_heads", "total", "reuse_factor"}


def config_struct(cfg: CoreConfig, struct_name: str, *, n_heads: int = 1,
                  reuse_factor: int = 1, heads=None, indent: str = "    ") -> str:
    """C++ text of ``struct struct_name : nnet::inhibitor_attention_config {...};``.

    ``heads``: optional ``(thetas, shifts)`` sequences of length ``n_heads``,
    emitted as the constant tables ``theta(h)``, ``shift(h)`` that
    ``nnet::inhibitor_attention_heads`` reads.
    """
    lines = [f"struct {struct_name} : nnet::inhibitor_attention_config {{"]
    consts = config_constants(cfg, n_heads=n_heads)
    consts["reuse_factor"] = reuse_factor
    for key, value in consts.items():
        if key == "zb_lim":
            ctype = "unsigned long long"
            text = f"{value}ULL"
        else:
            ctype = "unsigned" if key in _UNSIGNED else "int"
            text = str(value)
        lines.append(f"{indent}static const {ctype} {key} = {text};")
    if heads is not None:
        thetas, shifts = ([int(x) for x in seq] for seq in heads)
        if len(thetas) != n_heads or len(shifts) != n_heads:
            raise ValueError(f"heads must give {n_heads} thetas and shifts, got "
                             f"{len(thetas)} and {len(shifts)}")
        for fn, values in (("theta", thetas), ("shift", shifts)):
            table = ", ".join(map(str, values))
            lines += [f"{indent}static long long {fn}(unsigned h) {{",
                      f"{indent}{indent}static const long long table[{n_heads}] = {{{table}}};",
                      f"{indent}{indent}return table[h];",
                      f"{indent}}}"]
    lines.append("};")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class HlsProject:
    """Paths of an emitted HLS project (see the module docstring)."""

    directory: Path
    top: str
    config: CoreConfig
    files: tuple[Path, ...]

    @property
    def source(self) -> Path:
        return self.directory / f"{self.top}.cpp"

    @property
    def testbench(self) -> Path:
        return self.directory / f"{self.top}_tb.cpp"


_HEADER = """\
// {top}: inhibitor attention, one head per call (integer contract of
// inhibitron docs/numerics.md). Generated by inhibitron {version}.
// n = {n}, d = {d}, q/k s{qk_bits}, v s{v_bits}, h s{out_bits}, a = {v_shift}, b = {z_shift}.
#ifndef {guard}
#define {guard}

#include "ap_int.h"
#include "nnet_inhibitor_attention.h"

{struct}
typedef ap_int<{qk_bits}> {top}_qk_t;       // q, k codes
typedef ap_int<{v_bits}> {top}_v_t;         // v codes
typedef ap_int<{out_bits}> {top}_h_t;       // h codes (saturated)
typedef ap_uint<{len_bits}> {top}_len_t;    // L, 1..{n}
typedef ap_int<{theta_bits}> {top}_theta_t; // theta, [{theta_min}, {theta_max}]
typedef ap_uint<{shift_bits}> {top}_shift_t; // r, 0..{shift_max} (r >= {acc_bits} gives h = 0)

// q, k, v, h: row-major (n, d) = ({n}, {d}); element [i][c] at i*{d} + c.
void {top}(const {top}_qk_t q[{nd}], const {top}_qk_t k[{nd}], const {top}_v_t v[{nd}],
           {top}_len_t length, {top}_theta_t theta, {top}_shift_t shift, {top}_h_t h[{nd}]);

#endif
"""

_SOURCE = """\
// Top function of {top} (generated by inhibitron {version}).
#include "{top}.h"

void {top}(const {top}_qk_t q[{nd}], const {top}_qk_t k[{nd}], const {top}_v_t v[{nd}],
           {top}_len_t length, {top}_theta_t theta, {top}_shift_t shift, {top}_h_t h[{nd}]) {{
    // The descriptor fields through AXI-Lite, the tensors as memory ports;
    // k and v partitioned so that one row (d codes) is read per cycle.
    #pragma HLS INTERFACE mode=s_axilite port=length
    #pragma HLS INTERFACE mode=s_axilite port=theta
    #pragma HLS INTERFACE mode=s_axilite port=shift
    #pragma HLS INTERFACE mode=s_axilite port=return
    #pragma HLS ARRAY_PARTITION variable=q cyclic factor={d}
    #pragma HLS ARRAY_PARTITION variable=k cyclic factor={d}
    #pragma HLS ARRAY_PARTITION variable=v cyclic factor={d}
    #pragma HLS ARRAY_PARTITION variable=h cyclic factor={d}
    nnet::inhibitor_attention_head<{top}_qk_t, {top}_qk_t, {top}_v_t, {top}_h_t, {top}_config,
                                   {top}_config::nd>(q, k, v, 0, length, theta, shift, h);
}}
"""

_TESTBENCH = """\
// C-simulation harness of {top} (generated by inhibitron {version}).
//   {top}_csim STIMULUS OUT [EXPECTED]
// STIMULUS: the number of heads, then per head "L theta r" and the n*d codes
// of q, k, v (row-major); OUT: n*d output codes per head, one row per line.
// With EXPECTED (same layout as OUT) every code is compared; the first
// mismatches are printed with (head, row, column) and the exit status is 1.
#include <cstdio>
#include <fstream>
#include <iostream>

#include "{top}.h"

static {top}_qk_t q[{nd}], k[{nd}];
static {top}_v_t v[{nd}];
static {top}_h_t h[{nd}];

int main(int argc, char **argv) {{
    if (argc < 3) {{
        std::fprintf(stderr, "usage: %s STIMULUS OUT [EXPECTED]\\n", argv[0]);
        return 2;
    }}
    std::ifstream in(argv[1]);
    std::ofstream out(argv[2]);
    std::ifstream expected;
    if (argc > 3) expected.open(argv[3]);
    if (!in || !out || (argc > 3 && !expected)) {{
        std::fprintf(stderr, "cannot open the stimulus, output or expected file\\n");
        return 2;
    }}
    long long heads = 0;
    in >> heads;
    long long mismatches = 0;
    for (long long head = 0; head < heads; head++) {{
        long long length, theta, shift, x;
        in >> length >> theta >> shift;
        for (unsigned i = 0; i < {nd}; i++) {{ in >> x; q[i] = x; }}
        for (unsigned i = 0; i < {nd}; i++) {{ in >> x; k[i] = x; }}
        for (unsigned i = 0; i < {nd}; i++) {{ in >> x; v[i] = x; }}
        if (!in) {{
            std::fprintf(stderr, "stimulus ends inside head %lld\\n", head);
            return 2;
        }}
        {top}(q, k, v, length, theta, shift, h);
        for (unsigned i = 0; i < {nd}; i++) {{
            long long got = h[i].to_int64();
            out << got << ((i % {d}) == {d} - 1 ? '\\n' : ' ');
            if (argc > 3) {{
                long long want;
                expected >> want;
                if (!expected || want != got) {{
                    if (mismatches < 10)
                        std::fprintf(stderr, "mismatch head %lld row %u col %u: got %lld, expected %lld\\n",
                                     head, i / {d}, i % {d}, got, want);
                    mismatches++;
                }}
            }}
        }}
    }}
    out.close();
    if (argc > 3) {{
        std::printf("%lld heads, %lld output codes, %lld mismatches\\n", heads, heads * {nd}, mismatches);
        return mismatches ? 1 : 0;
    }}
    return 0;
}}
"""

_TCL = """\
# Vitis HLS: C simulation against the golden outputs, synthesis, IP export.
#   vitis_hls -f run_hls.tcl       (generated by inhibitron {version}; part and clock are examples)
open_project -reset {top}_prj
set_top {top}
add_files {top}.cpp -cflags "-I."
add_files -tb {top}_tb.cpp -cflags "-I."
add_files -tb stimulus.txt
add_files -tb expected.txt
open_solution -reset solution1 -flow_target vivado
set_part {part}
create_clock -period {clock_ns} -name default
csim_design -argv "stimulus.txt csim_out.txt expected.txt"
csynth_design
export_design -format ip_catalog
exit
"""

_HEADS = """\
// Per-head descriptor fields of {top} for checkpoint layer {layer} (generated by inhibitron {version}).
#ifndef {guard}
#define {guard}

#include "{top}.h"

static const unsigned {top}_num_heads = {num_heads};
static const {top}_theta_t {top}_theta[{num_heads}] = {{{thetas}}};
static const {top}_shift_t {top}_shift[{num_heads}] = {{{shifts}}};

#endif
"""


def _version() -> str:
    from .._version import __version__
    return __version__


def _substitutions(cfg: CoreConfig, top: str) -> dict:
    consts = config_constants(cfg)
    w = cfg.widths
    subs = dict(consts)
    subs.update(top=top, version=_version(), guard=f"{top.upper()}_H_",
                theta_min=w.theta_min, theta_max=w.theta_max,
                shift_max=(1 << cfg.shift_bits) - 1,
                struct=config_struct(cfg, f"{top}_config"))
    return subs


def _check_heads(cfg: CoreConfig, heads) -> list:
    """Validate head codes/fields against the config (the C++ would wrap silently)."""
    fmt = cfg.formats
    n, d = cfg.seq_len, cfg.head_dim
    w = cfg.widths
    out = []
    for idx, head in enumerate(heads):
        for name, arr, f in (("q", head.q, fmt.q), ("k", head.k, fmt.k), ("v", head.v, fmt.v)):
            arr = np.asarray(arr)
            if arr.shape != (n, d):
                raise ValueError(f"head {idx}: {name} has shape {arr.shape}, the config needs {(n, d)}")
            f.check(f"head {idx} {name}", arr)
        if not 1 <= int(head.length) <= n:
            raise ValueError(f"head {idx}: length {head.length} outside 1..{n}")
        if not w.theta_min <= int(head.theta) <= w.theta_max:
            raise ValueError(f"head {idx}: theta {head.theta} outside [{w.theta_min}, {w.theta_max}]")
        if int(head.out_shift) < 0:
            raise ValueError(f"head {idx}: out_shift {head.out_shift} is negative")
        out.append(head)
    return out


def write_stimulus(path, cfg: CoreConfig, heads) -> Path:
    """Write ``heads`` (:class:`inhibitron.sim.stimulus.Head`) in the harness's text format.

    ``r`` beyond the descriptor field is sent as the field's maximum (the same
    all-zero output, as :func:`inhibitron.sim.stimulus.pack_desc` does).
    """
    heads = _check_heads(cfg, heads)
    r_max = (1 << cfg.shift_bits) - 1
    parts = [str(len(heads))]
    for head in heads:
        parts.append(f"{int(head.length)} {int(head.theta)} {min(int(head.out_shift), r_max)}")
        for arr in (head.q, head.k, head.v):
            parts.append(" ".join(map(str, np.asarray(arr, dtype=np.int64).ravel().tolist())))
    path = Path(path)
    path.write_text("\n".join(parts) + "\n", encoding="ascii")
    return path


def _golden(cfg: CoreConfig, heads) -> np.ndarray:
    """Expected ``h`` of every head, ``(H, n, d)`` int64, from :mod:`inhibitron.quant.golden`."""
    from ..quant.golden import inhibitor_attention_int

    return inhibitor_attention_int(
        np.stack([h.q for h in heads]), np.stack([h.k for h in heads]),
        np.stack([h.v for h in heads]), np.array([h.length for h in heads]),
        theta=np.array([h.theta for h in heads]), v_shift=cfg.v_shift, z_shift=cfg.z_shift,
        out_shift=np.array([h.out_shift for h in heads]), qk_bits=cfg.qk_bits,
        v_bits=cfg.v_bits, out_bits=cfg.out_bits)


def _write_codes(path: Path, codes: np.ndarray) -> None:
    rows = np.asarray(codes, dtype=np.int64).reshape(-1, codes.shape[-1])
    path.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows.tolist()), encoding="ascii")


def emit_hls(cfg: CoreConfig, out_dir, *, top: str | None = None, layer_quant=None,
             layer: int | None = None, part: str = "xcu250-figd2104-2L-e", clock_ns: float = 4.0,
             heads=None) -> HlsProject:
    """Write the HLS C++ project of ``cfg`` into ``out_dir`` (created if needed).

    Parameters
    ----------
    cfg : CoreConfig
        Sizes, formats and the shifts ``a``, ``b`` (``rows``/``cols`` do not
        matter here: the HLS kernel is ``d`` lanes wide).
    top : str, optional
        Top function name; default ``cfg.name``.
    layer_quant : LayerQuant, optional
        Also write ``<top>_heads.h`` with the per-head ``theta`` and ``r``.
    part, clock_ns : str, float
        Written into ``run_hls.tcl`` only.
    heads : list of heads, optional
        Example stimulus (objects with ``q``, ``k``, ``v``, ``length``,
        ``theta``, ``out_shift``, e.g. :func:`inhibitron.sim.stimulus.random_heads`)
        written to ``stimulus.txt`` with their golden outputs in
        ``expected.txt`` (from :mod:`inhibitron.quant.golden`).

    Returns
    -------
    HlsProject
        The directory, top name and every file written. The output is
        byte-for-byte reproducible (no paths, no timestamps).
    """
    top = top or cfg.name
    if not top.isidentifier():
        raise ValueError(f"top must be a C identifier, not {top!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    subs = _substitutions(cfg, top)
    files = []

    def put(name: str, text: str) -> None:
        path = out / name
        path.write_text(text, encoding="utf-8")
        files.append(path)

    put(KERNEL_HEADER, (TEMPLATE_DIR / KERNEL_HEADER).read_text(encoding="utf-8"))
    put(f"{top}.h", _HEADER.format(**subs))
    put(f"{top}.cpp", _SOURCE.format(**subs))
    put(f"{top}_tb.cpp", _TESTBENCH.format(**subs))
    put("run_hls.tcl", _TCL.format(part=part, clock_ns=clock_ns, **subs))

    if heads is not None:
        files.append(write_stimulus(out / "stimulus.txt", cfg, heads))
        _write_codes(out / "expected.txt", _golden(cfg, heads))
        files.append(out / "expected.txt")

    if layer_quant is not None:
        a, b = np.asarray(layer_quant.v_shift), np.asarray(layer_quant.z_shift)
        if np.any(a != cfg.v_shift) or np.any(b != cfg.z_shift):
            raise ValueError("layer_quant's v_shift/z_shift differ from the config's a, b")
        r_max = (1 << cfg.shift_bits) - 1
        thetas = ", ".join(str(int(t)) for t in np.asarray(layer_quant.theta))
        shifts = ", ".join(str(min(int(r), r_max)) for r in np.asarray(layer_quant.out_shift))
        put(f"{top}_heads.h", _HEADS.format(
            top=top, layer=layer if layer is not None else "?", version=subs["version"],
            guard=f"{top.upper()}_HEADS_H_", num_heads=len(np.asarray(layer_quant.theta)),
            thetas=thetas, shifts=shifts))
    return HlsProject(directory=out, top=top, config=cfg, files=tuple(files))


def emit_hls_from_checkpoint(checkpoint, out_dir, *, layer: int, seq_len: int | None = None,
                             top: str | None = None, **kwargs) -> HlsProject:
    """:func:`emit_hls` for one layer of a checkpoint of ``inhibitron export``.

    The config comes from :meth:`CoreConfig.from_manifest`; the layer's
    per-head ``theta`` and ``r`` go into ``<top>_heads.h``.
    """
    from ..quant.checkpoint import load_checkpoint
    cfg = CoreConfig.from_manifest(checkpoint, layer=layer, rows=1, cols=1, seq_len=seq_len)
    ckpt = load_checkpoint(checkpoint)
    lq = ckpt.layers[layer].attention
    return emit_hls(cfg, out_dir, top=top, layer_quant=lq, layer=layer, **kwargs)


def build_csim(project: HlsProject, *, cxx: str | None = None, opt: str = "-O1",
               timeout: float = 600) -> Path:
    """Compile the C-simulation harness of ``project`` with g++; return the executable.

    Raises ``FileNotFoundError`` without a C++ compiler or the ap_int headers,
    ``RuntimeError`` (with the compiler's output) if compilation fails.
    """
    cxx = cxx or os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise FileNotFoundError(f"C++ compiler {cxx!r} not found")
    exe = project.directory / f"{project.top}_csim"
    cmd = [cxx, "-std=c++14", opt, "-w", f"-I{project.directory}", f"-I{ap_types_dir()}",
           str(project.source), str(project.testbench), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return exe


def run_csim(exe, cfg: CoreConfig, heads, *, workdir=None, timeout: float = 600) -> np.ndarray:
    """Run the harness on ``heads``; return ``h`` of every head, ``(H, n, d)`` int64."""
    heads = list(heads)
    workdir = Path(workdir) if workdir is not None else Path(exe).parent
    stim = write_stimulus(workdir / "csim_stimulus.txt", cfg, heads)
    result = workdir / "csim_out.txt"
    proc = subprocess.run([str(exe), str(stim), str(result)], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{exe} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    codes = np.array(result.read_text(encoding="ascii").split(), dtype=np.int64)
    n, d = cfg.seq_len, cfg.head_dim
    if codes.size != len(heads) * n * d:
        raise RuntimeError(f"{exe} wrote {codes.size} codes, expected {len(heads) * n * d}")
    return codes.reshape(len(heads), n, d)
