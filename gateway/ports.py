"""The one RTP port pool and the one GB/T 28181 SSRC allocator (ARCHITECTURE.md: one place for each fact).

``PortPool(first, last)`` hands out media ports from the configured range (30000-30999 by default). A port is
given out only if nobody holds it here *and* it binds right now on UDP (and TCP, for the TCP transports): the pool
binds a throw-away socket to check, so ports taken by other processes are skipped. Allocation is round-robin from
a cursor that only moves forward, so a port just released is the last one to come back: a stale stream that is
still arriving (the device has not seen our BYE yet) then lands on a port nobody listens on, not on the next
stream's. The check is a snapshot: between ``allocate()`` and the adapter's bind another process could take the
port; the adapter's bind then fails with ``OSError`` and the caller releases the port and allocates another.

``SsrcAllocator(domain)`` makes the 10-digit decimal SSRCs of GB/T 28181 (附录 … "SSRC"; GB28181.md Media
sessions): ``0`` for live or ``1`` for playback/download, digits 4-8 of the 10-digit SIP domain, then 4 digits per
stream. The 4 digits are chosen free (never one in use), round-robin from a cursor (so a just-released value is not
reused at once), starting at an offset drawn from the injected ``random.Random`` (STYLE.md §6) so that two gateway
restarts do not begin with the same SSRC for a device that may still be sending the old stream.
"""

from __future__ import annotations

import random
import socket
from typing import NamedTuple

from . import metrics

__all__ = ["PortPool", "PortsExhausted", "Ssrc", "SsrcAllocator", "SsrcExhausted"]


class PortsExhausted(RuntimeError):
    """Every port of the range is held or busy."""


class SsrcExhausted(RuntimeError):
    """All 10,000 SSRCs of a kind (live or playback) are in use."""


class PortPool:
    """Media ports ``first..last`` (inclusive), verified free by binding; see the module docstring.

    :param host: the address the media listeners bind (``0.0.0.0`` checks every local address).
    """

    def __init__(self, first: int, last: int, *, host: str = "0.0.0.0") -> None:
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"bad port range {first}-{last}")
        self.first = first
        self.last = last
        self.host = host
        self._held: set[int] = set()
        self._next = first

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    @property
    def in_use(self) -> int:
        """Ports currently held (allocated or reserved)."""
        return len(self._held)

    def held(self, port: int) -> bool:
        return port in self._held

    def allocate(self, *, tcp: bool = True) -> int:
        """A port free right now on UDP and, with ``tcp``, on TCP; held until ``release``.

        Raises ``PortsExhausted`` when every port is held or busy.
        """
        span = self.size
        port = self._next
        for _ in range(span):
            candidate = port
            port = self.first if port >= self.last else port + 1
            if candidate in self._held or not self._bindable(candidate, tcp):
                continue
            self._next = port
            self._held.add(candidate)
            metrics.RTP_PORTS_IN_USE.set(len(self._held))
            return candidate
        metrics.RTP_PORTS_EXHAUSTED.inc()
        raise PortsExhausted(f"no free media port in {self.first}-{self.last} ({len(self._held)} held here)")

    def reserve(self, port: int) -> None:
        """Hold a specific port (e.g. the single-port UDP mode's port), without a bind check."""
        if not self.first <= port <= self.last:
            raise ValueError(f"port {port} is outside {self.first}-{self.last}")
        if port in self._held:
            raise ValueError(f"port {port} is already held")
        self._held.add(port)
        metrics.RTP_PORTS_IN_USE.set(len(self._held))

    def release(self, port: int) -> None:
        """Give a port back. Releasing a port that is not held does nothing."""
        self._held.discard(port)
        metrics.RTP_PORTS_IN_USE.set(len(self._held))

    def _bindable(self, port: int, tcp: bool) -> bool:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp else (socket.SOCK_DGRAM,)
        for kind in kinds:
            try:
                with socket.socket(family, kind) as sock:
                    if kind == socket.SOCK_STREAM:  # as asyncio's create_server does: TIME_WAIT is no obstacle
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((self.host, port))
            except OSError:
                return False
        return True


class Ssrc(NamedTuple):
    """An SSRC as the RTP header carries it (``value``) and as the SDP ``y=`` line writes it (``text``)."""

    value: int
    text: str


class SsrcAllocator:
    """GB/T 28181 SSRCs for one SIP domain; see the module docstring.

    :param domain: the 10-digit SIP domain (e.g. ``3402000000``); digits 4-8 go into every SSRC.
    :param rng: where the starting offset comes from (tests inject a seeded one).
    """

    SLOTS = 10_000

    def __init__(self, domain: str, rng: random.Random | None = None) -> None:
        if len(domain) != 10 or not domain.isdigit():
            raise ValueError(f"SIP domain must be 10 digits, got {domain!r}")
        self.domain = domain
        self._middle = domain[3:8]
        start = (rng or random.Random()).randrange(self.SLOTS)
        self._next = {0: start, 1: start}
        self._held: dict[int, set[int]] = {0: set(), 1: set()}
        self._claimed: set[int] = set()  # SSRCs a device chose (its y= differs from ours)

    @property
    def in_use(self) -> int:
        return len(self._held[0]) + len(self._held[1]) + len(self._claimed)

    def allocate(self, *, playback: bool = False) -> Ssrc:
        """A fresh SSRC: ``0``/``1`` (live/playback), the domain digits 4-8, 4 free digits."""
        kind = 1 if playback else 0
        held = self._held[kind]
        slot = self._next[kind]
        for _ in range(self.SLOTS):
            candidate = slot
            slot = (slot + 1) % self.SLOTS
            text = f"{kind}{self._middle}{candidate:04d}"
            if candidate in held or int(text) in self._claimed:
                continue
            self._next[kind] = slot
            held.add(candidate)
            return Ssrc(int(text), text)
        raise SsrcExhausted(f"all {self.SLOTS} {'playback' if playback else 'live'} SSRCs are in use")

    def claim(self, ssrc: int) -> None:
        """Mark an SSRC chosen by a device (its answer's ``y=``) as in use, so we never hand it out meanwhile."""
        own = self._own(ssrc)
        if own is not None:
            self._held[own[0]].add(own[1])
        else:
            self._claimed.add(ssrc)

    def release(self, ssrc: int) -> None:
        """The stream with this SSRC is over. Unknown values are ignored."""
        own = self._own(ssrc)
        if own is not None:
            self._held[own[0]].discard(own[1])
        self._claimed.discard(ssrc)

    def in_use_value(self, ssrc: int) -> bool:
        own = self._own(ssrc)
        return (own is not None and own[1] in self._held[own[0]]) or ssrc in self._claimed

    def _own(self, ssrc: int) -> tuple[int, int] | None:
        """(kind, slot) if ``ssrc`` has our 10-digit shape for this domain, else ``None``."""
        text = f"{ssrc:010d}"
        if len(text) != 10 or text[0] not in "01" or text[1:6] != self._middle:
            return None
        return int(text[0]), int(text[6:])

    @staticmethod
    def parse(text: str) -> int:
        """The RTP SSRC of a ``y=`` value (decimal, up to 10 digits; some devices send fewer). ``ValueError``."""
        if not text or len(text) > 10 or not text.isdigit() or int(text) > 0xFFFFFFFF:
            raise ValueError(f"bad SSRC {text!r}")
        return int(text)
