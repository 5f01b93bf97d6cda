"""Fan-out of one stream's access units to many consumers, with the one bounded GOP cache.

Theory of operation
-------------------
One camera stream (a ``StreamSession``) feeds one ``FanOut``; RTSP viewers, WHEP peers, the cascade sender and the
recorder are its consumers. ``publish(au)`` is called on the loop by the ingest sink for every access unit and
costs O(consumers): each consumer gets the *same* ``AccessUnit`` object (frozen, payload never copied), so memory
is bounded by the largest window any consumer holds, not by the sum of the windows.

**GOP cache** (``GopCache``). It holds the access units since the latest video keyframe, audio interleaved as it
came. A keyframe starts a new GOP and drops the old one. Past ``max_bytes`` or ``max_units`` (an endless GOP,
a camera with a 60 s keyframe interval) the cache is cleared, counted (``overflows``,
``gb28181_gop_cache_dropped_total{reason}``) and waits for the next keyframe. The cache also remembers the
latest parameter sets (H.264 SPS/PPS, H.265 VPS/SPS/PPS, NAL header included, no start code) and the
resolution, for the RTSP ``DESCRIBE``. They are read from every keyframe and from any other video access unit
whose first NAL unit (after an access unit delimiter) is a parameter set. No other AU is scanned, and only the
NAL units before the first slice are read (parameter sets precede it), so the cost does not grow with frame size.
A keyframe that lacks a parameter set the cache knows is cached as a copy with the remembered sets put in front
(after a leading AUD). This copy is the "start unit". Consumers that *start* at this keyframe get it. Consumers
already live get the keyframe unchanged.

**Consumer states.** ``WAITING`` (new, before its first keyframe), ``LIVE``, ``SKIPPING`` (overflowed, waiting
for the next keyframe) and ``CLOSED``.

* A new consumer starts *at once* when the cache holds a GOP: it gets the start unit, then the rest of the GOP in
  order, then live units (a queued consumer only if its bounds can hold the whole cached GOP). Otherwise it
  waits for the next keyframe; audio that arrives meanwhile is not delivered, so a consumer always begins on a
  keyframe.
* A queued consumer (``Subscription``) whose queue would go past ``max_queue_units``/``max_queue_bytes`` drops
  everything queued and resumes at the next keyframe. The units it misses are counted (``skipped``, ``skips``,
  ``gb28181_fanout_skipped_units_total``, ``gb28181_fanout_skips_total``). The queue never grows beyond its
  bounds, except that one AU always fits in an empty queue. If the unit that overflows is itself a keyframe,
  the consumer restarts on it at once. A consumer may also call ``skip()`` itself, for example when its latency
  is too high.
* A callback consumer (``CallbackSubscription``, in-loop consumers like an RTP packetizer) is called
  synchronously from ``publish``. It has no queue. When its transport cannot keep up (``pause_writing``), the
  callback returns ``False`` (the unit was not taken), or the consumer calls ``skip()``. Either way it gets
  nothing more until the next keyframe. Any other return value means the unit was taken. An exception in the
  callback is logged and ends that consumer (reason ``"consumer_error"``); it never reaches ``publish``.
* ``on_ready()`` (optional, per consumer) is called each time the consumer goes ``LIVE``, right before its
  keyframe is delivered: at the start and after every skip. A stream whose audio comes before its first video
  unit makes it fire at the first audio unit too. For callback consumers the cached GOP is replayed
  inside ``subscribe_callback``, before it returns.

**Audio-only streams.** Until a video access unit has been seen, every AU passes through without gating: the
first audio unit makes every consumer ``LIVE`` (before any media, consumers wait), and one that subscribes later
is ``LIVE`` at once. An overflowing queue is dropped and delivery resumes with the next unit. The first
video AU gates every consumer on a keyframe; any audio already queued stays queued. A change of video codec
does the same, and also clears the cache and the parameter sets. The session should then end consumers whose
negotiated codec no longer matches ``cache.video_codec``.

**Keyframe requests.** Consumers can be waiting while the cache holds no GOP (``needs_keyframe``): a stream that
began mid-GOP, a cache dropped for size, or a consumer that skipped. ``FanOut`` then calls
``request_keyframe()``. The session wires it to ``DeviceControl``/``IFrameCmd``. Calls are rate-limited to one
per ``keyframe_request_interval`` seconds of the injected ``clock``. The checks happen in ``subscribe`` and in
``publish`` of non-keyframe units, so nothing is asked before media flows. A consumer that skipped while a GOP
is cached waits for the camera's own next keyframe: a persistently slow viewer never makes the camera raise its
bitrate for everyone.

**End.** ``FanOut.close(reason)`` ends every consumer with that reason: queued units are discarded at once
(a stuck consumer holds no memory afterwards), ``get()`` raises ``StreamEnded(reason)`` and async iteration
stops; callback consumers get ``on_end(reason)``. ``Subscription.close()`` unsubscribes (reason
``"unsubscribed"``). Later ``publish`` calls are ignored and ``subscribe`` raises ``StreamEnded``.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Final

import structlog

from media import h264, h265
from media.frames import AccessUnit, Codec

from . import metrics

__all__ = [
    "CallbackSubscription",
    "ConsumerState",
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CACHE_UNITS",
    "DEFAULT_QUEUE_BYTES",
    "DEFAULT_QUEUE_UNITS",
    "FanOut",
    "GopCache",
    "StreamEnded",
    "Subscription",
]

log = structlog.get_logger("gateway.fanout")

MIB: Final = 1024 * 1024
#: GOP cache bounds: a 4 s GOP of 8 Mbit/s 4K video is ~4 MiB; 2048 units is ~27 s of 25 fps video + 50/s audio.
DEFAULT_CACHE_BYTES: Final = 8 * MIB
DEFAULT_CACHE_UNITS: Final = 2048
#: Per-consumer queue bounds: twice the cache, so a full cached GOP fits with room for live units behind it.
#: Payloads are shared between queues, so these bound one consumer's window, not memory per consumer.
DEFAULT_QUEUE_BYTES: Final = 16 * MIB
DEFAULT_QUEUE_UNITS: Final = 4096

_START_CODE: Final = b"\x00\x00\x00\x01"
_H264_PARAMS: Final = frozenset({h264.NalType.SPS, h264.NalType.PPS})
_H265_PARAMS: Final = frozenset({h265.NalType.VPS, h265.NalType.SPS, h265.NalType.PPS})


class StreamEnded(Exception):
    """The stream, or this subscription, has ended; ``reason`` says why (``"unsubscribed"``, the session's)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConsumerState(enum.Enum):
    """Where a consumer is (see the module docstring)."""

    WAITING = "waiting"    # new: waits for its first keyframe
    LIVE = "live"
    SKIPPING = "skipping"  # fell behind (or skip()): waits for the next keyframe
    CLOSED = "closed"


# Module-level aliases: a global lookup is cheaper than an Enum attribute on the per-unit path (Python 3.11).
_WAITING: Final = ConsumerState.WAITING
_LIVE: Final = ConsumerState.LIVE
_SKIPPING: Final = ConsumerState.SKIPPING
_CLOSED: Final = ConsumerState.CLOSED
_H264: Final = Codec.H264
_H265: Final = Codec.H265


# ------------------------------------------------------------------------------------------------- GOP cache


def _leading_nal_type(data: bytes, codec: Codec) -> int:
    """Type of the first NAL unit of an Annex B AU (after an AUD), looking only at its first bytes; -1 if none."""
    i = data.find(b"\x00\x00\x01", 0, 8)
    if i < 0 or i + 3 >= len(data):
        return -1
    if codec is _H264:
        t = data[i + 3] & 0x1F
        if t == h264.NalType.AUD:
            i = data.find(b"\x00\x00\x01", i + 4, i + 12)
            t = data[i + 3] & 0x1F if 0 <= i < len(data) - 3 else -1
    else:
        t = (data[i + 3] >> 1) & 0x3F
        if t == h265.NalType.AUD:
            i = data.find(b"\x00\x00\x01", i + 5, i + 14)
            t = (data[i + 3] >> 1) & 0x3F if 0 <= i < len(data) - 3 else -1
    return t


def _first_vcl(data: bytes, codec: Codec) -> int:
    """Offset of the start code of the first slice NAL unit, or ``len(data)``.

    Parameter sets and SEI come before the first slice of an access unit (H.264 §7.4.1.2.3, H.265 §7.4.2.4.4).
    Only the NAL headers up to the first slice are read, so a 500 kB keyframe is not scanned end to end.
    """
    find = data.find
    n = len(data)
    i = find(b"\x00\x00\x01")
    while 0 <= i < n - 3:
        b = data[i + 3]
        if (1 <= b & 0x1F <= 5) if codec is _H264 else (b >> 1) & 0x3F <= 31:
            return i
        i = find(b"\x00\x00\x01", i + 4)
    return n


def _aud_end(data: bytes, codec: Codec) -> int:
    """Offset just past a leading access unit delimiter (where parameter sets may be inserted), else 0."""
    i = data.find(b"\x00\x00\x01", 0, 8)
    if i < 0 or i + 3 >= len(data):
        return 0
    b = data[i + 3]
    if codec is _H264:
        is_aud = b & 0x1F == h264.NalType.AUD
    else:
        is_aud = (b >> 1) & 0x3F == h265.NalType.AUD
    if not is_aud:
        return 0
    j = data.find(b"\x00\x00\x01", i + 4, i + 16)
    if j < 0:
        return 0
    return j - 1 if data[j - 1] == 0 else j  # keep a 4-byte start code whole


class GopCache:
    """The access units since the latest video keyframe, bounded; and the latest parameter sets.

    Used by ``FanOut``; on its own it is plain bookkeeping (no clock, no loop).
    """

    __slots__ = (
        "max_bytes", "max_units", "_units", "_bytes", "_active", "video_codec", "vps", "sps", "pps",
        "resolution", "overflows", "gops",
    )

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, max_units: int = DEFAULT_CACHE_UNITS) -> None:
        if max_bytes <= 0 or max_units <= 0:
            raise ValueError("GOP cache bounds must be positive")
        self.max_bytes = max_bytes
        self.max_units = max_units
        self._units: list[AccessUnit] = []
        self._bytes = 0
        self._active = False
        #: The video codec of the stream, ``None`` until a video access unit is seen (an audio-only stream).
        self.video_codec: Codec | None = None
        #: Latest parameter sets (NAL header included, no start code); ``vps`` is H.265 only.
        self.vps: bytes | None = None
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        #: ``(width, height)`` from the latest SPS, ``None`` if unknown or unparsable.
        self.resolution: tuple[int, int] | None = None
        #: GOPs dropped because they outgrew the bounds.
        self.overflows = 0
        #: GOPs started (video keyframes seen).
        self.gops = 0

    def __len__(self) -> int:
        return len(self._units)

    @property
    def nbytes(self) -> int:
        """Payload bytes held."""
        return self._bytes

    @property
    def has_keyframe(self) -> bool:
        """True if a GOP is cached: a new consumer can start on its keyframe at once."""
        return self._active

    @property
    def units(self) -> tuple[AccessUnit, ...]:
        """The cached GOP in order: the start unit (a keyframe), then what followed it."""
        return tuple(self._units)

    def set_video_codec(self, codec: Codec) -> None:
        """A (new) video codec: the cache and the parameter sets are cleared."""
        self.video_codec = codec
        self.vps = self.sps = self.pps = None
        self.resolution = None
        self.clear()

    def clear(self) -> None:
        """Drop the cached GOP (not the parameter sets); the next keyframe starts a new one."""
        self._units = []
        self._bytes = 0
        self._active = False

    def start_gop(self, au: AccessUnit) -> AccessUnit:
        """A video keyframe of ``video_codec``: drop the old GOP, start a new one at ``au``.

        Returns the start unit: ``au`` itself, or a copy with the remembered parameter sets in front when ``au``
        lacks one of them.
        """
        start = self._learn_parameter_sets(au) if au.codec is _H264 or au.codec is _H265 else au
        self.gops += 1
        size = len(start.data)
        if size > self.max_bytes:
            self._overflow("max_bytes")
            return start
        self._units = [start]
        self._bytes = size
        self._active = True
        return start

    def append(self, au: AccessUnit) -> None:
        """A non-keyframe unit (video of ``video_codec`` or audio): appended to the current GOP, if any."""
        codec = au.codec
        if (codec is _H264 or codec is _H265) and codec is self.video_codec:
            t = _leading_nal_type(au.data, codec)
            if t in (_H264_PARAMS if codec is _H264 else _H265_PARAMS):
                self._learn_parameter_sets(au)
        if not self._active:
            return
        if len(self._units) >= self.max_units:
            self._overflow("max_units")
            return
        size = len(au.data)
        if self._bytes + size > self.max_bytes:
            self._overflow("max_bytes")
            return
        self._units.append(au)
        self._bytes += size

    def _overflow(self, reason: str) -> None:
        self.overflows += 1
        metrics.GOP_CACHE_DROPPED.labels(reason).inc()
        log.info("gop cache dropped", reason=reason, units=len(self._units), bytes=self._bytes,
                 max_units=self.max_units, max_bytes=self.max_bytes)
        self.clear()

    def _learn_parameter_sets(self, au: AccessUnit) -> AccessUnit:
        """Remember the parameter sets in ``au``; return ``au`` completed with the remembered ones it lacks."""
        data = au.data
        front = memoryview(data)[: _first_vcl(data, au.codec)]
        vps: bytes | None = None
        if au.codec is _H264:
            sps, pps = h264.parameter_sets(front)
        else:
            vps, sps, pps = h265.parameter_sets(front)
            if vps is not None:
                self.vps = vps
        if sps is not None and sps != self.sps:
            self.sps = sps
            try:
                self.resolution = (h264.resolution(sps) if au.codec is _H264 else h265.resolution(sps))
            except ValueError:
                self.resolution = None
        if pps is not None:
            self.pps = pps
        if not au.keyframe:
            return au
        missing = (sps is None and self.sps is not None) or (pps is None and self.pps is not None) or (
            au.codec is _H265 and vps is None and self.vps is not None
        )
        if not missing:
            return au
        params = b"".join(_START_CODE + p for p in (self.vps, self.sps, self.pps) if p is not None)
        at = _aud_end(data, au.codec)
        return AccessUnit(au.codec, au.pts, au.dts, True, data[:at] + params + data[at:])


