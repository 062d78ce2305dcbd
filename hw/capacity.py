"""Whole-device capacity: the largest attention core that places and routes on a device.

For one core (``"inhibitor"``, ``"baseline"`` with hard multipliers,
``"baseline-fabric"`` with its multipliers in LUTs) and one device,
:func:`capacity_search` walks square array sizes ``S`` upward and stops at the
first size that fails. For each size it

1. **predicts** from cheap facts and does not run a size predicted not to
   fit: the baseline's hard multipliers (``2 S^2 + 3 S``,
   :func:`inhibitron.hw.compare._predicted_dsp`) against the device's DSPs,
   and the LUT4 sites extrapolated in ``S^2`` from the two largest sizes
   measured so far against the device's logic cells times ``lut_margin``;
2. otherwise **synthesises, places and routes** the I/O-wrapped core through
   :func:`inhibitron.hw.compare.run_point` (cached per design hash), trying
   each of ``seeds`` in turn while nextpnr does not finish within
   ``pnr_timeout_s`` (or fails otherwise). A size fits when one seed routes;
   it fails when the design does not fit (Yosys or nextpnr count more of a
   resource than the device has: no seed can help), or when no seed routes.

With ``refine`` the search then bisects between the largest fitting size and
the first failing one over the sizes the core accepts: any ``S <= min(n, d)``
for the inhibitor (the last tiles are partial), only common divisors of ``n``
and ``d`` for the baselines.

Every attempt is saved, so a rerun costs nothing and an interrupted search
resumes where it stopped: a routed (or does-not-fit) point as the study's row
(``<build>/<device>/<tag>[_<router>]/<tag>.row.json``, the same file
:func:`inhibitron.hw.compare.run_study` reads and writes), a seed that did not
route as ``<tag>.s<seed>.failed.json`` beside it, with the timeout it was
given (a later search with a longer timeout tries that seed again). Both are
keyed by the point, the flow options (device, target clock, seed, router,
placer) and a hash of the ``hw``/``quant`` sources. When the sources have
changed since, a saved row is found again through the synthesis cache (the
design is regenerated and its Verilog hashed; no tool runs if it is the same),
and a saved failure through the hash of the Verilog it was made from, so an
edit elsewhere in ``hw/`` does not make a size that timed out run again. A
search with ``cached_only`` runs no tool and stops at the first size without a
saved result.

:func:`headline` compares the cores of one device at their best (highest
heads/s among the sizes that fit). ``inhibitron capacity`` drives both.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .devices import NEXTPNR_PLACERS, NEXTPNR_ROUTERS, get_device

if TYPE_CHECKING:
    from .compare import StudyPoint

# This module imports nothing heavy at the top (the CLI reads its constants to build
# ``--help``); :mod:`inhibitron.hw.compare` (amaranth) is imported where it is used.

__all__ = ["Capacity", "capacity_search", "capacity_study", "headline", "default_sizes",
           "allowed_sizes", "write_json", "KINDS", "STATUSES", "DEFAULT_PNR_TIMEOUT_S",
           "DEFAULT_SEEDS", "DEFAULT_LUT_MARGIN"]

#: The cores the search knows: :data:`inhibitron.hw.compare.ALL_KINDS` (a test checks).
KINDS = ("inhibitor", "baseline", "baseline-fabric")

#: Status of one size in :attr:`Capacity.rows`.
STATUSES = ("fits", "no fit", "predicted no fit", "unrouted", "error", "not measured")
#: Statuses that end the upward walk as a failure of the size.
_FAILED = ("no fit", "predicted no fit", "unrouted", "error")

DEFAULT_PNR_TIMEOUT_S = 3600.0
DEFAULT_SEEDS = (1, 2)
#: A size is predicted not to fit when its extrapolated LUT4 sites exceed the device's
#: logic cells by this factor (the extrapolation is rough; a margin keeps it from
#: skipping a size that would have fitted).
DEFAULT_LUT_MARGIN = 1.25


def _check_pos(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def default_sizes(seq_len: int, head_dim: int) -> tuple[int, ...]:
    """The sizes every core accepts: the common divisors of ``n`` and ``d``, ascending.

    >>> default_sizes(128, 64)
    (1, 2, 4, 8, 16, 32, 64)
    """
    g = math.gcd(_check_pos("seq_len", seq_len), _check_pos("head_dim", head_dim))
    return tuple(s for s in range(1, g + 1) if g % s == 0)


def allowed_sizes(kind: str, seq_len: int, head_dim: int) -> tuple[int, ...]:
    """Every square size *kind* can be built at: ``1 .. min(n, d)`` for the inhibitor,
    :func:`default_sizes` for the baselines.

    >>> allowed_sizes("baseline", 12, 8)
    (1, 2, 4)
    >>> allowed_sizes("inhibitor", 12, 8)
    (1, 2, 3, 4, 5, 6, 7, 8)
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if kind == "inhibitor":
        return tuple(range(1, min(_check_pos("seq_len", seq_len),
                                  _check_pos("head_dim", head_dim)) + 1))
    return default_sizes(seq_len, head_dim)


