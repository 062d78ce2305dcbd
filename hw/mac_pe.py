"""Multiply-accumulate PE of the dot-product baseline: ``acc += a * b``.

It follows the PE protocol of :mod:`inhibitron.hw.pe` (a
:class:`~inhibitron.hw.pe.ProcessingElement` subclass), so the same generic
output-stationary :class:`~inhibitron.hw.systolic.SystolicArray` that runs the
inhibitor's L1 and soft-threshold PEs runs it too. The baseline core uses it
twice: for ``Q K^T`` (both operands signed) and for ``P V`` (``P`` unsigned
softmax weights, ``V`` signed).
"""

from __future__ import annotations

from amaranth.hdl import Const, Shape, Signal, Value, signed

from .pe import ProcessingElement, check_int

__all__ = ["MULTIPLIER_KINDS", "MacPE", "mac_acc_bits", "multiply"]

#: How a multiplier is built: ``"dsp"`` (``a * b``, mapped to hard multipliers)
#: or ``"fabric"`` (shifted partial products, LUTs and carry chains only).
MULTIPLIER_KINDS = ("dsp", "fabric")


def multiply(a, b, *, kind: str = "dsp"):
    """``a * b`` (combinational), as a hard multiplier or in fabric.

    ``kind="dsp"`` returns Amaranth's ``a * b`` (a ``$mul`` cell, which Yosys
    maps to DSP blocks). ``kind="fabric"`` returns the same value as a sum of
    partial products ``(a << i)`` selected by the bits of ``b`` (the sign bit
    of a signed ``b`` with weight ``-2**(w-1)``), so no ``$mul`` cell exists
    and no synthesis tool can infer a DSP: the "device without DSPs" variant.
    """
    if kind not in MULTIPLIER_KINDS:
        raise ValueError(f"kind must be one of {MULTIPLIER_KINDS}, not {kind!r}")
    a, b = Value.cast(a), Value.cast(b)
    if kind == "dsp":
        return a * b
    if len(b) > len(a):        # fewer partial products
        a, b = b, a
    width = len(a) + len(b) + 1
    shape = signed(width)
    total = Const(0, shape)
    for i in range(len(b)):
        term = (a.as_signed() if a.shape().signed else a).shift_left(i)
        pp = b[i].replicate(width) & term.as_signed() if a.shape().signed else \
            b[i].replicate(width) & term
        pp = pp[:width].as_signed() if a.shape().signed else pp[:width]
        if b.shape().signed and i == len(b) - 1:
            total = total - pp
        else:
            total = total + pp
    return total[:width].as_signed()


def _ceil_log2(x: int) -> int:
    return max(0, (x - 1).bit_length())


def mac_acc_bits(*, a_bits: int, a_signed: bool, b_bits: int, b_signed: bool, length: int) -> int:
    """Signed accumulator width that holds any sum of *length* products exactly.

    A product of a ``a_bits`` and a ``b_bits`` operand needs ``a_bits + b_bits``
    bits signed (one more if both are unsigned, to stay signed). The sum of
    ``length`` of them needs ``ceil(log2(length))`` more.

    >>> mac_acc_bits(a_bits=8, a_signed=True, b_bits=8, b_signed=True, length=64)
    22
    """
    prod = a_bits + b_bits + (0 if (a_signed or b_signed) else 1)
    return prod + _ceil_log2(length)


class MacPE(ProcessingElement):
    """PE with ``acc += a * b`` (integer multiply-accumulate).

    The product is registered (``term_latency`` 1, the output register of an
    ECP5 ``MULT18X18D`` / iCE40 ``SB_MAC16``); with ``input_register=True``
    the operands are registered too (``term_latency`` 2), which lets the
    multiplier absorb its input registers and shortens the critical path.
    With ``fabric_register=True`` the product is registered once more
    (``term_latency`` + 1): that register stays in the fabric, beside the
    accumulator, so the hard multiplier's output crosses the device to it in
    a cycle of its own instead of in front of the accumulator's adder.

    Parameters
    ----------
    a_bits, b_bits : int
        Operand widths (1..32 bits).
    a_signed, b_signed : bool
        Two's complement (True) or unsigned operands.
    length : int
        Longest reduction; the accumulator is :func:`mac_acc_bits` bits signed
        and cannot overflow.
    input_register : bool
        Register the operands before the multiplier.
    fabric_register : bool
        Register the product a second time (one more cycle of latency).
    tag_width : int
        Width of the user tag (see :class:`~inhibitron.hw.pe.ProcessingElement`).
    multiplier : ``"dsp"`` or ``"fabric"``
        How the product is built (:func:`multiply`).

    Members
    -------
    See :class:`~inhibitron.hw.pe.ProcessingElement`. ``result`` is
    ``signed(acc_bits)``.

    Raises
    ------
    TypeError, ValueError
        For a parameter of the wrong type or out of range (named in the message).
    """

    def __init__(self, *, a_bits: int, b_bits: int, a_signed: bool = True, b_signed: bool = True,
                 length: int, input_register: bool = False, tag_width: int = 0,
                 multiplier: str = "dsp", fabric_register: bool = False):
        self._MustUse__silence = True  # no "never elaborated" warning if validation raises
        self._a_bits = check_int("a_bits", a_bits, minimum=1, maximum=32)
        self._b_bits = check_int("b_bits", b_bits, minimum=1, maximum=32)
        self._length = check_int("length", length, minimum=1)
        for name, val in (("a_signed", a_signed), ("b_signed", b_signed),
                          ("input_register", input_register),
                          ("fabric_register", fabric_register)):
            if not isinstance(val, bool):
                raise TypeError(f"{name} must be a bool, not {val!r}")
        if multiplier not in MULTIPLIER_KINDS:
            raise ValueError(f"multiplier must be one of {MULTIPLIER_KINDS}, not {multiplier!r}")
        self._multiplier = multiplier
        self._a_signed = a_signed
        self._b_signed = b_signed
        self._input_register = input_register
        self._fabric_register = fabric_register
        acc = mac_acc_bits(a_bits=a_bits, a_signed=a_signed, b_bits=b_bits, b_signed=b_signed,
                           length=length)
        prod = acc - _ceil_log2(length)
        super().__init__(
            a_shape=Shape(a_bits, a_signed), b_shape=Shape(b_bits, b_signed),
            acc_shape=signed(acc), term_shape=signed(prod),
            term_latency=1 + int(input_register) + int(fabric_register), tag_width=tag_width,
        )
        self._MustUse__silence = False

    a_bits = property(lambda self: self._a_bits, doc="Width of ``a`` (bits).")
    b_bits = property(lambda self: self._b_bits, doc="Width of ``b`` (bits).")
    length = property(lambda self: self._length, doc="Longest reduction.")

    def term(self, m, a, b):
        if self._input_register:
            ar = Signal(self.a_shape, reset_less=True)
            br = Signal(self.b_shape, reset_less=True)
            m.d.sync += [ar.eq(a), br.eq(b)]
            a, b = ar, br
        product = Signal(self.term_shape, reset_less=True)
        m.d.sync += product.eq(multiply(a, b, kind=self._multiplier))
        if self._fabric_register:
            product_f = Signal(self.term_shape, reset_less=True)
            m.d.sync += product_f.eq(product)
            product = product_f
        return product