# ------------------------------------------------------------------------------------------------- consumers


class _Consumer:
    """State and counters shared by queued and callback consumers; the transitions live here."""

    __slots__ = ("name", "_fanout", "_state", "_on_ready", "reason", "delivered", "skipped", "skips",
                 "_skipped_reported", "__weakref__")

    def __init__(self, fanout: FanOut, name: str, on_ready: Callable[[], None] | None) -> None:
        #: For logs only; never a metric label.
        self.name = name
        self._fanout: FanOut = fanout
        self._state = _WAITING
        self._on_ready = on_ready
        #: Why the subscription ended; ``None`` while it is open.
        self.reason: str | None = None
        #: Units handed to the consumer (``get`` returned them, or the callback was called).
        self.delivered = 0
        #: Units this consumer missed because it fell behind (dropped from its queue or passed over while
        #: skipping to a keyframe); units before the first keyframe are not counted.
        self.skipped = 0
        #: Times it fell behind and skipped to the next keyframe.
        self.skips = 0
        self._skipped_reported = 0

    # -- public

    @property
    def state(self) -> ConsumerState:
        return self._state

    @property
    def ready(self) -> bool:
        """True while units flow to this consumer (it started on a keyframe, or the stream is audio-only)."""
        return self._state is _LIVE

    @property
    def closed(self) -> bool:
        return self._state is _CLOSED

    def skip(self) -> None:
        """Drop what is queued and resume at the next keyframe (counted as a skip).

        With no video seen yet (audio-only), only the queue is dropped and delivery goes on.
        """
        if self._state is not _LIVE:
            return
        self._fall_behind()
        if self._fanout._cache.video_codec is None:
            self._go_live()

    def close(self) -> None:
        """Unsubscribe. Idempotent."""
        self._end("unsubscribed")

    def __enter__(self) -> _Consumer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- called by FanOut.publish (hot path)

    def _unit(self, au: AccessUnit) -> None:
        """A non-keyframe unit of a stream with video."""
        state = self._state
        if state is _LIVE:
            if not self._offer(au):
                self._fall_behind()
                self.skipped += 1
        elif state is _SKIPPING:
            self.skipped += 1

    def _keyframe(self, au: AccessUnit, start: AccessUnit) -> None:
        state = self._state
        if state is _LIVE:
            if self._offer(au):
                return
            self._fall_behind()
        elif state is _CLOSED:
            return
        self._begin(start)

    def _passthrough(self, au: AccessUnit) -> None:
        """Any unit of a stream with no video seen: no gating; an overflow drops the queue and goes on."""
        state = self._state
        if state is _LIVE:
            if self._offer(au):
                return
            self._fall_behind()
        elif state is _CLOSED:
            return
        self._begin(au)

    # -- transitions

    def _go_live(self) -> None:
        if self._state is not _LIVE:
            self._fanout._waiting -= 1
            self._state = _LIVE
        if self.skipped != self._skipped_reported:
            self._report_skipped()
        if self._on_ready is not None:
            try:
                self._on_ready()
            except Exception:
                log.exception("on_ready failed", consumer=self.name)

    def _begin(self, au: AccessUnit) -> None:
        self._go_live()
        if self._state is _LIVE and not self._offer(au):  # leftovers from before gating; on_ready may close
            self._drop_queue()
            self._offer(au)

    def _fall_behind(self) -> None:
        self._drop_queue()
        if self._state is _LIVE:
            self._fanout._waiting += 1
        self._state = _SKIPPING
        self.skips += 1
        metrics.FANOUT_SKIPS.inc()
        if self.skipped != self._skipped_reported:
            self._report_skipped()
        log.debug("consumer skipped to next keyframe", consumer=self.name, skipped=self.skipped, skips=self.skips)

    def _report_skipped(self) -> None:
        metrics.FANOUT_SKIPPED_UNITS.inc(self.skipped - self._skipped_reported)
        self._skipped_reported = self.skipped

    def _end(self, reason: str) -> None:
        if self._state is _CLOSED:
            return
        if self._state is not _LIVE:
            self._fanout._waiting -= 1
        self._state = _CLOSED
        self.reason = reason
        if self.skipped != self._skipped_reported:
            self._report_skipped()
        self._fanout._remove(self)
        self._ended(reason)

    # -- implemented by the two kinds

    def _offer(self, au: AccessUnit) -> bool:
        """Deliver or queue ``au``; False if it does not fit (nothing changed then)."""
        raise NotImplementedError

    def _drop_queue(self) -> None:
        raise NotImplementedError

    def _replay(self, units: tuple[AccessUnit, ...], nbytes: int) -> bool:
        """Start with the cached GOP; False if it cannot (then the consumer waits for the next keyframe)."""
        raise NotImplementedError

    def _ended(self, reason: str) -> None:
        raise NotImplementedError


