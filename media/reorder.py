"""RTP reorder buffer (bounded by packet count and by time) and RFC 3550 interarrival jitter.

Theory of operation
-------------------
``ReorderBuffer.push(seq, item, now)`` returns, in sequence order, every item that became deliverable. On a
healthy stream each packet is the one expected next and nothing is buffered: the fast path is one comparison,
one attribute store and a one-element list (no dict, no sorting, no unwrapping).

Otherwise the slow path computes the signed 16-bit distance ``d`` of ``seq`` from the expected one and works on
*extended* sequence numbers (``_cycles + _want``: the 16-bit value plus the wraps seen), so wrap is invisible:

* ``d == 0`` with packets waiting: the gap is filled; release it and the contiguous run behind it.
* ``0 < d <= max_jump``: park it in ``_pending`` (a dict keyed by extended seq; insertion order is arrival order
  because ``now`` never goes back). The head gap is given up, and its packets counted ``lost``, when the oldest
  parked packet has waited ``max_delay`` (``next_deadline()``; the adapter arms a timer and calls
  ``pop_ready(now)``) or when more than ``max_packets`` are parked. Giving up skips to the lowest parked
  sequence number and releases the run from there.
* ``-max_jump <= d < 0``: behind the release point. ``late`` if its slot was given up (a short list of given-up
  ranges remembers them) or precedes the first packet, else ``duplicate``. Dropped either way.
* ``|d| > max_jump``: a stream restart or a stray packet (a stale stream on a reused port). As in RFC 3550 §A.1
  (``bad_seq``), the packet is held as a probe; only when the next big-jump packet is its successor do we
  restart there (``resets``), releasing everything parked (remaining gaps counted lost), then the probe and the
  packet. A probe that is not confirmed is dropped and counted ``stray``.

Counters are plain ``int`` attributes: ``received`` (every push), ``lost`` (slots given up), ``duplicate``,
``late`` (arrived after its slot was given up; ``lost`` is not decremented), ``reordered`` (arrived after a higher
sequence number but in time), ``resets`` and ``stray``.

``JitterEstimator`` is the RFC 3550 §6.4.1 / §A.8 interarrival jitter, in timestamp units, with 32-bit wrap of
the RTP timestamp handled by serial difference. It is separate so that TCP streams (no reordering) can use it
alone; feed it every RTP packet in arrival order (duplicates included, as RFC 3550 does).
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["JitterEstimator", "ReorderBuffer"]

T = TypeVar("T")

_MAX_LOST_RANGES = 64  # given-up ranges kept for late-versus-duplicate classification


class ReorderBuffer(Generic[T]):
    """Releases items in RTP sequence order; see the module docstring.

    :param max_packets: most items parked behind a gap; one more gives the gap up.
    :param max_delay: seconds a parked item may wait for a gap before it is given up (0: never wait).
    :param max_jump: a sequence distance above this (either way) is a restart or a stray packet (RFC 3550 §A.1).
    """

    __slots__ = (
        "max_packets",
        "max_delay",
        "max_jump",
        "_want",
        "_cycles",
        "_pending",
        "_highest",
        "_deadline",
        "_lost_ranges",
        "_probe",
        "received",
        "lost",
        "duplicate",
        "late",
        "reordered",
        "resets",
        "stray",
    )

    def __init__(self, max_packets: int = 256, max_delay: float = 0.05, max_jump: int = 3000) -> None:
        if max_packets < 1:
            raise ValueError("max_packets must be at least 1")
        if max_delay < 0:
            raise ValueError("max_delay must not be negative")
        if not 0 < max_jump < 0x8000:
            raise ValueError("max_jump must be in 1..32767")
        self.max_packets = max_packets
        self.max_delay = max_delay
        self.max_jump = max_jump
        self._want = -1  # next 16-bit seq to release; -1 until the first packet
        self._cycles = 0  # extended seq of _want is _cycles + _want
        self._pending: dict[int, tuple[T, float]] = {}
        self._highest = 0  # highest parked extended seq (valid while _pending is not empty)
        self._deadline: float | None = None
        self._lost_ranges: list[tuple[int, int]] = []  # given-up [start, stop) extended seqs, oldest first
        self._probe: tuple[int, T] | None = None
        self.received = 0
        self.lost = 0
        self.duplicate = 0
        self.late = 0
        self.reordered = 0
        self.resets = 0
        self.stray = 0

    @property
    def buffered(self) -> int:
        """Items parked behind a gap."""
        return len(self._pending)

    def push(self, seq: int, item: T, now: float) -> list[T]:
        """Add the packet with 16-bit sequence number ``seq``; return the items now deliverable, in order.

        :param now: monotonic arrival time in seconds (never decreasing between calls).
        """
        self.received += 1
        if seq == self._want and not self._pending:
            if seq == 0xFFFF:
                self._want = 0
                self._cycles += 0x10000
            else:
                self._want = seq + 1
            return [item]
        return self._push_slow(seq, item, now)

    def next_deadline(self) -> float | None:
        """When ``pop_ready`` will give up the current gap (``None``: nothing is waiting)."""
        return self._deadline

    def pop_ready(self, now: float) -> list[T]:
        """Give up every gap whose deadline has passed; return the items that releases, in order.

        :param now: monotonic time in seconds.
        """
        deadline = self._deadline
        if deadline is None or now < deadline:
            return []
        return self._expire(now)

    def flush(self) -> list[T]:
        """Release everything parked (gaps counted lost) and drop an unconfirmed probe (counted stray)."""
        out: list[T] = []
        while self._pending:
            self._skip_gap(out)
        self._deadline = None
        if self._probe is not None:
            self._probe = None
            self.stray += 1
        return out

    # -- slow path ----------------------------------------------------------------------------------------

    def _set_next(self, ext: int) -> None:
        want = ext & 0xFFFF
        self._want = want
        self._cycles = ext - want

    def _start(self, ext: int) -> None:
        """(Re)start at the first packet, extended seq ``ext``: what precedes it counts as late, once."""
        self._lost_ranges[:] = [(ext - self.max_jump, ext)]
        self._set_next(ext + 1)

    def _push_slow(self, seq: int, item: T, now: float) -> list[T]:
        want = self._want
        seq &= 0xFFFF
        if want < 0:  # first packet: extended seqs start one cycle up, so early late packets stay >= 0
            self._start(0x10000 + seq)
            return [item]
        d = ((seq - want + 0x8000) & 0xFFFF) - 0x8000  # RFC 1982 signed distance
        nxt = self._cycles + want
        pending = self._pending
        out: list[T]
        if d == 0:  # fills the head gap
            self.reordered += 1
            out = [item]
            nxt += 1
            while nxt in pending:
                out.append(pending.pop(nxt)[0])
                nxt += 1
            self._set_next(nxt)
            self._deadline = next(iter(pending.values()))[1] + self.max_delay if pending else None
        elif d > 0:
            if d > self.max_jump:
                out = self._jump(seq, item)
            else:
                ext = nxt + d
                out = []
                if ext in pending:
                    self.duplicate += 1
                else:
                    if not pending:
                        self._highest = ext
                        self._deadline = now + self.max_delay
                    elif ext < self._highest:
                        self.reordered += 1
                    else:
                        self._highest = ext
                    pending[ext] = (item, now)
                    if len(pending) > self.max_packets:
                        while len(pending) > self.max_packets:
                            self._skip_gap(out)
                        self._deadline = next(iter(pending.values()))[1] + self.max_delay if pending else None
        elif d < -self.max_jump:
            out = self._jump(seq, item)
        else:
            out = []
            if self._take_lost(nxt + d):
                self.late += 1
            else:
                self.duplicate += 1
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            out += self._expire(now)
        return out

    def _expire(self, now: float) -> list[T]:
        out: list[T] = []
        pending = self._pending
        deadline = self._deadline
        while deadline is not None and now >= deadline:
            self._skip_gap(out)
            deadline = next(iter(pending.values()))[1] + self.max_delay if pending else None
        self._deadline = deadline
        return out

    def _skip_gap(self, out: list[T]) -> None:
        """Give up the head gap: count it lost and release the run from the lowest parked packet."""
        pending = self._pending
        nxt = self._cycles + self._want
        low = min(pending)
        if low > nxt:
            self.lost += low - nxt
            ranges = self._lost_ranges
            ranges.append((nxt, low))
            floor = low - self.max_jump
            if len(ranges) > _MAX_LOST_RANGES or ranges[0][1] <= floor:
                ranges[:] = [r for r in ranges[-_MAX_LOST_RANGES:] if r[1] > floor]
        while low in pending:
            out.append(pending.pop(low)[0])
            low += 1
        self._set_next(low)

    def _take_lost(self, ext: int) -> bool:
        """True (and forget it) if ``ext`` was given up: the packet is late, not a duplicate."""
        ranges = self._lost_ranges
        for i in range(len(ranges) - 1, -1, -1):
            start, stop = ranges[i]
            if start <= ext < stop:
                split = [r for r in ((start, ext), (ext + 1, stop)) if r[0] < r[1]]
                ranges[i : i + 1] = split
                return True
        return False

    def _jump(self, seq: int, item: T) -> list[T]:
        """A packet more than ``max_jump`` away: probe, or restart if it confirms the probe (RFC 3550 §A.1)."""
        probe = self._probe
        if probe is not None and seq == (probe[0] + 1) & 0xFFFF:
            self._probe = None
            out = self.flush()
            self.resets += 1
            ext = 0x10000 + probe[0]
            self._start(ext)
            self._set_next(ext + 2)
            out.append(probe[1])
            out.append(item)
            return out
        if probe is not None:
            self.stray += 1
        self._probe = (seq, item)
        return []


class JitterEstimator:
    """RFC 3550 §6.4.1 interarrival jitter ``J``, in RTP timestamp units (``jitter``, a float).

    :param clock_rate: RTP clock rate of the stream (90000 for GB/T 28181 PS video).
    """

    __slots__ = ("clock_rate", "jitter", "_last_arrival", "_last_ts")

    def __init__(self, clock_rate: int = 90000) -> None:
        if clock_rate <= 0:
            raise ValueError("clock_rate must be positive")
        self.clock_rate = clock_rate
        self.jitter = 0.0
        self._last_arrival = 0.0
        self._last_ts = -1  # no packet yet

    @property
    def jitter_seconds(self) -> float:
        """``jitter`` converted to seconds."""
        return self.jitter / self.clock_rate

    def update(self, rtp_ts: int, arrival: float) -> float:
        """Account one packet; return the new jitter (timestamp units).

        :param rtp_ts: the packet's 32-bit RTP timestamp.
        :param arrival: its arrival time in seconds (monotonic clock).
        """
        last_ts = self._last_ts
        self._last_ts = rtp_ts
        last_arrival = self._last_arrival
        self._last_arrival = arrival
        if last_ts < 0:
            return self.jitter
        # D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}), both in timestamp units (§6.4.1); S by serial difference
        d = (arrival - last_arrival) * self.clock_rate - (
            ((rtp_ts - last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        )
        if d < 0:
            d = -d
        j = self.jitter
        j += (d - j) / 16.0  # J(i) = J(i-1) + (|D| - J(i-1)) / 16
        self.jitter = j
        return j
