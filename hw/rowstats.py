"""Row statistics between the score and the mixing stage (Eq. 3, integer form).

Steps 2-3 of the integer contract (``docs/numerics.md``) for one query row::

    S = sum_{j<L} z[j]                        masked row sum (unsigned)
    m = floor((2*S + L) / (2*L))              mean, rounded half up, exact
    t = m + theta                             threshold (signed)
    zb[j] = max(z[j] - t, 0)                  thresholded score

* :class:`RoundedMeanDivider` — ``m`` by a sequential restoring
  (shift-subtract) divider: one quotient bit per cycle, no multiplier and no
  division by a non-power-of-two anywhere.
* :class:`RowStatistics` — accumulates the masked sum of a row's scores as
  they stream out of the score array (one per cycle at most), then divides and
  adds ``theta``.
* :class:`ThresholdClip` — ``zb`` from ``z`` and ``t`` with the value-identical
  clip of the contract (``min(zb, ceil(2**(v_bits-1+a) / 2**b))``) and the
  key-padding mask (padded keys get the clip value, so their soft-threshold
  summands vanish).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from .pe import check_int

__all__ = ["RoundedMeanDivider", "RowStatistics", "ThresholdClip"]


class RoundedMeanDivider(wiring.Component):
    """``mean = floor((2*sum + length) / (2*length))``, sequential, one bit per cycle.

    A restoring divider of the numerator ``N = 2*sum + length`` by
    ``D = 2*length``. Since the quotient is known to fit ``mean_width`` bits,
    the partial remainder starts as ``N >> mean_width`` (< ``D``) and
    ``mean_width`` subtract-and-compare steps of a ``bits(4*max_length)``-bit
    subtractor produce the quotient MSB first.

    Parameters
    ----------
    sum_width : int
        Width of the unsigned ``sum`` input.
    max_length : int
        Largest ``length`` (``n``), >= 1.
    mean_width : int
        Width of the quotient; the caller guarantees
        ``sum <= length * (2**mean_width - 1)`` (true when every summand fits
        ``mean_width`` bits), so the quotient fits.

    Members
    -------
    start : In(1)
        Sample ``sum`` and ``length`` and start (ignored while busy).
    sum : In(sum_width)
        Row sum ``S``.
    length : In(range(max_length + 1))
        Valid length ``L``, 1..max_length (``L = 0`` gives all ones).
    busy : Out(1)
        A division is in progress.
    done : Out(1)
        ``mean`` is valid this cycle (one-cycle pulse; ``mean`` then holds
        until the next start).
    mean : Out(mean_width)
        The rounded mean.

    ``latency`` (``start`` to ``done``) is ``mean_width + 1`` cycles.

    :attr:`registers` names the internal registers, for the formal harness's
    inductive invariant (``sim.formal.DividerHarness``); the design alone
    drives them.
    """

    def __init__(self, *, sum_width: int, max_length: int, mean_width: int):
        self._MustUse__silence = True
        self._sum_width = check_int("sum_width", sum_width, minimum=1)
        self._max_length = check_int("max_length", max_length, minimum=1)
        self._mean_width = check_int("mean_width", mean_width, minimum=1)
        qw = mean_width
        # Created here (not in elaborate) so that a harness can observe them; named as before.
        self._registers = {
            "rem": Signal(bits_for(4 * max_length), name="rem", reset_less=True),   # partial remainder
            "low": Signal(qw, name="low", reset_less=True),      # remaining numerator bits, MSB first
            "divisor": Signal(bits_for(2 * max_length), name="divisor", reset_less=True),   # D = 2L
            "quot": Signal(qw, name="quot", reset_less=True),    # quotient bits, the newest at bit 0
            "count": Signal(range(qw + 1), name="count"),        # steps left
        }
        super().__init__({
            "start": In(1),
            "sum": In(sum_width),
            "length": In(range(max_length + 1)),
            "busy": Out(1),
            "done": Out(1),
            "mean": Out(mean_width),
        })
        self._MustUse__silence = False

    sum_width = property(lambda self: self._sum_width)
    max_length = property(lambda self: self._max_length)
    mean_width = property(lambda self: self._mean_width)

    @property
    def registers(self) -> dict:
        """The internal registers by name: ``rem`` (``bits(4 * max_length)``), ``low`` and
        ``quot`` (``mean_width`` bits), ``divisor`` (``bits(2 * max_length)``), ``count``
        (steps left, ``range(mean_width + 1)``)."""
        return dict(self._registers)

    @property
    def latency(self) -> int:
        """Cycles from ``start`` to ``done``: ``mean_width + 1``."""
        return self._mean_width + 1

    def elaborate(self, platform):
        m = Module()
        qw = self._mean_width
        regs = self._registers
        rem, low, divisor, quot, count = (regs[k] for k in ("rem", "low", "divisor", "quot", "count"))
        rw = len(rem)                                # partial remainder before a subtract
        numer = Signal(self._sum_width + 2)          # N = 2S + L
        m.d.comb += numer.eq((self.sum << 1) + self.length)

        trial = Signal(rw)
        step = Signal(rw)
        m.d.comb += [step.eq(Cat(low[-1], rem[:rw - 1])), trial.eq(step - divisor)]
        geq = Signal()
        m.d.comb += geq.eq(step >= divisor)

        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            m.d.sync += [
                rem.eq(Mux(geq, trial, step)),
                low.eq(low << 1),
                quot.eq(Cat(geq, quot[:qw - 1]) if qw > 1 else geq),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.Elif(self.start):
            m.d.sync += [
                rem.eq(numer >> qw),
                low.eq(numer[:qw]),
                divisor.eq(self.length << 1),
                count.eq(qw),
                self.busy.eq(1),
            ]
        m.d.comb += self.mean.eq(quot)
        return m


class RowStatistics(wiring.Component):
    """Masked row sum, rounded mean and threshold of one query row.

    Scores arrive one per cycle at most (``valid``) with their key index; the
    sum restarts at ``first`` and the division starts after ``last``. Keys
    with ``index >= length`` are excluded (key-padding mask).

    Parameters
    ----------
    z_width : int
        Width of the unsigned scores.
    max_length : int
        ``n``, the number of keys (largest ``length``).
    theta_width : int
        Width of the signed ``theta`` input.
    threshold_width : int
        Width of the signed threshold output (holds ``2**z_width - 1 + theta``).
    index_limit : int, optional
        Largest key index + 1 (padded tiles); default ``max_length``.
    sum_width : int, optional
        Width of the unsigned row sum: the core passes the contract's
        ``DatapathWidths.sum_bits`` (exact for its scores, which never exceed
        ``z_max``); default ``bits(max_length * (2**z_width - 1))``, the bound
        for arbitrary ``z_width``-bit scores.

    Members
    -------
    valid, first, last : In(1)
        A score is presented; it is the row's first / last one.
    z : In(z_width)
        The score.
    index : In(range(max_length_padded))
        Its key index ``j`` (may exceed ``max_length`` in padded tiles).
    length : In(range(max_length + 1))
        ``L``; sampled with ``last``.
    theta : In(signed(theta_width))
        Threshold constant; sampled with ``last``.
    done : Out(1)
        ``threshold`` is valid this cycle (pulse; it then holds).
    threshold : Out(signed(threshold_width))
        ``t = m + theta``.

    ``latency`` (from ``last`` to ``done``) is ``mean_width + 4``: one input
    register stage (score, mask bit, control), one cycle to finish the sum,
    the divider, one cycle to add ``theta``.
    """

    def __init__(self, *, z_width: int, max_length: int, theta_width: int, threshold_width: int,
                 index_limit: int | None = None, sum_width: int | None = None):
        self._MustUse__silence = True
        self._z_width = check_int("z_width", z_width, minimum=1)
        self._max_length = check_int("max_length", max_length, minimum=1)
        self._theta_width = check_int("theta_width", theta_width, minimum=1)
        self._threshold_width = check_int("threshold_width", threshold_width, minimum=1)
        if index_limit is None:
            index_limit = max_length
        self._index_limit = check_int("index_limit", index_limit, minimum=max_length)
        if sum_width is None:
            sum_width = bits_for(max_length * ((1 << z_width) - 1))
        self._sum_width = check_int("sum_width", sum_width, minimum=z_width)
        super().__init__({
            "valid": In(1), "first": In(1), "last": In(1),
            "z": In(z_width),
            "index": In(range(index_limit)),
            "length": In(range(max_length + 1)),
            "theta": In(signed(theta_width)),
            "done": Out(1),
            "threshold": Out(signed(threshold_width)),
        })
        self._MustUse__silence = False

    @property
    def latency(self) -> int:
        """Cycles from the ``last`` score to ``done``: ``z_width + 4``."""
        return self._z_width + 4

    sum_width = property(lambda self: self._sum_width, doc="Width of the row-sum register.")

    def elaborate(self, platform):
        m = Module()
        m.submodules.div = div = RoundedMeanDivider(
            sum_width=self._sum_width, max_length=self._max_length, mean_width=self._z_width)
        # Input stage: register the score, the mask bit (index < length) and the
        # control, so the index compare and the sum's adder are in different cycles.
        valid1, first1, last1 = Signal(), Signal(reset_less=True), Signal(reset_less=True)
        z1 = Signal(self._z_width, reset_less=True)
        keep1 = Signal(reset_less=True)
        length1 = Signal(range(self._max_length + 1), reset_less=True)
        theta1 = Signal(signed(self._theta_width), reset_less=True)
        m.d.sync += [valid1.eq(self.valid), first1.eq(self.first), last1.eq(self.last),
                     z1.eq(self.z), keep1.eq(self.index < self.length),
                     length1.eq(self.length), theta1.eq(self.theta)]
        total = Signal(self._sum_width, reset_less=True)
        addend = Mux(keep1, z1, 0)
        with m.If(valid1):
            m.d.sync += total.eq(Mux(first1, addend, total + addend))
        start = Signal()
        length = Signal(range(self._max_length + 1), reset_less=True)
        theta = Signal(signed(self._theta_width), reset_less=True)
        m.d.sync += start.eq(valid1 & last1)
        with m.If(valid1 & last1):
            m.d.sync += [length.eq(length1), theta.eq(theta1)]
        m.d.comb += [div.start.eq(start), div.sum.eq(total), div.length.eq(length)]
        m.d.sync += self.done.eq(div.done)
        with m.If(div.done):
            m.d.sync += self.threshold.eq(div.mean + theta)
        return m


class ThresholdClip(wiring.Component):
    """``zb = min(max(z - t, 0), zb_max)``, or ``zb_max`` for a padded key; pipelined.

    Three register stages, so that no cycle holds more than one carry chain
    (and none starts at a block-RAM output):

    1. register ``z``, ``t``, ``t + zb_max`` and ``pad``;
    2. ``diff = z - t`` and the clip flag ``hi = pad | (z - (t + zb_max) >= 0)``
       in parallel (one subtractor each), registered;
    3. select ``zb_max`` / ``0`` / ``diff`` from the registered flags.

    Parameters
    ----------
    z_width : int
        Width of the unsigned score.
    threshold_width : int
        Width of the signed threshold.
    zb_max : int
        Clip value ``ceil(2**(v_bits-1+a) / 2**b)`` (>= 1): with ``y = zb << b``
        every soft-threshold summand is 0 once ``zb >= zb_max``, so clipping
        (and setting padded keys to it) is value-identical.

    Members
    -------
    z : In(z_width)
    threshold : In(signed(threshold_width))
    pad : In(1)
        The key is padding (``j >= L``).
    zb : Out(bits(zb_max))
        Registered result (latency :attr:`latency` = 3).
    """

    def __init__(self, *, z_width: int, threshold_width: int, zb_max: int):
        self._MustUse__silence = True
        self._z_width = check_int("z_width", z_width, minimum=1)
        self._threshold_width = check_int("threshold_width", threshold_width, minimum=1)
        self._zb_max = check_int("zb_max", zb_max, minimum=1)
        super().__init__({
            "z": In(z_width),
            "threshold": In(signed(threshold_width)),
            "pad": In(1),
            "zb": Out(bits_for(zb_max)),
        })
        self._MustUse__silence = False

    latency = 3
    zb_max = property(lambda self: self._zb_max)

    def elaborate(self, platform):
        m = Module()
        zw, tw = self._z_width, self._threshold_width
        tzw = max(tw, bits_for(self._zb_max) + 1) + 1          # t + zb_max, signed
        # Stage 1: register the inputs (z comes straight from a block RAM).
        zq = Signal(zw, reset_less=True)
        tq = Signal(signed(tw), reset_less=True)
        tzq = Signal(signed(tzw), reset_less=True)
        pq = Signal(reset_less=True)
        m.d.sync += [zq.eq(self.z), tq.eq(self.threshold),
                     tzq.eq(self.threshold + self._zb_max), pq.eq(self.pad)]
        # Stage 2: z - t and z - (t + zb_max) in parallel, registered.
        diff = Signal(signed(max(zw + 1, tw) + 1))
        diff_hi = Signal(signed(max(zw + 1, tzw) + 1))
        m.d.comb += [diff.eq(zq - tq), diff_hi.eq(zq - tzq)]
        low = Signal(len(self.zb), reset_less=True)
        neg = Signal(reset_less=True)
        hi = Signal(reset_less=True)
        m.d.sync += [low.eq(diff[:len(self.zb)]), neg.eq(diff[-1]),
                     hi.eq(pq | ~diff_hi[-1])]
        # Stage 3: select (LUTs only), driven through the data path.
        top = Const(self._zb_max, bits_for(self._zb_max))
        zb = Signal(len(self.zb), reset_less=True)
        m.d.sync += zb.eq(Mux(hi, top, Mux(neg, 0, low)))
        m.d.comb += self.zb.eq(zb)
        return m