class Subscription(_Consumer):
    """A queued consumer: ``await get()`` or ``async for au in sub``. Make one with ``FanOut.subscribe``."""

    __slots__ = ("max_units", "max_bytes", "_queue", "_qbytes", "_waiter")

    def __init__(self, fanout: FanOut, name: str, max_units: int, max_bytes: int,
                 on_ready: Callable[[], None] | None) -> None:
        super().__init__(fanout, name, on_ready)
        if max_units <= 0 or max_bytes <= 0:
            raise ValueError("queue bounds must be positive")
        self.max_units = max_units
        self.max_bytes = max_bytes
        self._queue: deque[AccessUnit] = deque()
        self._qbytes = 0
        self._waiter: asyncio.Future[None] | None = None

    @property
    def queued_units(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._qbytes

    def get_nowait(self) -> AccessUnit | None:
        """The next unit, or ``None`` if none is queued. Raises ``StreamEnded`` once closed."""
        if self._queue:
            au = self._queue.popleft()
            self._qbytes -= len(au.data)
            self.delivered += 1
            return au
        if self._state is _CLOSED:
            raise StreamEnded(self.reason or "closed")
        return None

    async def get(self) -> AccessUnit:
        """The next unit, waiting for it. Raises ``StreamEnded(reason)`` once closed (queued units are dropped)."""
        while True:
            au = self.get_nowait()
            if au is not None:
                return au
            if self._waiter is not None:
                raise RuntimeError(f"subscription {self.name!r}: get() is already pending")
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> AccessUnit:
        try:
            return await self.get()
        except StreamEnded:
            raise StopAsyncIteration from None

    def __enter__(self) -> Subscription:
        return self

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _offer(self, au: AccessUnit) -> bool:
        queue = self._queue
        size = len(au.data)
        if queue and (len(queue) >= self.max_units or self._qbytes + size > self.max_bytes):
            return False
        queue.append(au)
        self._qbytes += size
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def _drop_queue(self) -> None:
        self.skipped += len(self._queue)
        self._queue.clear()
        self._qbytes = 0

    def _replay(self, units: tuple[AccessUnit, ...], nbytes: int) -> bool:
        if len(units) > self.max_units or nbytes > self.max_bytes:
            return False
        self._go_live()
        if self._state is _LIVE:
            self._queue.extend(units)
            self._qbytes += nbytes
            self._wake()
        return True

    def _ended(self, reason: str) -> None:
        self._queue.clear()
        self._qbytes = 0
        self._wake()


class CallbackSubscription(_Consumer):
    """A synchronous in-loop consumer: ``fn(au)`` is called from ``publish``. Make one with
    ``FanOut.subscribe_callback``. It must not block. When it cannot keep up, it returns ``False`` (this unit
    was not taken) or calls ``skip()``; either way it gets nothing more until the next keyframe."""

    __slots__ = ("_fn", "_on_end")

    def __init__(self, fanout: FanOut, name: str, fn: Callable[[AccessUnit], bool | None],
                 on_ready: Callable[[], None] | None, on_end: Callable[[str], None] | None) -> None:
        super().__init__(fanout, name, on_ready)
        self._fn = fn
        self._on_end = on_end

    def __enter__(self) -> CallbackSubscription:
        return self

    def _offer(self, au: AccessUnit) -> bool:
        try:
            taken = self._fn(au)
        except Exception:
            log.exception("fan-out consumer failed; unsubscribing it", consumer=self.name)
            self._end("consumer_error")
            return True
        if taken is False:  # could not take it: resume at the next keyframe
            self.skipped += 1
            if self._state is _LIVE:
                self._fall_behind()
            return True
        self.delivered += 1
        return True

    def _drop_queue(self) -> None:
        pass

    def _replay(self, units: tuple[AccessUnit, ...], nbytes: int) -> bool:
        self._go_live()
        for au in units:
            if self._state is not _LIVE:  # it skipped, failed or closed during the replay
                break
            self._offer(au)
        return True

    def _ended(self, reason: str) -> None:
        if self._on_end is not None:
            try:
                self._on_end(reason)
            except Exception:
                log.exception("on_end failed", consumer=self.name)


# ------------------------------------------------------------------------------------------------- fan-out


class FanOut:
    """One stream's access units to many consumers (see the module docstring). Not thread-safe: use on the loop."""

    def __init__(
        self,
        *,
        request_keyframe: Callable[[], None] | None = None,
        keyframe_request_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        cache_max_bytes: int = DEFAULT_CACHE_BYTES,
        cache_max_units: int = DEFAULT_CACHE_UNITS,
        name: str = "",
    ) -> None:
        """
        :param request_keyframe: asks the device for a keyframe (``DeviceControl``/``IFrameCmd``); called at most
            once per ``keyframe_request_interval`` while ``needs_keyframe``. Must not block.
        :param clock: monotonic seconds for the rate limit; pass ``loop.time``.
        :param name: the stream, for logs.
        """
        self.name = name
        self._cache = GopCache(cache_max_bytes, cache_max_units)
        self._request_keyframe = request_keyframe
        self._interval = keyframe_request_interval
        self._clock = clock
        self._last_request: float | None = None
        self._subs: dict[_Consumer, None] = {}
        self._snapshot: tuple[_Consumer, ...] = ()  # what publish iterates; rebuilt on (un)subscribe
        self._waiting = 0  # consumers WAITING or SKIPPING
        self._closed_reason: str | None = None
        #: Units published, and keyframe requests made.
        self.published = 0
        self.keyframe_requests = 0

    @property
    def cache(self) -> GopCache:
        """The GOP cache: ``video_codec``, ``sps``, ``pps``, ``vps`` and ``resolution`` for ``DESCRIBE``."""
        return self._cache

    @property
    def consumers(self) -> int:
        return len(self._subs)

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    @property
    def needs_keyframe(self) -> bool:
        """Consumers wait for a keyframe of a video stream and none is cached."""
        return self._waiting > 0 and self._cache.video_codec is not None and not self._cache.has_keyframe

    def publish(self, au: AccessUnit) -> None:
        """Hand ``au`` to every consumer and the cache. Sync, O(consumers); ignored after ``close``."""
        if self._closed_reason is not None:
            return
        self.published += 1
        cache = self._cache
        codec = au.codec
        if codec.is_video:
            if codec is not cache.video_codec:
                self._video_codec_changed(codec)
            if au.keyframe:
                start = cache.start_gop(au)
                for sub in self._snapshot:
                    sub._keyframe(au, start)
                return
        elif cache.video_codec is None:
            for sub in self._snapshot:
                sub._passthrough(au)
            return
        cache.append(au)
        for sub in self._snapshot:
            sub._unit(au)
        if self._waiting and not cache.has_keyframe:
            self._maybe_request_keyframe()

    def subscribe(
        self,
        name: str,
        *,
        max_queue_units: int = DEFAULT_QUEUE_UNITS,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        on_ready: Callable[[], None] | None = None,
    ) -> Subscription:
        """A queued consumer, started on the cached GOP at once if there is one (and it fits the bounds)."""
        self._check_open()
        sub = Subscription(self, name, max_queue_units, max_queue_bytes, on_ready)
        self._start(sub)
        return sub

    def subscribe_callback(
        self,
        name: str,
        fn: Callable[[AccessUnit], bool | None],
        *,
        on_ready: Callable[[], None] | None = None,
        on_end: Callable[[str], None] | None = None,
    ) -> CallbackSubscription:
        """A synchronous consumer; the cached GOP is replayed into ``fn`` before this returns."""
        self._check_open()
        sub = CallbackSubscription(self, name, fn, on_ready, on_end)
        self._start(sub)
        return sub

    def close(self, reason: str) -> None:
        """End every subscription with ``reason`` and drop the cache. Idempotent."""
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        subs = self._snapshot
        self._subs = {}
        self._snapshot = ()
        for sub in subs:
            sub._end(reason)
        self._cache.clear()

    # -- internals

    def _check_open(self) -> None:
        if self._closed_reason is not None:
            raise StreamEnded(self._closed_reason)

    def _start(self, sub: _Consumer) -> None:
        self._subs[sub] = None
        self._snapshot = tuple(self._subs)
        self._waiting += 1  # WAITING
        cache = self._cache
        if cache.video_codec is None:
            if self.published:  # audio so far, no video: no gating (before any media the consumer waits)
                sub._go_live()
        elif cache.has_keyframe and sub._replay(cache.units, cache.nbytes):
            pass
        elif self.needs_keyframe:
            self._maybe_request_keyframe()

    def _remove(self, sub: _Consumer) -> None:
        if sub in self._subs:
            del self._subs[sub]
            self._snapshot = tuple(self._subs)

    def _video_codec_changed(self, codec: Codec) -> None:
        if self._cache.video_codec is not None:
            log.warning("video codec changed", stream=self.name, old=self._cache.video_codec.name, new=codec.name)
        self._cache.set_video_codec(codec)
        for sub in self._snapshot:
            if sub._state is _LIVE:
                sub._state = _WAITING
                self._waiting += 1

    def _maybe_request_keyframe(self) -> None:
        callback = self._request_keyframe
        if callback is None:
            return
        now = self._clock()
        if self._last_request is not None and now - self._last_request < self._interval:
            return
        self._last_request = now
        self.keyframe_requests += 1
        metrics.FANOUT_KEYFRAME_REQUESTS.inc()
        log.debug("requesting keyframe", stream=self.name, waiting=self._waiting)
        try:
            callback()
        except Exception:
            log.exception("keyframe request failed", stream=self.name)
