"""The efficiency study's sweep: build, synthesise and measure each design point.

The study compares the inhibitor core with the dot-product baseline, side by
side on an FPGA.

For each array size ``s x s`` and head dimension ``d`` (8-bit codes, ``n``
keys per head) both cores are generated, synthesised and placed-and-routed
(:mod:`inhibitron.hw.synth`, cached per design hash under ``build/compare``)
and compared on:

* LUT4 sites, flip-flops, DSPs (``MULT18X18D``), block RAMs and achieved Fmax
  (ECP5-85F, CABGA381, speed 6 by default; the cores are I/O-wrapped);
* cycles per head from each core's cycle formula (both formulas are checked
  against cosimulation: the inhibitor's by its own tests, the baseline's by
  ``tests/synth/test_baseline_cosim.py``), heads/s at the achieved Fmax;
* arithmetic energy per head from :mod:`inhibitron.hw.opcount` weighted by
  Horowitz (ISSCC 2014, 45 nm);
* the largest array that fits the device.

:func:`run_study` returns the rows (one per :class:`StudyPoint`, from
:func:`run_point`), :func:`run_pes` those of single PEs;
:func:`inhibitron.hw.compare_report.write_report` writes them as
``docs/efficiency.md`` with PNG plots in ``docs/img/``. ``inhibitron
compare`` and ``make bench`` (:func:`bench_compare`) drive both.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .devices import DEFAULT_DEVICE, get_device
from .opcount import baseline_ops, inhibitor_ops, summarize

__all__ = ["StudyPoint", "run_point", "run_study", "run_pes", "bench_compare",
           "DEFAULT_SIZES", "DEFAULT_DIMS", "KINDS", "ALL_KINDS"]

DEFAULT_SIZES = (2, 4, 8, 16)
DEFAULT_DIMS = (32, 64)
#: The cores of the efficiency sweep (``inhibitron compare``, ``make bench``).
KINDS = ("inhibitor", "baseline")
#: Every core a :class:`StudyPoint` can build: :data:`KINDS` and the baseline with its
#: multipliers in LUT fabric (``BaselineConfig(multipliers="fabric")``; the capacity
#: study, :mod:`inhibitron.hw.capacity`).
ALL_KINDS = KINDS + ("baseline-fabric",)


@dataclass(frozen=True)
class StudyPoint:
    """One design of the sweep: which core, array ``size x size``, head dim ``d``, ``n`` keys.

    ``kind`` is one of :data:`ALL_KINDS`. The baselines need ``size`` to divide
    ``n`` and ``d``; the inhibitor core takes any ``size <= min(n, d)`` (its
    last tiles are partial). ``slices`` builds the core with register slices
    on its streams (``stream_slices`` of its configuration; the tag ends in
    ``_sl``).
    """

    kind: str
    size: int
    head_dim: int
    seq_len: int = 64
    bits: int = 8
    slices: bool = False

    def __post_init__(self):
        if self.kind not in ALL_KINDS:
            raise ValueError(f"kind must be one of {ALL_KINDS}, not {self.kind!r}")
        if not isinstance(self.slices, bool):
            raise TypeError(f"slices must be a bool, not {self.slices!r}")
        for name in ("size", "head_dim", "seq_len", "bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if self.kind == "inhibitor":
            if self.size > min(self.seq_len, self.head_dim):
                raise ValueError(f"the array size {self.size} must be <= seq_len={self.seq_len} "
                                 f"and head_dim={self.head_dim}")
        elif self.seq_len % self.size or self.head_dim % self.size:
            raise ValueError(f"seq_len={self.seq_len} and head_dim={self.head_dim} must be "
                             f"multiples of the array size {self.size}")

    @property
    def tag(self) -> str:
        """Name of the design (its Verilog top module and build folder)."""
        kind = self.kind.replace("-", "_")
        sl = "_sl" if self.slices else ""
        return f"{kind}_{self.size}x{self.size}_d{self.head_dim}_n{self.seq_len}_b{self.bits}{sl}"

    def build_config(self):
        """The :class:`~inhibitron.hw.config.CoreConfig` or :class:`~inhibitron.hw.baseline_config.BaselineConfig` of this point."""
        from ..quant.formats import AttentionFormats
        from .baseline_config import BaselineConfig
        from .config import CoreConfig

        b = self.bits
        kw = dict(rows=self.size, cols=self.size, seq_len=self.seq_len, head_dim=self.head_dim,
                  formats=AttentionFormats(b, b, b), stream_slices=self.slices)
        if self.kind == "inhibitor":
            return CoreConfig(**kw)
        return BaselineConfig(**kw, multipliers="fabric" if self.kind == "baseline-fabric" else "dsp")

    def build(self):
        """The Amaranth core of this point."""
        from .baseline import DotProductAttentionCore
        from .core import InhibitorAttentionCore

        core_type = InhibitorAttentionCore if self.kind == "inhibitor" else DotProductAttentionCore
        return core_type(self.build_config())

    def cycles_per_head(self) -> int:
        """Steady-state cycles per head, from the core's configuration (nothing is built)."""
        cfg = self.build_config()
        if self.kind == "inhibitor":
            return int(cfg.cycles_per_head)
        return int(cfg.cycles_per_head(self.seq_len))

    def ops(self):
        kw = dict(n=self.seq_len, d=self.head_dim, qk_bits=self.bits, v_bits=self.bits,
                  out_bits=self.bits)
        return inhibitor_ops(**kw) if self.kind == "inhibitor" else baseline_ops(**kw)


