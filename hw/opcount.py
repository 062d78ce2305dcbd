"""Arithmetic operation counts per head, by bit width, and their energy.

The efficiency study weighs the operations each core performs on one head
with a per-operation energy table. The counts are *algorithmic*: one entry
per operation of the integer contracts (``docs/numerics.md`` for the
inhibitor, ``docs/baseline.md`` for the baseline), not per gate of one
implementation; wiring (shifts by constants, concatenations, bit selects) is
free and memory traffic is not counted (the same for both cores: they read
the same Q, K, V and write the same H).

Operation kinds: ``add`` (additions, subtractions, absolute values,
comparisons, max/ReLU and the steps of a shift-subtract divider, all costed
as an adder of their width) and ``mul`` (multiplications, by operand widths).

Energy (:data:`HOROWITZ_45NM`): M. Horowitz, "Computing's energy problem
(and what we can do about it)", ISSCC 2014, 45 nm, 0.9 V: 8-bit add 0.03 pJ,
32-bit add 0.1 pJ, 8-bit multiply 0.2 pJ, 32-bit multiply 3.1 pJ. Other
widths are interpolated linearly (and extrapolated beyond 32 bits): in the
width ``w`` for adds (a ripple-carry adder's switched capacitance grows with
``w``), in the product of the operand widths ``wa * wb`` for multiplies (an
array multiplier has ``wa * wb`` partial-product cells)::

    E_add(w)      = 0.03 + (0.1 - 0.03) * (w - 8) / (32 - 8)             pJ
    E_mul(wa, wb) = 0.2 + (3.1 - 0.2) * (wa * wb - 64) / (1024 - 64)      pJ
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from amaranth.utils import ceil_log2

__all__ = ["Op", "HOROWITZ_45NM", "EnergyTable", "inhibitor_ops", "baseline_ops", "energy_pj",
           "summarize"]


@dataclass(frozen=True)
class Op:
    """``count`` operations of one kind and width in one stage of a core.

    Attributes
    ----------
    stage : str
        ``"score"``, ``"rowstats"``, ``"softmax"``, ``"mix"`` or ``"output"``.
    name : str
        What the operation computes (``"|q-k|"``, ``"acc += q*k"``, ...).
    kind : str
        ``"add"`` or ``"mul"``.
    bits : int
        Adder width, or the first operand's width of a multiply.
    bits_b : int
        Second operand's width of a multiply (0 for adds).
    count : int
        Operations per head.
    """

    stage: str
    name: str
    kind: str
    bits: int
    bits_b: int
    count: int


@dataclass(frozen=True)
class EnergyTable:
    """Two anchor points per operation kind (pJ), interpolated as in the module docstring."""

    add8: float = 0.03
    add32: float = 0.1
    mul8: float = 0.2
    mul32: float = 3.1
    source: str = "Horowitz, ISSCC 2014, 45 nm"

    def add(self, bits: int) -> float:
        return self.add8 + (self.add32 - self.add8) * (bits - 8) / 24

    def mul(self, a: int, b: int) -> float:
        return self.mul8 + (self.mul32 - self.mul8) * (a * b - 64) / 960

    def op(self, op: Op) -> float:
        return self.add(op.bits) if op.kind == "add" else self.mul(op.bits, op.bits_b)


#: The table of the issue (Horowitz, ISSCC 2014, 45 nm).
HOROWITZ_45NM = EnergyTable()


def _check(n, d, L):
    for name, v in (("n", n), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    L = n if L is None else L
    if isinstance(L, bool) or not isinstance(L, int) or not 1 <= L <= n:
        raise ValueError(f"valid_len must be in 1..{n}, not {L!r}")
    return L


def inhibitor_ops(*, n: int, d: int, valid_len: int | None = None, qk_bits: int = 8,
                  v_bits: int = 8, out_bits: int = 8) -> list[Op]:
    """Operations of one inhibitor head (``docs/numerics.md`` steps 1-6, shifts ``a = b = 0``).

    Per query row ``i`` (``n`` rows) and valid key ``j`` (``L`` keys):
    ``d`` differences ``q - k`` (``qk_bits + 1``), ``d`` absolute values
    (``qk_bits + 1``), ``d`` score additions (``z_bits``); one row-sum
    addition (``sum_bits``), one ``z - t`` and one ReLU compare
    (``z_bits + 2``); ``d`` soft-thresholds, each two add/subs and two
    compares (``v_bits + 2``), and ``d`` accumulations (``acc_bits``). Per
    row: the rounded mean (a shift-subtract divider: ``divider_bits``
    subtractions of ``sum_bits + 1`` bits) and the threshold ``m + theta``.
    Per output code: a rounding add and two saturation compares.
    """
    L = _check(n, d, valid_len)
    z_bits = qk_bits + ceil_log2(d)
    sum_bits = z_bits + ceil_log2(n)
    div_bits = sum_bits + 2
    acc_bits = v_bits + ceil_log2(n)
    nn, nL = n * n, n * L
    return [
        Op("score", "q-k", "add", qk_bits + 1, 0, nn * d),
        Op("score", "|q-k|", "add", qk_bits + 1, 0, nn * d),
        Op("score", "z += |q-k|", "add", z_bits, 0, nn * d),
        Op("rowstats", "row sum", "add", sum_bits, 0, nL),
        Op("rowstats", "mean divider steps", "add", sum_bits + 1, 0, n * div_bits),
        Op("rowstats", "t = m + theta", "add", z_bits + 2, 0, n),
        Op("rowstats", "z - t", "add", z_bits + 2, 0, nL),
        Op("rowstats", "relu compare", "add", z_bits + 2, 0, nL),
        Op("mix", "v - zb, v + zb", "add", v_bits + 2, 0, 2 * nL * d),
        Op("mix", "soft-threshold compares", "add", v_bits + 2, 0, 2 * nL * d),
        Op("mix", "acc += softthr", "add", acc_bits, 0, nL * d),
        Op("output", "rounding", "add", acc_bits + 1, 0, n * d),
        Op("output", "saturation compares", "add", out_bits, 0, 2 * n * d),
    ]


def baseline_ops(*, n: int, d: int, valid_len: int | None = None, qk_bits: int = 8,
                 v_bits: int = 8, out_bits: int = 8, constants=None) -> list[Op]:
    """Operations of one baseline head (``docs/baseline.md`` steps 1-8).

    Per query row and valid key: ``d`` products ``q*k`` and ``d``
    accumulations (score width); the row max (a compare), ``mx - s``, the
    score multiply ``x * M``, ``B - r``, the square, ``+ C``, the row-sum
    addition, the normalising multiply ``e * rec`` and its rounding add;
    ``d`` products ``p * v`` and accumulations. Per row: the reciprocal (a
    shift-subtract divider of ``RB + 1`` steps). Per output code: rounding
    and saturation, as for the inhibitor. The variable shift ``poly >> zq``
    is a multiplexer, not counted.
    """
    from ..quant.baseline_golden import DEFAULT_CONSTANTS

    cst = constants or DEFAULT_CONSTANTS
    L = _check(n, d, valid_len)
    s_bits = 2 * qk_bits + ceil_log2(d)
    x_bits = s_bits + 1
    e_bits = cst.e_bits
    sum_bits = e_bits + ceil_log2(n + 1)
    rec_bits = cst.recip_bits - e_bits + 2
    b_bits = cst.B.bit_length()
    acc_bits = cst.p_bits + v_bits + ceil_log2(n)
    nn, nL = n * n, n * L
    return [
        Op("score", "q*k", "mul", qk_bits, qk_bits, nn * d),
        Op("score", "s += q*k", "add", s_bits, 0, nn * d),
        Op("softmax", "row max compare", "add", s_bits, 0, nL),
        Op("softmax", "x = mx - s", "add", x_bits, 0, nL),
        Op("softmax", "u = x * M", "mul", x_bits, cst.m_bits, nL),
        Op("softmax", "B - r", "add", b_bits, 0, nL),
        Op("softmax", "(B - r)**2", "mul", b_bits, b_bits, nL),
        Op("softmax", "+ C", "add", e_bits, 0, nL),
        Op("softmax", "row sum", "add", sum_bits, 0, nL),
        Op("softmax", "reciprocal divider steps", "add", sum_bits + 1, 0,
           n * (cst.recip_bits + 1)),
        Op("softmax", "p = e * rec", "mul", e_bits, rec_bits, nL),
        Op("softmax", "p rounding", "add", e_bits + rec_bits, 0, nL),
        Op("mix", "p*v", "mul", cst.p_bits, v_bits, nL * d),
        Op("mix", "acc += p*v", "add", acc_bits, 0, nL * d),
        Op("output", "rounding", "add", acc_bits + 1, 0, n * d),
        Op("output", "saturation compares", "add", out_bits, 0, 2 * n * d),
    ]


def energy_pj(ops: list[Op], table: EnergyTable = HOROWITZ_45NM) -> float:
    """Arithmetic energy of the operations, in pJ."""
    return math.fsum(op.count * table.op(op) for op in ops)


def summarize(ops: list[Op], table: EnergyTable = HOROWITZ_45NM) -> dict:
    """Counts and energy by kind and by stage: ``{"adds": int, "muls": int,
    "energy_pj": float, "by_stage": {stage: pJ}}``."""
    by_stage: dict[str, float] = defaultdict(float)
    for op in ops:
        by_stage[op.stage] += op.count * table.op(op)
    return {
        "adds": sum(op.count for op in ops if op.kind == "add"),
        "muls": sum(op.count for op in ops if op.kind == "mul"),
        "energy_pj": energy_pj(ops, table),
        "by_stage": dict(by_stage),
    }
