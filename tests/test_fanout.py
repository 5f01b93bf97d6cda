"""gateway.fanout: the bounded GOP cache, keyframe start, slow-consumer skips, keyframe requests (virtual clock),
audio-only pass-through, close, callback consumers, parameter sets from real PyAV-encoded keyframes, no leaks.

Synthetic access units carry fake Annex B payloads with the right NAL types; each has a distinct ``pts`` so that
tests can check order and consistency by timestamp.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from media_util import decode_video, encode_video
from prometheus_client import REGISTRY

from gateway.fanout import (
    CallbackSubscription,
    ConsumerState,
    FanOut,
    GopCache,
    StreamEnded,
    Subscription,
)
from media import h264, h265
from media.frames import AccessUnit, Codec

SC = b"\x00\x00\x00\x01"
FAKE_SPS = b"\x67\x42\xc0\x1e\xda\x02\x80"
FAKE_PPS = b"\x68\xce\x3c\x80"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stream:
    """Synthetic H.264 + G.711 access units with increasing pts."""

    def __init__(self) -> None:
        self.pts = 0

    def _next(self) -> int:
        self.pts += 3600
        return self.pts

    def key(self, size: int = 2000, params: bool = True) -> AccessUnit:
        body = SC + b"\x65" + b"\x88" * size
        data = (SC + FAKE_SPS + SC + FAKE_PPS + body) if params else body
        pts = self._next()
        return AccessUnit(Codec.H264, pts, pts, True, data)

    def p(self, size: int = 500) -> AccessUnit:
        pts = self._next()
        return AccessUnit(Codec.H264, pts, pts, False, SC + b"\x41" + b"\x9a" * size)

    def audio(self, size: int = 160) -> AccessUnit:
        pts = self._next()
        return AccessUnit(Codec.G711A, pts, pts, False, b"\xd5" * size)


def drain(sub: Subscription) -> list[AccessUnit]:
    out: list[AccessUnit] = []
    while (au := sub.get_nowait()) is not None:
        out.append(au)
    return out


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def s() -> Stream:
    return Stream()


# -- start on the cached keyframe --------------------------------------------------------------------------------


async def test_new_consumer_starts_on_cached_keyframe_at_once(s: Stream) -> None:
    fan = FanOut()
    gop = [s.key(), s.p(), s.audio(), s.p(), s.audio()]
    for au in gop:
        fan.publish(au)
    ready: list[str] = []
    sub = fan.subscribe("rtsp", on_ready=lambda: ready.append("ready"))
    assert ready == ["ready"] and sub.ready and sub.queued_units == len(gop)  # at once, before any await
    first = await sub.get()
    assert first is gop[0] and first.keyframe
    rest = [await sub.get() for _ in gop[1:]]
    assert rest == gop[1:]
    live = s.p()
    fan.publish(live)
    assert await asyncio.wait_for(sub.get(), 1) is live
    assert sub.delivered == len(gop) + 1 and sub.skipped == 0 and sub.skips == 0


async def test_a_new_keyframe_starts_a_new_gop(s: Stream) -> None:
    fan = FanOut()
    for au in (s.key(), s.p(), s.p()):
        fan.publish(au)
    k2, p = s.key(), s.p()
    fan.publish(k2)
    fan.publish(p)
    assert fan.cache.units == (k2, p) and fan.cache.gops == 2
    sub = fan.subscribe("late")
    assert drain(sub) == [k2, p]


async def test_pending_get_wakes_on_publish(s: Stream) -> None:
    fan = FanOut()
    sub = fan.subscribe("viewer")
    task = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not task.done()
    k = s.key()
    fan.publish(k)
    assert await asyncio.wait_for(task, 1) is k


async def test_async_iteration_in_order_until_close(s: Stream) -> None:
    fan = FanOut()
    units = [s.key(), s.p(), s.audio(), s.p()]
    sub = fan.subscribe("rec")
    got: list[AccessUnit] = []

    async def consume() -> None:
        async for au in sub:
            got.append(au)

    task = asyncio.create_task(consume())
    for au in units:
        fan.publish(au)
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    fan.close("bye")
    await asyncio.wait_for(task, 1)
    assert got == units and sub.reason == "bye"


async def test_second_get_while_one_is_pending_is_an_error() -> None:
    sub = FanOut().subscribe("x")
    task = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already pending"):
        await sub.get()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sub._waiter is None  # a cancelled get leaves nothing behind


# -- no cache: wait for the next keyframe, ask the device (rate-limited) ------------------------------------------


async def test_no_cache_waits_for_next_keyframe_and_requests_once_per_interval(s: Stream) -> None:
    clock = Clock()
    requests: list[float] = []
    fan = FanOut(request_keyframe=lambda: requests.append(clock.now), clock=clock)
    before = metric("gb28181_fanout_keyframe_requests_total")
    fan.publish(s.p())  # the stream began mid-GOP; nobody waits yet
    assert requests == [] and not fan.needs_keyframe
    sub = fan.subscribe("viewer")
    assert fan.needs_keyframe and not sub.ready and sub.state is ConsumerState.WAITING
    assert requests == [1000.0]  # asked at once
    task = asyncio.create_task(sub.get())
    for _ in range(20):  # P frames and audio within the window: no more requests, nothing delivered
        clock.now += 0.09
        fan.publish(s.p())
        fan.publish(s.audio())
    assert requests == [1000.0] and sub.queued_units == 0 and not task.done()
    fan.subscribe("another")  # a second waiting consumer does not bypass the rate limit
    assert requests == [1000.0]
    clock.now = 1002.0
    fan.publish(s.p())
    assert requests == [1000.0, 1002.0]
    k, p = s.key(), s.p()
    fan.publish(k)
    fan.publish(p)
    assert await asyncio.wait_for(task, 1) is k  # the first unit is the keyframe
    assert await sub.get() is p
    assert not fan.needs_keyframe and fan.keyframe_requests == 2
    assert metric("gb28181_fanout_keyframe_requests_total") - before == 2
    clock.now = 1010.0
    fan.publish(s.p())
    assert len(requests) == 2  # a keyframe is cached: nothing to ask


async def test_no_request_before_media_flows(s: Stream) -> None:
    calls: list[int] = []
    fan = FanOut(request_keyframe=lambda: calls.append(1), clock=Clock())
    sub = fan.subscribe("first")  # the session has only just sent INVITE
    assert calls == [] and not fan.needs_keyframe and not sub.ready
    k = s.key()
    fan.publish(k)
    assert drain(sub) == [k] and calls == []


async def test_failing_keyframe_request_does_not_break_publish(s: Stream) -> None:
    def boom() -> None:
        raise OSError("no route to device")

    fan = FanOut(request_keyframe=boom, clock=Clock())
    fan.publish(s.p())
    sub = fan.subscribe("v")
    k = s.key()
    fan.publish(k)
    assert drain(sub) == [k]


# -- slow consumers -----------------------------------------------------------------------------------------------


async def test_slow_consumer_is_bounded_and_skips_to_next_keyframe(s: Stream) -> None:
    clock = Clock()
    requests: list[float] = []
    fan = FanOut(request_keyframe=lambda: requests.append(clock.now), clock=clock)
    skipped_before = metric("gb28181_fanout_skipped_units_total")
    skips_before = metric("gb28181_fanout_skips_total")
    slow = fan.subscribe("slow", max_queue_units=10)
    fast = fan.subscribe("fast")
    fan.publish(s.key())
    for _ in range(60):
        fan.publish(s.p())
        fan.publish(s.audio())
        assert slow.queued_units <= 10
        drain(fast)
    assert slow.state is ConsumerState.SKIPPING and slow.queued_units == 0
    assert slow.skips == 1 and slow.skipped == 121  # the 10 it had queued (dropped), then all it passed over
    assert requests == []  # a GOP is cached: a slow viewer never makes the camera send extra keyframes
    assert fast.ready and fast.skips == 0
    k2 = s.key()
    after = [k2] + [s.p() if i % 2 else s.audio() for i in range(8)]
    for au in after:
        fan.publish(au)
    got = drain(slow)
    assert got == after  # consistent again: the keyframe, then everything after it in order
    assert [au.pts or 0 for au in got] == sorted(au.pts or 0 for au in got)
    assert slow.ready and slow.skips == 1
    assert metric("gb28181_fanout_skipped_units_total") - skipped_before == 121
    assert metric("gb28181_fanout_skips_total") - skips_before == 1


async def test_byte_bound_and_a_keyframe_that_overflows_restarts_at_once(s: Stream) -> None:
    fan = FanOut()
    sub = fan.subscribe("slow", max_queue_bytes=10_000)
    fan.publish(s.key(size=3000))
    fan.publish(s.p(size=3000))
    fan.publish(s.p(size=3000))
    assert sub.queued_bytes <= 10_000 and sub.ready
    k = s.key(size=3000)
    fan.publish(k)  # does not fit: the queue is dropped and the consumer restarts on this keyframe
    assert sub.skips == 1 and sub.ready and drain(sub) == [k]
    assert sub.skipped == 3


async def test_one_unit_larger_than_the_bound_still_fits_an_empty_queue(s: Stream) -> None:
    fan = FanOut()
    sub = fan.subscribe("tiny", max_queue_bytes=100)
    k = s.key(size=5000)
    fan.publish(k)
    assert sub.get_nowait() is k


async def test_consumer_may_skip_itself(s: Stream) -> None:
    fan = FanOut()
    sub = fan.subscribe("laggy")
    fan.publish(s.key())
    fan.publish(s.p())
    sub.skip()
    assert sub.queued_units == 0 and not sub.ready and sub.skips == 1
    fan.publish(s.p())
    k = s.key()
    fan.publish(k)
    assert drain(sub) == [k] and sub.skipped == 3


async def test_consumer_whose_bounds_cannot_hold_the_cached_gop_waits_for_the_next_keyframe(s: Stream) -> None:
    fan = FanOut()
    for au in (s.key(), s.p(), s.p(), s.p()):
        fan.publish(au)
    sub = fan.subscribe("small", max_queue_units=2)
    assert not sub.ready and sub.queued_units == 0
    k = s.key()
    fan.publish(k)
    assert drain(sub) == [k]


# -- the GOP cache stays bounded ------------------------------------------------------------------------------------


async def test_endless_gop_stays_under_max_bytes_and_resets(s: Stream) -> None:
    clock = Clock()
    requests: list[float] = []
    fan = FanOut(request_keyframe=lambda: requests.append(clock.now), clock=clock, cache_max_bytes=100_000)
    before = metric("gb28181_gop_cache_dropped_total", reason="max_bytes")
    fan.publish(s.key())
    peak = 0
    for _ in range(1000):  # ~500 kB of P frames and no keyframe
        fan.publish(s.p(size=500))
        peak = max(peak, fan.cache.nbytes)
    assert peak <= 100_000
    assert fan.cache.overflows >= 1 and metric("gb28181_gop_cache_dropped_total", reason="max_bytes") > before
    # after a reset the cache waits for a keyframe: P frames are not cached
    assert not fan.cache.has_keyframe and len(fan.cache) == 0 and fan.cache.nbytes == 0
    sub = fan.subscribe("late")
    assert not sub.ready and fan.needs_keyframe and requests == [clock.now]
    k = s.key()
    fan.publish(k)
    assert fan.cache.has_keyframe and drain(sub) == [k]


def test_gop_cache_unit_bound_and_oversized_keyframe(s: Stream) -> None:
    cache = GopCache(max_bytes=10_000, max_units=5)
    cache.set_video_codec(Codec.H264)
    cache.start_gop(s.key(size=100))
    for _ in range(4):
        cache.append(s.audio())
    assert len(cache) == 5
    cache.append(s.p())
    assert len(cache) == 0 and cache.overflows == 1 and not cache.has_keyframe
    cache.append(s.p())  # no GOP: ignored
    assert len(cache) == 0
    cache.start_gop(s.key(size=20_000))  # a keyframe alone beyond max_bytes is not cached
    assert not cache.has_keyframe and cache.nbytes == 0 and cache.overflows == 2
    with pytest.raises(ValueError):
        GopCache(max_bytes=0)


# -- audio-only ---------------------------------------------------------------------------------------------------


async def test_audio_only_passes_through_without_gating(s: Stream) -> None:
    fan = FanOut(request_keyframe=lambda: pytest.fail("no keyframe request for audio"), clock=Clock())
    ready: list[int] = []
    early = fan.subscribe("early", on_ready=lambda: ready.append(1))
    assert not early.ready  # no media yet
    first = [s.audio() for _ in range(5)]
    for au in first:
        fan.publish(au)
    assert early.ready and ready == [1]
    late = fan.subscribe("late", max_queue_units=3)
    assert late.ready and not fan.needs_keyframe
    rest = [s.audio() for _ in range(5)]
    for au in rest:
        fan.publish(au)
    assert drain(early) == first + rest
    # the late consumer overflowed: its queue was dropped, and delivery went on without waiting
    assert late.skips == 1 and drain(late) == rest[3:]
    assert len(fan.cache) == 0 and fan.cache.video_codec is None


async def test_first_video_gates_consumers_of_an_audio_stream_on_a_keyframe(s: Stream) -> None:
    fan = FanOut()
    sub = fan.subscribe("v")
    a = s.audio()
    fan.publish(a)
    fan.publish(s.p())  # video appears mid-GOP
    a2 = s.audio()
    fan.publish(a2)
    assert not sub.ready
    k = s.key()
    fan.publish(k)
    assert drain(sub) == [a, k]  # the audio queued before video stays; then the keyframe


async def test_video_codec_change_resets_cache_and_gates(s: Stream) -> None:
    fan = FanOut()
    sub = fan.subscribe("v")
    fan.publish(s.key())
    drain(sub)
    assert fan.cache.sps == FAKE_SPS
    h265_p = AccessUnit(Codec.H265, 1, 1, False, SC + b"\x02\x01" + b"\x00\x11" * 10)
    fan.publish(h265_p)
    assert fan.cache.video_codec is Codec.H265 and fan.cache.sps is None and not fan.cache.has_keyframe
    assert not sub.ready and sub.queued_units == 0


# -- close --------------------------------------------------------------------------------------------------------


async def test_close_ends_every_subscription_with_the_reason(s: Stream) -> None:
    fan = FanOut()
    ended: list[str] = []
    waiting = fan.subscribe("waiting")
    queued = fan.subscribe("queued")
    cb = fan.subscribe_callback("rtp", lambda au: None, on_end=ended.append)
    task = asyncio.create_task(waiting.get())
    await asyncio.sleep(0)
    fan.publish(s.key())
    assert await task is not None
    task = asyncio.create_task(waiting.get())
    await asyncio.sleep(0)
    fan.close("device_bye")
    with pytest.raises(StreamEnded) as exc:
        await asyncio.wait_for(task, 1)
    assert exc.value.reason == "device_bye"
    with pytest.raises(StreamEnded, match="device_bye"):
        await queued.get()  # queued units are discarded at close
    assert queued.queued_units == 0 and queued.closed and queued.reason == "device_bye"
    assert ended == ["device_bye"] and cb.closed
    assert fan.closed and fan.consumers == 0 and len(fan.cache) == 0
    fan.publish(s.key())  # ignored
    with pytest.raises(StreamEnded, match="device_bye"):
        fan.subscribe("too late")
    fan.close("again")  # idempotent
    assert queued.reason == "device_bye"


async def test_unsubscribe(s: Stream) -> None:
    fan = FanOut()
    with fan.subscribe("a") as a:
        fan.publish(s.key())
        assert fan.consumers == 1
    assert a.closed and a.reason == "unsubscribed" and fan.consumers == 0
    with pytest.raises(StreamEnded, match="unsubscribed"):
        a.get_nowait()
    a.close()  # idempotent


# -- sharing ------------------------------------------------------------------------------------------------------


async def test_two_consumers_share_one_publish(s: Stream) -> None:
    fan = FanOut()
    a = fan.subscribe("rtsp")
    got_cb: list[AccessUnit] = []
    fan.subscribe_callback("rtp", got_cb.append)
    b = fan.subscribe("webrtc")
    units = [s.key(), s.p(), s.audio()]
    for au in units:
        fan.publish(au)
    got_a, got_b = drain(a), drain(b)
    assert got_a == got_b == got_cb == units
    assert all(x is y for x, y in zip(got_a, got_b, strict=True))  # the same objects, never copied
    assert fan.published == 3 and fan.consumers == 3


# -- callback consumers ---------------------------------------------------------------------------------------------


async def test_callback_consumer_replay_skip_and_resume(s: Stream) -> None:
    fan = FanOut()
    gop = [s.key(), s.p(), s.audio()]
    for au in gop:
        fan.publish(au)
    got: list[AccessUnit] = []
    ready: list[int] = []
    sub = fan.subscribe_callback("rtp", got.append, on_ready=lambda: ready.append(len(got)))
    assert isinstance(sub, CallbackSubscription)
    assert got == gop and ready == [0]  # replayed before subscribe_callback returned, on_ready first
    live = s.p()
    fan.publish(live)
    assert got[-1] is live
    sub.skip()  # e.g. from the transport's pause_writing()
    for _ in range(3):
        fan.publish(s.p())
    assert len(got) == 4 and sub.skipped == 3 and not sub.ready
    k = s.key()
    fan.publish(k)
    assert got[-1] is k and ready == [0, 4] and sub.delivered == 5


async def test_callback_that_refuses_a_unit_during_replay(s: Stream) -> None:
    fan = FanOut()
    for au in (s.key(), s.p(), s.p()):
        fan.publish(au)
    got: list[AccessUnit] = []

    def congested(au: AccessUnit) -> bool:
        if got:
            return False  # the socket buffer is full: this unit is not taken
        got.append(au)
        return True

    sub = fan.subscribe_callback("rtp", congested)
    assert len(got) == 1 and sub.state is ConsumerState.SKIPPING  # the replay stopped there
    assert sub.delivered == 1 and sub.skipped == 1 and sub.skips == 1
    fan.publish(s.p())
    assert sub.skipped == 2
    got.clear()
    k = s.key()
    fan.publish(k)
    assert got == [k] and sub.ready


async def test_failing_callback_is_unsubscribed_and_others_continue(s: Stream) -> None:
    fan = FanOut()

    def bad(au: AccessUnit) -> None:
        if not au.keyframe:
            raise ValueError("bug")

    ended: list[str] = []
    cb = fan.subscribe_callback("bad", bad, on_end=ended.append)
    good = fan.subscribe("good")
    units = [s.key(), s.p(), s.p()]
    for au in units:
        fan.publish(au)
    assert cb.closed and cb.reason == "consumer_error" and ended == ["consumer_error"]
    assert drain(good) == units and fan.consumers == 1


# -- parameter sets from real encoders -------------------------------------------------------------------------------


def _strip(data: bytes, keep: Iterator[int] | set[int], codec: str) -> bytes:
    """Re-join the NAL units of ``data`` whose type is in ``keep``."""
    out = b""
    for nal in h264.split_annexb(data):
        t = nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F
        if t in keep:
            out += SC + bytes(nal)
    return out


async def test_parameter_sets_from_a_real_h264_keyframe() -> None:
    frames = encode_video("libx264", width=320, height=240, frames=12, gop=10)
    fan = FanOut()
    aus = [AccessUnit(Codec.H264, f.pts, f.dts, f.keyframe, f.data) for f in frames]
    live = fan.subscribe("live")
    fan.publish(aus[0])
    sps, pps = h264.parameter_sets(frames[0].data)
    cache = fan.cache
    assert cache.video_codec is Codec.H264 and cache.sps == sps and cache.pps == pps and cache.vps is None
    assert cache.resolution == (320, 240) and cache.units[0] is aus[0]  # it had its parameter sets: not copied
    for au in aus[1:10]:
        fan.publish(au)
    # a keyframe without in-band SPS/PPS (IDR slices only): consumers starting there get them put in front
    k = aus[10]
    assert k.keyframe
    bare = AccessUnit(Codec.H264, k.pts, k.dts, True, _strip(k.data, {h264.NalType.IDR}, "h264"))
    assert h264.parameter_sets(bare.data) == (None, None)
    fan.publish(bare)
    assert drain(live) == [*aus[:10], bare]  # a consumer already live gets the keyframe unchanged
    late = fan.subscribe("late")
    start = late.get_nowait()
    assert start is not None and start.keyframe and start.pts == bare.pts
    assert h264.nal_types(start.data)[:3] == [h264.NalType.SPS, h264.NalType.PPS, h264.NalType.IDR]
    assert start.data.endswith(bare.data)
    fan.publish(aus[11])
    sizes, errors = decode_video("h264", [start.data, aus[11].data])
    assert errors == 0 and sizes == [(320, 240)] * 2


def test_parameter_sets_after_an_access_unit_delimiter() -> None:
    cache = GopCache()
    cache.set_video_codec(Codec.H264)
    cache.start_gop(AccessUnit(Codec.H264, 0, 0, True, SC + FAKE_SPS + SC + FAKE_PPS + SC + b"\x65\x88"))
    aud = SC + b"\x09\xf0"
    start = cache.start_gop(AccessUnit(Codec.H264, 1, 1, True, aud + SC + b"\x65\x88"))
    assert h264.nal_types(start.data) == [9, 7, 8, 5]
    # in-band parameter sets in a non-keyframe unit (after an AUD) are remembered too
    new_pps = b"\x68\xce\x3c\x81"
    cache.append(AccessUnit(Codec.H264, 2, 2, False, aud + SC + new_pps + SC + b"\x41\x9a"))
    assert cache.pps == new_pps


async def test_parameter_sets_from_a_real_h265_keyframe() -> None:
    frames = encode_video("libx265", width=320, height=240, frames=3, gop=10)
    fan = FanOut()
    k = frames[0]
    fan.publish(AccessUnit(Codec.H265, k.pts, k.dts, True, k.data))
    vps, sps, pps = h265.parameter_sets(k.data)
    assert (fan.cache.vps, fan.cache.sps, fan.cache.pps) == (vps, sps, pps) and vps is not None
    assert fan.cache.resolution == (320, 240)
    bare = _strip(k.data, set(range(32)), "h265")  # VCL NAL units only
    start = fan.cache.start_gop(AccessUnit(Codec.H265, k.pts, k.dts, True, bare))
    assert h265.nal_types(start.data)[:3] == [h265.NalType.VPS, h265.NalType.SPS, h265.NalType.PPS]
    sizes, errors = decode_video("hevc", [start.data])
    assert errors == 0 and sizes == [(320, 240)]


# -- no residue -------------------------------------------------------------------------------------------------------


async def test_many_subscribe_unsubscribe_cycles_leave_no_residue(s: Stream) -> None:
    clock = Clock()
    fan = FanOut(request_keyframe=lambda: None, clock=clock)
    keep = fan.subscribe("steady")
    refs: list[weakref.ref[object]] = []
    for i in range(1000):
        if i % 50 == 0:
            fan.publish(s.key())
        fan.publish(s.p() if i % 3 else s.audio())
        if i % 4 == 0:
            sub: Subscription | CallbackSubscription = fan.subscribe_callback(f"cb{i}", lambda au: None)
        else:
            sub = fan.subscribe(f"q{i}", max_queue_units=5 if i % 5 == 0 else 4096)
            if i % 7 == 0:  # some leave with a get() pending
                task = asyncio.create_task(sub.get())
                await asyncio.sleep(0)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if i % 2:
            fan.publish(s.p())
        refs.append(weakref.ref(sub))
        sub.close()
        drain(keep)
    del sub
    gc.collect()
    assert fan.consumers == 1 and fan._waiting == 0 and fan._snapshot == (keep,)
    assert all(r() is None for r in refs)  # nothing holds a closed subscription
    keep.close()
    assert fan.consumers == 0 and fan._waiting == 0 and not fan.needs_keyframe