def _predicted_dsp(point: StudyPoint) -> int:
    """Hard multipliers the baseline needs: one per MAC PE of its two arrays (``2 * size**2``)
    plus three per softmax lane (``x * M`` in two products, ``e * rec``; one lane per row).
    0 for the inhibitor and for the baseline with its multipliers in fabric."""
    return 2 * point.size ** 2 + 3 * point.size if point.kind == "baseline" else 0


def run_point(point: StudyPoint, *, device: str = DEFAULT_DEVICE, freq_mhz: float = 150.0,
              out_root: Path | str = "build/compare", seed: int = 1, progress: bool = True,
              synthesize: bool = True, pnr_timeout_s: float | None = 1200.0,
              cache_only: bool = False, pnr: bool = True, router: str | None = None,
              placer: str | None = None, pnr_retries: int = 2) -> dict:
    """Synthesise one point (cached) and return its row of the study.

    A baseline whose MAC PEs alone exceed the device's DSPs is not run; its row
    says so (``fits`` False, ``limit`` naming the resource, "predicted"). With
    ``cache_only`` a point without a saved result is not synthesised either
    (``fits`` None, ``limit`` says so). A row with ``fits`` None also has
    ``failure``: ``"not cached"``, ``"timeout"`` (nextpnr did not finish within
    ``pnr_timeout_s`` for seeds ``seed .. seed + pnr_retries``), ``"tool"`` or
    ``"toolchain"``.

    ``router``/``placer`` are nextpnr's (:func:`inhibitron.hw.synth.synthesize`);
    a point run with either has its own build folder, ``<tag>_<router>[_<placer>]``
    (:func:`build_dir`), so it never replaces a result of nextpnr's defaults, and
    its row names them (``router``, ``placer``). With ``cache_only`` and no
    ``router``, a point without a saved result under nextpnr's defaults takes
    its saved ``router2`` result if there is one (large arrays route only with
    it: ``inhibitron capacity``).
    """
    from . import synth

    dev = get_device(device)
    ops = point.ops()
    s = summarize(ops)
    row = {
        "kind": point.kind, "size": point.size, "d": point.head_dim, "n": point.seq_len,
        "bits": point.bits, "slices": point.slices, "device": device, "cycles_per_head": point.cycles_per_head(),
        "adds_per_head": s["adds"], "muls_per_head": s["muls"],
        "energy_pj_per_head": s["energy_pj"], "energy_by_stage": s["by_stage"],
        "pnr": pnr,
    }
    if not synthesize:
        return row
    need = _predicted_dsp(point)
    if need > dev.dsp:
        row.update(fits=False,
                   limit=f"{dev.arch.placed_dsp}: needs >= {need}, has {dev.dsp} (predicted)")
        return row
    out = build_dir(out_root, device, point, router=router, placer=placer)
    try:
        res = synth.synthesize_component(point.build(), top=point.tag, out_dir=out,
                                         device=device, freq_mhz=freq_mhz, seed=seed,
                                         progress=progress, wrap=True,
                                         pnr_timeout_s=pnr_timeout_s, cache_only=cache_only,
                                         pnr=pnr, router=router, placer=placer,
                                         pnr_retries=pnr_retries)
    except synth.NotCached:
        if cache_only and router is None:
            # a point that only routes with router2 (inhibitron capacity runs it so)
            alt = run_point(point, device=device, freq_mhz=freq_mhz, out_root=out_root,
                            seed=seed, progress=progress, synthesize=synthesize,
                            pnr_timeout_s=pnr_timeout_s, cache_only=True, pnr=pnr,
                            router="router2", placer=placer, pnr_retries=pnr_retries)
            if alt.get("fits") is not None:
                return alt
        row.update(fits=None, failure="not cached",
                   limit="not measured: no saved result (run without --cached-only)")
        return row
    except synth.DesignDoesNotFit as exc:
        row.update(fits=False, limit=f"{exc.resource}: needs {exc.needed}, has {exc.available}")
        return row
    except (synth.ToolError, synth.ToolchainError) as exc:
        failure = ("timeout" if isinstance(exc, synth.PnrTimeout) else
                   "toolchain" if isinstance(exc, synth.ToolchainError) else "tool")
        row.update(fits=None, failure=failure, limit=f"not measured: {str(exc).splitlines()[0]}")
        return row
    row.update(
        fits=True, seed=res.seed, lut4=res.lut4, carry=res.carry, lut4_sites=res.lut4_equiv, ff=res.ff,
        dsp=res.dsp, bram=res.bram, premap_mul=res.premap_mul, fmax_mhz=res.fmax_mhz,
        placed_comb=res.placed_comb,
        heads_per_s=(res.fmax_mhz * 1e6 / row["cycles_per_head"]) if res.fmax_mhz else None,
        critical_path=res.critical_path, synth_runtime_s=res.runtime_s,
    )
    if router or placer:
        row.update(router=router, placer=placer)
    return row


