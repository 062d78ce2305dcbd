"""Processing elements (PEs) of the output-stationary systolic arrays.

This module defines the **PE protocol** shared by every systolic array in
Inhibitron (:class:`inhibitron.hw.systolic.SystolicArray`) and the two PEs
of the inhibitor attention core:

* :class:`L1PE` — score stage, Eq. 1: ``acc += |q - k|``;
* :class:`SoftThresholdPE` — mixing stage, Eq. 2 (integer form, steps 4-5 of
  ``docs/numerics.md``): ``acc += softthr(v << a, zb << b)``.

The PE protocol
---------------
A PE is a :class:`ProcessingElement` subclass, i.e. a
:class:`amaranth.lib.wiring.Component` with this fixed set of ports
(``A``/``B``/``ACC``/``TAG`` are the shapes a subclass chooses):

=================  =========  ==============================================
port               direction  meaning
=================  =========  ==============================================
``a``              In(A)      row operand (enters from the left)
``b``              In(B)      column operand (enters from the top)
``valid``          In(1)      the operands of this cycle are a reduction step
``first``          In(1)      first step of a reduction (acc is restarted)
``last``           In(1)      last step of a reduction
``tag``            In(TAG)    user tag travelling with the control
``a_out`` ...      Out        ``a``, ``b``, ``valid``, ``first``, ``last``,
                              ``tag`` delayed by one register (to the
                              right / downward neighbour)
``result``         Out(ACC)   the accumulator
``done``           Out(1)     ``result`` holds a finished reduction this cycle
``result_tag``     Out(TAG)   the ``tag`` of that reduction's last step
=================  =========  ==============================================

A subclass provides only the **update term**: it implements
:meth:`ProcessingElement.term`, which builds the (possibly pipelined) logic
computing the per-step contribution from ``a`` and ``b`` with exactly
:attr:`~ProcessingElement.term_latency` register stages, and passes its
shapes to ``super().__init__``. The base class builds the forwarding
registers, aligns the control with the term pipeline and accumulates::

    acc <= term                 if valid and first
    acc <= acc + term           if valid and not first

Timing: if ``valid & last`` is presented at cycle ``t`` then ``done`` is 1
during cycle ``t + term_latency + 1`` and ``result`` then holds the finished
sum; it stays valid for that one cycle only when a new reduction follows
back to back. The accumulator has no overflow check: the subclass sizes
``ACC`` so that no reduction it is specified for can overflow.

A PE for a new systolic array (e.g. the dot-product baseline,
``acc += q * k``) is therefore written as::

    class MACPE(ProcessingElement):
        def __init__(self, *, width, acc_width, tag_width=0):
            super().__init__(a_shape=signed(width), b_shape=signed(width),
                             acc_shape=signed(acc_width), term_shape=signed(2 * width),
                             term_latency=1, tag_width=tag_width)

        def term(self, m, a, b):
            product = Signal(self.term_shape)
            m.d.sync += product.eq(a * b)
            return product
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement", "L1PE", "SoftThresholdPE", "check_int"]


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Validate an integer parameter and return it.

    Raises
    ------
    TypeError
        If ``value`` is not an ``int`` (``bool`` is rejected).
    ValueError
        If ``value`` is outside ``[minimum, maximum]``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        if minimum == 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if minimum == 0:
            raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        raise ValueError(f"{name} must be >= {minimum}, not {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, not {value!r}")
    return value


class ProcessingElement(wiring.Component):
    """Base class of systolic-array PEs (the PE protocol, see the module docstring).

    Parameters
    ----------
    a_shape, b_shape : ShapeLike
        Shapes of the row operand ``a`` and of the column operand ``b``.
    acc_shape : ShapeLike
        Shape of the accumulator ``result``.
    term_shape : ShapeLike
        Shape of the per-step contribution returned by :meth:`term`.
    term_latency : int
        Register stages inside :meth:`term` (0 = combinational).
    tag_width : int
        Width of the user tag travelling with the control (0 = none).

    Members
    -------
    a, b, valid, first, last, tag : In
        Operands and control of one reduction step.
    a_out, b_out, valid_out, first_out, last_out, tag_out : Out
        The same, delayed by one register, for the neighbours.
    result : Out(acc_shape)
        The accumulator.
    done : Out(1)
        ``result`` holds a finished reduction (see module docstring).
    result_tag : Out(tag_width)
        Tag of the finished reduction's last step.
    """

    def __init__(self, *, a_shape, b_shape, acc_shape, term_shape, term_latency: int,
                 tag_width: int = 0):
        self._MustUse__silence = True  # no "never used" warning if validation raises
        self._a_shape = Shape.cast(a_shape)
        self._b_shape = Shape.cast(b_shape)
        self._acc_shape = Shape.cast(acc_shape)
        self._term_shape = Shape.cast(term_shape)
        self._term_latency = check_int("term_latency", term_latency, minimum=0)
        self._tag_width = check_int("tag_width", tag_width, minimum=0)
        tag = unsigned(self._tag_width)
        super().__init__({
            "a": In(self._a_shape), "b": In(self._b_shape),
            "valid": In(1), "first": In(1), "last": In(1), "tag": In(tag),
            "a_out": Out(self._a_shape), "b_out": Out(self._b_shape),
            "valid_out": Out(1), "first_out": Out(1), "last_out": Out(1), "tag_out": Out(tag),
            "result": Out(self._acc_shape), "done": Out(1), "result_tag": Out(tag),
        })
        self._MustUse__silence = False

    a_shape = property(lambda self: self._a_shape, doc="Shape of the row operand ``a``.")
    b_shape = property(lambda self: self._b_shape, doc="Shape of the column operand ``b``.")
    acc_shape = property(lambda self: self._acc_shape, doc="Shape of the accumulator.")
    term_shape = property(lambda self: self._term_shape, doc="Shape of one contribution.")
    term_latency = property(lambda self: self._term_latency,
                            doc="Register stages of the term pipeline.")
    tag_width = property(lambda self: self._tag_width, doc="Width of the user tag.")

    @property
    def latency(self) -> int:
        """Cycles from ``valid & last`` at the inputs to ``done``: ``term_latency + 1``."""
        return self._term_latency + 1

    def term(self, m: Module, a: Value, b: Value) -> Value:
        """Build the per-step contribution of operands ``a`` and ``b``.

        Must add exactly :attr:`term_latency` register stages to ``m.d.sync``
        and return a value of :attr:`term_shape`. Must not multiply (except in
        baseline PEs that are meant to).
        """
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        # Forwarding to the neighbours (one register each).
        m.d.sync += [
            self.a_out.eq(self.a), self.b_out.eq(self.b),
            self.valid_out.eq(self.valid), self.first_out.eq(self.first),
            self.last_out.eq(self.last), self.tag_out.eq(self.tag),
        ]
        term = self.term(m, self.a, self.b)

        # Control aligned with the term pipeline.
        valid, first, last, tag = self.valid, self.first, self.last, self.tag
        for stage in range(self._term_latency):
            valid_d = Signal(name=f"valid_d{stage}")
            first_d = Signal(name=f"first_d{stage}", reset_less=True)
            last_d = Signal(name=f"last_d{stage}", reset_less=True)
            tag_d = Signal(self._tag_width, name=f"tag_d{stage}", reset_less=True)
            m.d.sync += [valid_d.eq(valid), first_d.eq(first), last_d.eq(last), tag_d.eq(tag)]
            valid, first, last, tag = valid_d, first_d, last_d, tag_d

        acc = Signal(self._acc_shape, reset_less=True)
        with m.If(valid):
            with m.If(first):
                m.d.sync += acc.eq(term)
            with m.Else():
                m.d.sync += acc.eq(acc + term)
        m.d.sync += self.done.eq(valid & last)
        with m.If(valid & last):
            m.d.sync += self.result_tag.eq(tag)
        m.d.comb += self.result.eq(acc)
        return m


class L1PE(ProcessingElement):
    """Score-stage PE: ``acc += |a - b|`` (Manhattan distance, Eq. 1).

    The difference and its absolute value are registered (``pipelined=True``,
    the default): both ``a - b`` and ``b - a`` are formed in parallel and one is
    selected by the sign, so the critical path is one subtractor plus a 2:1 mux,
    then one accumulator adder in the next stage.

    Parameters
    ----------
    width : int
        Operand width in bits (two's complement, ``qk_bits``).
    length : int
        Longest reduction (head dim ``d``); the accumulator is unsigned and
        exactly wide enough for ``length * (2**width - 1)`` (at most
        ``width + ceil(log2(length))`` bits), so it cannot overflow.
    pipelined : bool
        Register ``|a - b|`` (``term_latency`` 1) or not (0).
    tag_width : int
        Width of the user tag (see :class:`ProcessingElement`).

    Members
    -------
    See :class:`ProcessingElement`: ``a``, ``b`` are ``signed(width)``,
    ``result`` is ``unsigned(width + ceil(log2(length)))``.
    """

    def __init__(self, *, width: int, length: int, pipelined: bool = True, tag_width: int = 0):
        self._MustUse__silence = True  # no "never used" warning if validation raises
        self._width = check_int("width", width, minimum=1)
        self._length = check_int("length", length, minimum=1)
        super().__init__(a_shape=signed(width), b_shape=signed(width),
                         acc_shape=unsigned(max(1, (length * ((1 << width) - 1)).bit_length())),
                         term_shape=unsigned(width),
                         term_latency=1 if pipelined else 0, tag_width=tag_width)

    width = property(lambda self: self._width, doc="Operand width (bits).")
    length = property(lambda self: self._length, doc="Longest reduction.")

    def term(self, m, a, b):
        ab = Signal(signed(self._width + 1))
        ba = Signal(signed(self._width + 1))
        m.d.comb += [ab.eq(a - b), ba.eq(b - a)]
        # |a - b| < 2**width, so the low `width` bits of the non-negative one suffice.
        absdiff = Mux(ab[-1], ba[:self._width], ab[:self._width])
        if self.term_latency == 0:
            out = Signal(self.term_shape)
            m.d.comb += out.eq(absdiff)
            return out
        out = Signal(self.term_shape, reset_less=True)
        m.d.sync += out.eq(absdiff)
        return out


class SoftThresholdPE(ProcessingElement):
    """Mixing-stage PE: ``acc += softthr(b << v_shift, a << z_shift)`` (Eq. 2).

    ``softthr(x, y) = x - y if x > y; x + y if x < -y; else 0`` for ``y >= 0``
    (``docs/numerics.md`` step 4). The row operand ``a`` is the (clipped)
    thresholded score ``zb``, the column operand ``b`` is the value ``v``.
    ``x - y``, ``x + y`` and both comparisons are formed in parallel and the
    selected contribution is registered (``term_latency`` 1).

    Parameters
    ----------
    v_bits : int
        Width of ``v`` (signed).
    zb_bits : int
        Width of the unsigned ``zb`` operand (already clipped by the feeder).
    v_shift, z_shift : int
        Left shifts ``a`` and ``b`` of the contract (wiring only).
    length : int
        Longest reduction (sequence length ``n``); the accumulator is signed and
        exactly wide enough for ``length`` contributions, each in
        ``[-2**(v_bits-1+v_shift), 2**(v_bits-1+v_shift) - 1]`` (at most
        ``v_bits + v_shift + ceil(log2(length))`` bits).
    tag_width : int
        Width of the user tag.
    """

    def __init__(self, *, v_bits: int, zb_bits: int, v_shift: int = 0, z_shift: int = 0,
                 length: int, tag_width: int = 0):
        self._MustUse__silence = True  # no "never used" warning if validation raises
        self._v_bits = check_int("v_bits", v_bits, minimum=1)
        self._zb_bits = check_int("zb_bits", zb_bits, minimum=1)
        self._v_shift = check_int("v_shift", v_shift, minimum=0)
        self._z_shift = check_int("z_shift", z_shift, minimum=0)
        self._length = check_int("length", length, minimum=1)
        term_bits = v_bits + v_shift
        lo = -length * (1 << (term_bits - 1))          # every summand is in
        hi = length * ((1 << (term_bits - 1)) - 1)     # [-2**(tb-1), 2**(tb-1) - 1]
        acc_bits = max((-lo - 1).bit_length(), hi.bit_length()) + 1
        super().__init__(a_shape=unsigned(zb_bits), b_shape=signed(v_bits),
                         acc_shape=signed(acc_bits),
                         term_shape=signed(term_bits), term_latency=1, tag_width=tag_width)

    v_bits = property(lambda self: self._v_bits)
    zb_bits = property(lambda self: self._zb_bits)
    v_shift = property(lambda self: self._v_shift)
    z_shift = property(lambda self: self._z_shift)
    length = property(lambda self: self._length)

    def term(self, m, a, b):
        x = Signal(signed(self._v_bits + self._v_shift))
        y = Signal(unsigned(self._zb_bits + self._z_shift))
        m.d.comb += [x.eq(b << self._v_shift), y.eq(a << self._z_shift)]
        wide = max(len(x), len(y)) + 2
        sub = Signal(signed(wide))
        add = Signal(signed(wide))
        m.d.comb += [sub.eq(x - y), add.eq(x + y)]
        out = Signal(self.term_shape, reset_less=True)
        # x > y  <=>  x - y > 0 ;  x < -y  <=>  x + y < 0
        m.d.sync += out.eq(Mux(sub > 0, sub, Mux(add < 0, add, 0)))
        return out