@dataclass(frozen=True)
class Capacity:
    """The outcome of :func:`capacity_search` for one core on one device.

    Members
    -------
    rows : tuple of dict
        One row per size tried, in the order tried: the study's row of
        :func:`inhibitron.hw.compare.run_point` (resources, ``fmax_mhz``,
        ``heads_per_s``, ``cycles_per_head``, ...) plus ``status`` (one of
        :data:`STATUSES`), ``reason`` (why it failed, else None), ``seeds_tried``,
        ``seed_failures`` (why each seed before the deciding one failed), ``refine``
        (True for a bisection step), ``router``, ``placer`` and ``from_cache``.
    """

    kind: str
    device: str
    seq_len: int
    head_dim: int
    bits: int
    router: str | None
    placer: str | None
    seeds: tuple[int, ...]
    pnr: bool
    pnr_timeout_s: float | None
    rows: tuple[dict, ...] = field(default=())

    @property
    def fitting(self) -> list[dict]:
        """Rows that fit, smallest size first."""
        return sorted((r for r in self.rows if r["status"] == "fits"), key=lambda r: r["size"])

    @property
    def largest(self) -> dict | None:
        """The row of the largest size that fits (None: not even the smallest)."""
        fit = self.fitting
        return fit[-1] if fit else None

    @property
    def best(self) -> dict | None:
        """The fitting row with the most heads/s (the largest size when Fmax is unknown)."""
        fit = self.fitting
        if not fit:
            return None
        return max(fit, key=lambda r: (r.get("heads_per_s") or 0.0, r["size"]))

    @property
    def failed(self) -> dict | None:
        """The row of the smallest failing size above :attr:`largest` (None: every size fit,
        or the search stopped on a size it could not measure)."""
        top = self.largest["size"] if self.largest else 0
        fails = [r for r in self.rows if r["status"] in _FAILED and r["size"] > top]
        return min(fails, key=lambda r: r["size"]) if fails else None

    @property
    def complete(self) -> bool:
        """True unless the search stopped on a size it could not measure (``cached_only``)."""
        return not any(r["status"] == "not measured" for r in self.rows)

    def to_dict(self) -> dict:
        """Plain JSON-able summary: the parameters, the rows, and largest/best/failed sizes."""
        def size(r):
            return r["size"] if r else None
        return {
            "kind": self.kind, "device": self.device, "n": self.seq_len, "d": self.head_dim,
            "bits": self.bits, "router": self.router, "placer": self.placer,
            "seeds": list(self.seeds), "pnr": self.pnr, "pnr_timeout_s": self.pnr_timeout_s,
            "largest": size(self.largest), "best": size(self.best), "failed": size(self.failed),
            "failed_reason": self.failed["reason"] if self.failed else None,
            "complete": self.complete, "rows": [dict(r) for r in self.rows],
        }


def _failed_path(row_path: Path, point: StudyPoint, seed: int) -> Path:
    return row_path.parent / f"{point.tag}.s{seed}.failed.json"


def _verilog_digest(text: bytes) -> str:
    """SHA-256 (16 hex) of Verilog without its source-location attributes (as the synthesis cache)."""
    from .synth_cache import _SRC_ATTR

    return hashlib.sha256(_SRC_ATTR.sub(b"", text)).hexdigest()[:16]