def build_dir(out_root: Path | str, device: str, point: StudyPoint, *, router: str | None = None,
              placer: str | None = None) -> Path:
    """The folder of one point's synthesis run: ``<out_root>/<device>/<tag>``, with
    ``_<router>`` and ``_placer-<placer>`` appended when nextpnr's are not its defaults."""
    name = point.tag + (f"_{router}" if router else "") + (f"_placer-{placer}" if placer else "")
    return Path(out_root) / device / name


def _source_digest() -> str:
    """SHA-256 (16 hex) of the Python that generates the designs: ``hw/`` and ``quant/``.

    The study's own bookkeeping and report modules (``compare*.py``, ``energy.py``,
    ``capacity.py``) are left out: editing them changes no design.
    """
    import hashlib

    from .. import quant

    h = hashlib.sha256()
    for root in (Path(__file__).parent, Path(quant.__file__).parent):
        for f in sorted(root.glob("*.py")):
            if f.name.startswith("compare") or f.name in ("energy.py", "capacity.py"):
                continue
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _row_path(out_root: Path, device: str, point: StudyPoint, *, router: str | None = None,
              placer: str | None = None) -> Path:
    return build_dir(out_root, device, point, router=router, placer=placer) / f"{point.tag}.row.json"


def _row_key(point: StudyPoint, kw: dict, source: str) -> str:
    """Key of a saved row: the point, the flow options and the sources; ``router``/``placer``
    only when given (so rows saved before they existed keep their key)."""
    import hashlib
    import json

    fields = {"point": point.tag, "source": source,
              **{k: kw[k] for k in ("device", "freq_mhz", "seed", "pnr")},
              **{k: kw[k] for k in ("router", "placer") if kw.get(k) is not None}}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _load_row(path: Path, key: str) -> dict | None:
    import json

    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved["row"] if isinstance(saved, dict) and saved.get("key") == key else None


