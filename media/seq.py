"""Serial-number arithmetic for RTP sequence numbers (16 bit) and timestamps (32 bit).

Theory of operation
-------------------
RTP sequence numbers and timestamps wrap (RFC 3550 §5.1), so ``a > b`` is meaningless across the wrap. We use
RFC 1982 serial arithmetic: ``a`` is "after" ``b`` when the forward distance ``(a - b) mod 2**n`` is non-zero and
below half the space. At exactly half the space neither is after the other (RFC 1982 §3.2 leaves it undefined);
``uint16_gt`` is then false both ways and ``uint16_diff`` returns the negative extreme.

The unwrappers extend the wrapped values to unbounded ``int``s that compare correctly, as long as consecutive
inputs are within half the space of the highest value seen so far (so moderate reordering is fine: a late packet
maps below the highest, an early one above). They track the *highest* value, not the last one, so a late packet
never moves the reference back. The first value maps to itself plus one full cycle (``first + 2**n``), so values
that arrive late around the start stay non-negative.

Everything here is plain functions on ``int`` (a few tens of ns each); the per-packet code in ``reorder.py`` inlines
the same expressions instead of calling them.
"""

from __future__ import annotations

__all__ = [
    "SequenceUnwrapper",
    "TimestampUnwrapper",
    "uint16_add",
    "uint16_diff",
    "uint16_gt",
    "uint16_gte",
    "uint32_add",
    "uint32_diff",
    "uint32_gt",
    "uint32_gte",
]

_M16 = 0xFFFF
_H16 = 0x8000
_M32 = 0xFFFFFFFF
_H32 = 0x80000000


def uint16_add(a: int, b: int) -> int:
    """``(a + b) mod 2**16``; ``b`` may be negative."""
    return (a + b) & _M16


def uint16_diff(a: int, b: int) -> int:
    """Signed serial distance ``a - b`` in ``-32768..32767`` (positive: ``a`` is after ``b``)."""
    return ((a - b + _H16) & _M16) - _H16


def uint16_gt(a: int, b: int) -> bool:
    """True if ``a`` is after ``b`` in 16-bit serial order (RFC 1982 §3.2)."""
    return 0 < ((a - b) & _M16) < _H16


def uint16_gte(a: int, b: int) -> bool:
    """True if ``a == b`` or ``a`` is after ``b`` in 16-bit serial order."""
    return ((a - b) & _M16) < _H16


def uint32_add(a: int, b: int) -> int:
    """``(a + b) mod 2**32``; ``b`` may be negative."""
    return (a + b) & _M32


def uint32_diff(a: int, b: int) -> int:
    """Signed serial distance ``a - b`` in ``-2**31..2**31-1`` (positive: ``a`` is after ``b``)."""
    return ((a - b + _H32) & _M32) - _H32


def uint32_gt(a: int, b: int) -> bool:
    """True if ``a`` is after ``b`` in 32-bit serial order (RFC 1982 §3.2)."""
    return 0 < ((a - b) & _M32) < _H32


def uint32_gte(a: int, b: int) -> bool:
    """True if ``a == b`` or ``a`` is after ``b`` in 32-bit serial order."""
    return ((a - b) & _M32) < _H32


class _Unwrapper:
    """Extends ``bits``-wide serial numbers to monotonically comparable ints (see module docstring)."""

    __slots__ = ("_highest", "_mask", "_half")

    def __init__(self, bits: int) -> None:
        self._mask = (1 << bits) - 1
        self._half = 1 << (bits - 1)
        self._highest: int | None = None

    @property
    def highest(self) -> int | None:
        """The highest unwrapped value returned so far (``None`` before the first)."""
        return self._highest

    def reset(self) -> None:
        """Forget the history: the next value starts a new sequence."""
        self._highest = None

    def unwrap(self, value: int) -> int:
        """The unwrapped value of ``value`` (taken modulo ``2**bits``)."""
        highest = self._highest
        mask = self._mask
        if highest is None:
            ext = (value & mask) + mask + 1
            self._highest = ext
            return ext
        half = self._half
        ext = highest + ((value - highest + half) & mask) - half
        if ext > highest:
            self._highest = ext
        return ext


class SequenceUnwrapper(_Unwrapper):
    """Unwraps 16-bit RTP sequence numbers (reordering of up to 32767 packets is tolerated)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(16)


class TimestampUnwrapper(_Unwrapper):
    """Unwraps 32-bit RTP timestamps (13 h of 90 kHz clock per half-space)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(32)
