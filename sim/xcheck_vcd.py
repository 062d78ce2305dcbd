"""Diagnosis of an X/Z check: which signals of a dumped VCD were X or Z after reset release.

:func:`x_signals_from_vcd` reads the VCD the X-check testbench dumps with
``diagnose=True`` (times in ns, one clock period :data:`~inhibitron.sim.xcheck_tb.PERIOD`)
and returns an :class:`XSignal` per signal that is X/Z at or after reset
release, with the first cycle it was, earliest first: the earliest are where
an X enters the design, the later ones where it propagated to.
"""

from __future__ import annotations

from dataclasses import dataclass

from .xcheck_tb import PERIOD, RELEASE_NS, TB_TOP

__all__ = ["XSignal", "x_signals_from_vcd"]


@dataclass(frozen=True)
class XSignal:
    """A signal found X/Z by the diagnosis (:func:`x_signals_from_vcd`).

    ``first_x_cycle`` is the first cycle (after reset release) at which it
    was X/Z; ``x_at_end`` whether it still was when the run ended.
    """

    name: str
    first_x_cycle: int
    x_at_end: bool


def x_signals_from_vcd(path, *, release_time: int = RELEASE_NS, period: int = PERIOD,
                       prefix: str = f"{TB_TOP}.dut.") -> tuple[XSignal, ...]:
    """Every variable of a VCD that is X/Z at or after ``release_time``.

    The value a signal holds at ``release_time`` (after that instant's
    changes) counts; earlier X (before reset took effect) does not. Times
    are converted to cycles after reset release (``(t - release) // period``).
    Sorted by first X cycle, then name; ``prefix`` is stripped from names.
    """
    names: dict[str, list[str]] = {}
    scope: list[str] = []
    value: dict[str, str] = {}
    first: dict[str, int] = {}
    time = 0
    released = False

    def is_x(v: str) -> bool:
        return any(ch in "xXzZ" for ch in v)

    def mark_release():
        for ident, v in value.items():
            if is_x(v) and ident not in first:
                first[ident] = release_time

    with open(path, encoding="ascii", errors="replace") as fh:
        in_header = True
        for line in fh:
            tok = line.split()
            if not tok:
                continue
            if in_header:
                if tok[0] == "$scope":
                    scope.append(tok[2])
                elif tok[0] == "$upscope":
                    scope.pop()
                elif tok[0] == "$var":
                    ident, ref = tok[3], tok[4]
                    full = ".".join(scope + [ref])
                    if full.startswith(prefix):
                        full = full[len(prefix):]
                    names.setdefault(ident, []).append(full)
                elif tok[0] == "$enddefinitions":
                    in_header = False
                continue
            head = tok[0]
            if head.startswith("#"):
                new_time = int(head[1:])
                if not released and new_time > release_time:
                    mark_release()
                    released = True
                time = new_time
                continue
            if head.startswith("$"):
                continue
            if head[0] in "bBrR":
                v, ident = head[1:], tok[1]
            else:
                v, ident = head[0], head[1:]
            if ident not in names:
                continue
            value[ident] = v
            if released and is_x(v) and ident not in first:
                first[ident] = time
    if not released:
        mark_release()
    out = []
    for ident, t in first.items():
        cycle = max(0, (t - release_time) // period)
        for name in names[ident]:
            out.append(XSignal(name, cycle, is_x(value.get(ident, ""))))
    return tuple(sorted(out, key=lambda s: (s.first_x_cycle, s.name)))