def _save_row(path: Path, key: str, row: dict) -> None:
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "row": row}, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _start_client(jobs: int, scheduler: str | None):
    """A ``dask.distributed`` client: of the scheduler at ``scheduler``, else of a new
    :class:`~distributed.LocalCluster` of ``jobs`` single-threaded worker processes.

    Returns ``(client, cluster)`` (``cluster`` None for an external scheduler).
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask is in the "sim" extra
        raise ImportError("inhibitron compare on several workers needs dask.distributed: "
                          "pip install 'dask[distributed]'") from exc
    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster), cluster


def run_study(*, sizes=DEFAULT_SIZES, dims=DEFAULT_DIMS, seq_len: int = 64, bits: int = 8,
              device: str = DEFAULT_DEVICE, freq_mhz: float = 150.0,
              out_root: Path | str = "build/compare", progress: bool = True,
              kinds=KINDS, jobs: int = 1, cache_only: bool = False, pnr: bool = True,
              seed: int = 1, scheduler: str | None = None, slices: bool = False) -> list[dict]:
    """Run every point of the sweep (smallest first), with a tqdm bar; return the rows.

    With ``slices`` every core has register slices on its streams
    (:attr:`StudyPoint.slices`).

    Points run on ``dask.distributed``: on the scheduler at ``scheduler``
    (``"tcp://host:8786"``; its workers must import this package and see
    ``out_root`` at the same path, e.g. a shared file system), else, with
    ``jobs`` > 1, on a :class:`~distributed.LocalCluster` of ``jobs``
    single-threaded workers (each Yosys/nextpnr run uses one core). ``jobs`` 1
    without a scheduler runs the points one after another in this process (no
    cluster).

    Every finished point is cached twice: its synthesis result by the hash of
    its Verilog (:mod:`inhibitron.hw.synth_cache`, on the worker) and its row
    as ``<out_root>/<device>/<tag>/<tag>.row.json`` (written here, keyed by
    the point, the flow options and a hash of the ``hw``/``quant`` sources).
    An interrupted sweep therefore resumes: rows found are not submitted again
    (they come back with ``"from_cache": True``), and when nothing is left to
    run no cluster is started. Rows not measured (``fits`` None: a tool error,
    ``cache_only``) are not cached. The rows come back in sweep order.
    """
    from tqdm import tqdm

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, not {jobs!r}")
    points = [StudyPoint(kind, s, d, seq_len, bits, slices) for d in dims for s in sorted(sizes)
              for kind in kinds]
    kw = dict(device=device, freq_mhz=freq_mhz, cache_only=cache_only, pnr=pnr, seed=seed)
    root = Path(out_root) if scheduler else Path(out_root).resolve()
    source = _source_digest()
    rows: list[dict | None] = [None] * len(points)
    pending = []
    for i, p in enumerate(points):
        key = _row_key(p, kw, source)
        row = _load_row(_row_path(root, device, p), key)
        if row is not None:
            rows[i] = dict(row, from_cache=True)
        else:
            pending.append((i, p, key))
    bar = tqdm(total=len(points), initial=len(points) - len(pending), desc="efficiency study",
               unit="design", disable=not progress, file=sys.stderr)

    def done(i, key, row):
        rows[i] = dict(row, from_cache=False)
        if row.get("fits") is not None:
            _save_row(_row_path(root, device, points[i]), key, row)
        bar.set_postfix_str(points[i].tag)
        bar.update(1)

    try:
        if pending and jobs == 1 and not scheduler:
            for i, p, key in pending:
                bar.set_postfix_str(p.tag)
                done(i, key, run_point(p, progress=progress, out_root=root, **kw))
        elif pending:
            from distributed import as_completed

            client, cluster = _start_client(jobs, scheduler)
            try:
                futures = {}
                for i, p, key in pending:
                    fut = client.submit(run_point, p, progress=False, out_root=str(root),
                                        key=f"compare-{p.tag}-{key}", pure=False, **kw)
                    futures[fut] = (i, key)
                for fut in as_completed(futures):
                    i, key = futures[fut]
                    done(i, key, fut.result())
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
        return rows
    finally:
        bar.close()


def run_pes(*, device: str = DEFAULT_DEVICE, freq_mhz: float = 200.0, bits: int = 8,
            length: int = 64, out_root: Path | str = "build/compare", progress: bool = True,
            cache_only: bool = False) -> list[dict]:
    """Synthesise single PEs of both cores (I/O-wrapped, cached): LUT4 sites, FF, DSP, Fmax."""
    from . import synth
    from .mac_pe import MacPE
    from .pe import L1PE, SoftThresholdPE

    pes = [
        ("L1 PE (inhibitor score)", "l1pe", lambda: L1PE(width=bits, length=length)),
        ("soft-threshold PE (inhibitor mix)", "stpe",
         lambda: SoftThresholdPE(v_bits=bits, zb_bits=bits + 1, length=length)),
        ("MAC PE (baseline, shared array)", "macpe",
         lambda: MacPE(a_bits=bits + 1, b_bits=bits, length=length)),
    ]
    rows = []
    for label, tag, make in pes:
        res = synth.synthesize_component(make(), top=f"{tag}_b{bits}_l{length}",
                                         out_dir=Path(out_root) / device / "pes" / tag,
                                         device=device, freq_mhz=freq_mhz, wrap=True,
                                         progress=progress, cache_only=cache_only)
        rows.append({"pe": label, "lut4": res.lut4, "carry": res.carry,
                     "lut4_sites": res.lut4_equiv, "ff": res.ff, "dsp": res.dsp,
                     "fmax_mhz": res.fmax_mhz})
    return rows


def bench_compare() -> dict:
    """``make bench`` entry: the full sweep on ECP5-85F; writes docs/efficiency.md."""
    import os

    from .compare_report import write_report

    jobs = max(1, min(4, os.cpu_count() or 1))
    rows = run_study(jobs=jobs)
    write_report(rows, "docs/efficiency.md", command="make bench",
                 pe_rows=run_pes())
    table = []
    for r in rows:
        table.append({k: r.get(k) for k in ("kind", "size", "d", "lut4_sites", "ff", "dsp",
                                             "fmax_mhz", "cycles_per_head", "heads_per_s",
                                             "energy_pj_per_head")})
    return {"title": "inhibitor vs dot-product baseline", "rows": table,
            "notes": "Full report with plots: docs/efficiency.md."}