def _load_failure(path: Path, flow: str, source: str, timeout: float | None,
                  verilog: Callable[[], str]) -> dict | None:
    """A saved failed attempt, if it was made with the flow options *flow*, at least *timeout*
    seconds, and the sources *source* or else the same Verilog (``verilog()`` makes it)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("flow") != flow:
        return None
    row = saved.get("row")
    if not isinstance(row, dict):
        return None
    if row.get("failure") == "timeout":
        old = saved.get("pnr_timeout_s")
        if old is not None and (timeout is None or old < timeout):
            return None  # a longer timeout may route it
    if saved.get("source") != source:
        if not saved.get("verilog") or saved["verilog"] != verilog():
            return None
        _save_json(path, dict(saved, source=source))  # same design: valid for these sources too
    return row


def _save_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _lut_prediction(fitting: list[dict], size: int) -> tuple[float, int, int] | None:
    """LUT4 sites at *size*, extrapolated in ``S^2`` from the two largest measured sizes."""
    have = sorted((r for r in fitting if r.get("lut4_sites")), key=lambda r: r["size"])
    if len(have) < 2:
        return None
    a, b = have[-2], have[-1]
    if size <= b["size"]:
        return None
    slope = (b["lut4_sites"] - a["lut4_sites"]) / (b["size"] ** 2 - a["size"] ** 2)
    return b["lut4_sites"] + max(slope, 0.0) * (size ** 2 - b["size"] ** 2), a["size"], b["size"]


def capacity_search(kind: str, device: str, *, seq_len: int = 128, head_dim: int = 64,
                    bits: int = 8, sizes: Sequence[int] | None = None,
                    seeds: Sequence[int] = DEFAULT_SEEDS, router: str | None = None,
                    placer: str | None = None, freq_mhz: float = 150.0,
                    pnr_timeout_s: float | None = DEFAULT_PNR_TIMEOUT_S, pnr: bool = True,
                    out_root: Path | str = "build/compare", refine: bool = False,
                    lut_margin: float | None = DEFAULT_LUT_MARGIN, cached_only: bool = False,
                    retry_failed: bool = False, progress: bool = True,
                    runner: Callable[..., dict] | None = None,
                    log: Callable[[str], None] | None = None) -> Capacity:
    """Find the largest square array of *kind* that places and routes on *device*.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    device : str
        A name in :data:`inhibitron.hw.devices.DEVICES`.
    seq_len, head_dim, bits : int
        ``n``, ``d`` and the width of every Q/K/V/H code.
    sizes : sequence of int, optional
        Sizes to walk (sorted ascending, duplicates dropped); each must be one
        *kind* accepts (:func:`allowed_sizes`). Default: :func:`default_sizes`.
    seeds : sequence of int
        nextpnr seeds, tried in turn while a size does not route.
    router, placer : str, optional
        nextpnr's ``--router`` / ``--placer`` (None: nextpnr's default).
    freq_mhz : float
        nextpnr's target clock; the achieved Fmax is reported either way.
    pnr_timeout_s : float or None
        Give up on one seed after this many seconds of nextpnr (None: never).
    pnr : bool
        Place and route (else Yosys only: a size fits when its LUT4 sites,
        flip-flops, DSPs and block RAMs are within the device's; no Fmax).
    out_root : path
        The synthesis cache (the study's ``build/compare``).
    refine : bool
        Bisect between the largest fitting and the first failing size.
    lut_margin : float or None
        Factor of the LUT4 prediction (see the module docstring); None: no LUT4
        prediction.
    cached_only : bool
        Run no tool; stop at the first size without a saved result
        (status ``"not measured"``).
    retry_failed : bool
        Try again seeds saved as failed (else a saved failure is reused).
    progress : bool
        Progress bars of the tools.
    runner : callable, optional
        Runs one point; called as :func:`inhibitron.hw.compare.run_point`
        (the default) with ``pnr_retries=0``. For tests.
    log : callable, optional
        Called with one line per size decided.

    Returns
    -------
    Capacity

    Raises
    ------
    ValueError
        For bad parameters (each names the parameter).
    ToolchainError
        If a tool is not installed.
    """
    from . import compare
    from .synth import ToolchainError

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    dev = get_device(device)
    for name, value in (("seq_len", seq_len), ("head_dim", head_dim), ("bits", bits)):
        _check_pos(name, value)
    allowed = allowed_sizes(kind, seq_len, head_dim)
    if sizes is None:
        walk = list(default_sizes(seq_len, head_dim))
    else:
        walk = sorted(set(_check_pos("sizes", s) for s in sizes))
        if not walk:
            raise ValueError("sizes must name at least one size")
        bad = [s for s in walk if s not in allowed]
        if bad:
            rule = (f"<= min(seq_len, head_dim) = {min(seq_len, head_dim)}" if kind == "inhibitor"
                    else f"divisors of both seq_len={seq_len} and head_dim={head_dim}")
            raise ValueError(f"sizes {bad} cannot be built for {kind}: sizes must be {rule}")
    seeds = tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be one or more non-negative integers, not {list(seeds)!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, not {list(seeds)!r}")
    if router is not None and router not in NEXTPNR_ROUTERS:
        raise ValueError(f"router must be one of {', '.join(NEXTPNR_ROUTERS)} or None, not {router!r}")
    if placer is not None and placer not in NEXTPNR_PLACERS:
        raise ValueError(f"placer must be one of {', '.join(NEXTPNR_PLACERS)} or None, not {placer!r}")
    if isinstance(freq_mhz, bool) or not isinstance(freq_mhz, (int, float)) or not freq_mhz > 0:
        raise ValueError(f"freq_mhz must be a positive number, not {freq_mhz!r}")
    if pnr_timeout_s is not None and (isinstance(pnr_timeout_s, bool)
                                      or not isinstance(pnr_timeout_s, (int, float))
                                      or not pnr_timeout_s > 0):
        raise ValueError(f"pnr_timeout_s must be a positive number or None, not {pnr_timeout_s!r}")
    if lut_margin is not None and (isinstance(lut_margin, bool)
                                   or not isinstance(lut_margin, (int, float))
                                   or not lut_margin >= 1):
        raise ValueError(f"lut_margin must be a number >= 1 or None, not {lut_margin!r}")
    if runner is None:
        runner = compare.run_point
        if not cached_only:  # a missing tool is an error, not a size that "fails"
            from .toolchain import find_nextpnr, find_yosys

            find_yosys(system=False)
            if pnr:
                find_nextpnr(dev.arch.name)

    compare.StudyPoint(kind, walk[0], head_dim, seq_len, bits).build_config()  # formats valid?
    source = compare._source_digest()
    rows: list[dict] = []

    def say(text: str) -> None:
        if log is not None:
            log(text)

    def fitting() -> list[dict]:
        return [r for r in rows if r["status"] == "fits"]

    def predict(point: StudyPoint) -> str | None:
        need = compare._predicted_dsp(point)
        if need > dev.dsp:
            return f"{dev.arch.placed_dsp}: needs >= {need}, has {dev.dsp} (predicted)"
        if lut_margin is not None:
            guess = _lut_prediction(fitting(), point.size)
            if guess is not None and guess[0] > lut_margin * dev.lut4:
                est, a, b = guess
                return (f"LUT4 sites: needs ~{est:,.0f} (extrapolated from {a}x{a} and {b}x{b}), "
                        f"has {dev.lut4:,} (predicted, margin {lut_margin:g}x)")
        return None

    def attempt(point: StudyPoint, seed: int) -> dict:
        kw = dict(device=device, freq_mhz=float(freq_mhz), seed=seed, pnr=pnr, router=router,
                  placer=placer)
        key = compare._row_key(point, kw, source)
        flow = compare._row_key(point, kw, "")
        row_path = compare._row_path(out_root, device, point, router=router, placer=placer)
        fail_path = _failed_path(row_path, point, seed)
        saved = compare._load_row(row_path, key)
        if saved is not None:
            return dict(saved, from_cache=True)
        if not retry_failed:
            def verilog() -> str:
                from .synth import component_verilog

                return _verilog_digest(component_verilog(point.build(), top=point.tag).encode())

            saved = _load_failure(fail_path, flow, source, pnr_timeout_s, verilog)
            if saved is not None:
                return dict(saved, from_cache=True)
        row = runner(point, device=device, freq_mhz=float(freq_mhz), out_root=out_root,
                     seed=seed, progress=progress, pnr_timeout_s=pnr_timeout_s,
                     cache_only=cached_only, pnr=pnr, router=router, placer=placer,
                     pnr_retries=0)
        row = dict(row)
        if row.get("fits") is not None:
            compare._save_row(row_path, key, row)
        elif row.get("failure") in ("timeout", "tool"):
            v = row_path.parent / f"{point.tag}.v"  # written by run_point for this run
            _save_json(fail_path, {"flow": flow, "source": source, "pnr_timeout_s": pnr_timeout_s,
                                   "verilog": _verilog_digest(v.read_bytes()) if v.is_file() else None,
                                   "row": row})
        elif row.get("failure") == "toolchain":
            raise ToolchainError(row.get("limit", "a tool is missing"))
        return dict(row, from_cache=False)

    def decide(size: int, refining: bool) -> dict:
        point = compare.StudyPoint(kind, size, head_dim, seq_len, bits)
        reason = predict(point)
        if reason is not None:
            row = compare.run_point(point, device=device, synthesize=False)
            row.update(fits=False, limit=reason, status="predicted no fit", reason=reason,
                       seeds_tried=[], seed_failures=[], from_cache=False)
        else:
            tried, failures = [], []
            for seed in seeds:
                row = attempt(point, seed)
                tried.append(seed)
                if row.get("fits") is not None or row.get("failure") == "not cached":
                    break
                failures.append(row)
            row["seeds_tried"] = tried
            row["seed_failures"] = [f"seed {t}: {r.get('limit')}" for t, r in zip(tried, failures)]
            if row.get("fits") is True and not pnr:
                need = max(row.get("lut4_sites") or 0, row.get("ff") or 0)
                if need > dev.lut4:
                    what = "LUT4 sites" if need == row.get("lut4_sites") else "flip-flops"
                    row.update(fits=False, limit=f"{what}: needs {need:,}, has {dev.lut4:,} "
                                                 f"logic cells (Yosys, before place-and-route)")
            if row.get("fits") is True:
                row.update(status="fits", reason=None)
            elif row.get("fits") is False:
                row.update(status="no fit", reason=row.get("limit"))
            elif row.get("failure") == "not cached":
                row.update(status="not measured", reason=row.get("limit"))
            else:
                timeouts = [r for r in failures if r.get("failure") == "timeout"]
                status = "unrouted" if timeouts else "error"
                row.update(status=status, reason="; ".join(row["seed_failures"]))
        row["refine"] = refining
        row["router"] = router
        row["placer"] = placer
        rows.append(row)
        fmax = row.get("fmax_mhz")
        say(f"{kind} {size}x{size} on {device}: {row['status']}"
            + (f", {fmax:.1f} MHz, {row['heads_per_s']:,.0f} heads/s" if fmax else "")
            + (f" ({row['reason']})" if row["reason"] else "")
            + (" [cached]" if row.get("from_cache") else ""))
        return row

    stopped = None
    for size in walk:
        row = decide(size, False)
        if row["status"] != "fits":
            stopped = row
            break
    if refine and stopped is not None and stopped["status"] in _FAILED:
        fit = [r["size"] for r in fitting()]
        lo, hi = (max(fit) if fit else 0), stopped["size"]
        while True:
            between = [s for s in allowed if lo < s < hi]
            if not between:
                break
            row = decide(between[len(between) // 2], True)
            if row["status"] == "fits":
                lo = row["size"]
            elif row["status"] in _FAILED:
                hi = row["size"]
            else:
                break
    return Capacity(kind=kind, device=device, seq_len=seq_len, head_dim=head_dim, bits=bits,
                    router=router, placer=placer, seeds=seeds, pnr=pnr,
                    pnr_timeout_s=pnr_timeout_s, rows=tuple(rows))


def capacity_study(kinds: Sequence[str], device: str, **kwargs) -> list[Capacity]:
    """:func:`capacity_search` for each of *kinds* on *device* (same keyword arguments)."""
    kinds = list(kinds)
    if not kinds:
        raise ValueError("kinds must name at least one core")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {k!r}")
    return [capacity_search(k, device, **kwargs) for k in kinds]


def headline(results: Sequence[Capacity]) -> dict:
    """Heads/s of each core at its best on one device, and the inhibitor's ratio to each other.

    Returns ``{"device", "best": {kind: {"size", "fmax_mhz", "heads_per_s"} or None},
    "ratios": {kind: inhibitor heads/s / kind heads/s or None}}`` (ratios only when
    the inhibitor is among *results*).
    """
    best = {}
    for c in results:
        b = c.best
        best[c.kind] = None if b is None else {
            "size": b["size"], "fmax_mhz": b.get("fmax_mhz"), "heads_per_s": b.get("heads_per_s")}
    ratios = {}
    inh = best.get("inhibitor")
    for kind, b in best.items():
        if kind == "inhibitor" or "inhibitor" not in best:
            continue
        ok = inh and b and inh.get("heads_per_s") and b.get("heads_per_s")
        ratios[kind] = inh["heads_per_s"] / b["heads_per_s"] if ok else None
    return {"device": results[0].device if results else None, "best": best, "ratios": ratios}


def write_json(path: Path | str, results: Sequence[Capacity]) -> Path:
    """Write the results and the :func:`headline` as JSON, atomically (temporary file, then rename)."""
    path = Path(path)
    _save_json(path, {"results": [c.to_dict() for c in results], "headline": headline(results)})
    return path
