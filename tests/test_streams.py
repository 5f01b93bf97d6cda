"""Live streams end to end: the gateway INVITEs a simulated camera and receives PS over RTP, per transport."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest
from gw_util import make_config, running_gateway

from gateway.sim import SimConfig, Simulator
from gateway.streams import StreamError
from media.frames import Codec

pytestmark = pytest.mark.e2e


async def wait_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def config(tmp_path: Path, transport: str = "udp", **media: object):  # type: ignore[no-untyped-def]
    base = make_config(tmp_path, keepalive_interval=5)
    from dataclasses import replace

    from gateway.config import MediaConfig

    m = {"rtp_port_min": 31000, "rtp_port_max": 31999, "transport": transport, "invite_timeout": 3,
         "no_media_timeout": 3, "linger": 0.5}
    m.update(media)
    return replace(base, media=MediaConfig(**m))  # type: ignore[arg-type]


async def started(gw, **kw: object) -> Simulator:  # type: ignore[no-untyped-def]
    cfg = {"server": ("127.0.0.1", gw.sip.port), "devices": 1, "channels": 2, "keepalive_interval": 1, "t1": 0.1}
    cfg.update(kw)
    sim = Simulator(SimConfig(**cfg))  # type: ignore[arg-type]
    await sim.start()
    dev_id = sim.devices[0].device_id
    await wait_until(lambda: (d := gw.devices.get(dev_id)) is not None and d.rec.catalog_complete, 10)
    return sim


def decode(units: list, codec: Codec) -> int:  # type: ignore[type-arg]
    ctx = av.CodecContext.create("h264" if codec is Codec.H264 else "hevc", "r")
    frames = 0
    for au in units:
        for packet in ctx.parse(au.data):
            frames += len(ctx.decode(packet))
    return frames


@pytest.mark.parametrize("transport", ["udp", "udp-single", "tcp-passive", "tcp-active"])
async def test_live_stream_per_transport_decodes(tmp_path: Path, transport: str) -> None:
    async with running_gateway(config(tmp_path, transport)) as gw:
        sim = await started(gw)
        try:
            dev = sim.devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            units = []
            while len([u for u in units if u.codec.is_video]) < 30:
                units.append(await asyncio.wait_for(sub.get(), 5))
            video = [u for u in units if u.codec.is_video]
            assert video[0].keyframe
            assert decode(video, video[0].codec) >= 25
            pts = [u.pts for u in video]
            assert all(b > a for a, b in zip(pts, pts[1:], strict=False)) or pts[-1] < pts[0]  # monotonic (or wrapped)
            assert any(u.codec is Codec.G711A for u in units)
            # A second consumer shares the same INVITE.
            session2, sub2 = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 5)
            assert session2 is session
            first = await asyncio.wait_for(sub2.get(), 5)
            assert first.keyframe
            media = sim.device(channel).media  # type: ignore[union-attr]
            assert len(media.history) == 1  # one INVITE for both consumers (history holds every session)
            # Both leave: the stream lingers, then the device sees BYE.
            session.leave(sub)
            session2.leave(sub2)
            await wait_until(lambda: not media.sessions, timeout=5)
            await wait_until(lambda: gw.streams.sessions == {}, timeout=5)
        finally:
            await sim.stop()


async def test_device_that_sends_no_media_fails_with_reason(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path, no_media_timeout=1)) as gw:
        sim = await started(gw, no_media=True)
        try:
            dev = sim.devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            with pytest.raises(StreamError) as exc:
                await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            assert exc.value.http_status == 504
            assert "no_packets" in exc.value.reason or "no packets" in exc.value.reason
        finally:
            await sim.stop()


async def test_refused_invite_surfaces_device_status(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw, reject=486)
        try:
            dev = sim.devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            with pytest.raises(StreamError) as exc:
                await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            assert exc.value.status == 486
        finally:
            await sim.stop()


async def test_unanswered_invite_is_cancelled(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path, invite_timeout=0.5)) as gw:
        sim = await started(gw, answer_delay=3)
        try:
            dev = sim.devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            with pytest.raises(StreamError) as exc:
                await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            assert exc.value.http_status == 503
        finally:
            await sim.stop()


async def test_unknown_channel_404(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        with pytest.raises(StreamError) as exc:
            await gw.streams.open(None, "34020000001310999999")
        assert exc.value.http_status == 404


def _capture(name: str) -> Path:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / name
    if not path.exists():
        pytest.skip(f"../shared/data/{name} not present (test material lives beside the checkout)")
    return path


@pytest.mark.parametrize("transport", ["udp", "tcp-passive"])
async def test_hikvision_capture_replayed_by_simulator_comes_out_whole(tmp_path: Path, transport: str) -> None:
    capture = _capture("hikvision_h264_704x576_ps.lenpfx.rtp")
    async with running_gateway(config(tmp_path, transport)) as gw:
        sim = await started(gw, replay=str(capture), replay_speed=20.0)
        try:
            dev = sim.devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            units = []
            while len(units) < 1400:
                units.append(await asyncio.wait_for(sub.get(), 5))
            assert sum(u.keyframe for u in units) == 56
            assert decode(units, Codec.H264) >= 1390  # every frame decodes (the decoder may hold the last few)
            session.leave(sub)
        finally:
            await sim.stop()


async def test_stream_starting_mid_gop_asks_camera_for_keyframe(tmp_path: Path) -> None:
    # The Hikvision capture without its first 5 packets: the stream begins mid-GOP (a keyframe every ~55 packets,
    # 1 s); replayed at half speed, the next keyframe is ~1.8 s away: the gateway asks before it comes.
    capture = _capture("hikvision_h264_704x576_ps.lenpfx.rtp")
    data = capture.read_bytes()
    offset = 0
    for _ in range(5):
        offset += 2 + int.from_bytes(data[offset:offset + 2], "big")
    trimmed = tmp_path / "midgop.lenpfx.rtp"
    trimmed.write_bytes(data[offset:])
    async with running_gateway(config(tmp_path / "gw", no_media_timeout=8)) as gw:
        sim = await started(gw, replay=str(trimmed), replay_speed=0.5)
        commands: list[str] = []
        dev = sim.devices[0]

        def on_control(server, ev, doc) -> None:  # type: ignore[no-untyped-def]
            commands.append(doc.text("IFameCmd") or "")
            dev._ok(server, ev)

        dev.manscdp_handlers[("control", "devicecontrol")] = on_control
        try:
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 15)
            first = await asyncio.wait_for(sub.get(), 5)
            assert first.keyframe
            assert commands and commands[0] == "Send"  # asked while only mid-GOP packets arrived
            session.leave(sub)
        finally:
            await sim.stop()


async def test_device_bye_ends_stream_and_consumers_are_told(tmp_path: Path) -> None:
    from gateway.fanout import StreamEnded

    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw)
        try:
            dev = sim.devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            await asyncio.wait_for(sub.get(), 5)
            media = sim.device(channel).media  # type: ignore[union-attr]
            (live,) = media.sessions.values()
            assert await live.end_stream() == 200
            with pytest.raises(StreamEnded):
                for _ in range(1000):
                    await asyncio.wait_for(sub.get(), 5)
            await wait_until(lambda: gw.streams.sessions == {}, 5)
        finally:
            await sim.stop()


@pytest.mark.parametrize("option", ["change_ssrc", "wrong_ssrc"])
async def test_ssrc_other_than_offered_is_followed(tmp_path: Path, option: str) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw, **{option: True})
        try:
            dev = sim.devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            first = await asyncio.wait_for(sub.get(), 5)
            assert first.keyframe
            session.leave(sub)
        finally:
            await sim.stop()


async def test_loss_and_reorder_keep_the_stream_flowing(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw, loss=0.05, reorder=0.10)
        try:
            dev = sim.devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            video = 0
            while video < 60:  # 2.4 s of video keeps coming despite the damage
                au = await asyncio.wait_for(sub.get(), 5)
                video += au.codec.is_video
            live = next(iter(sim.device(channel).media.sessions.values()))  # type: ignore[union-attr]
            stats = session.receiver.stats()  # type: ignore[union-attr]
            assert live.packets_lost > 0 and live.packets_reordered > 0
            # What the receiver counted as lost is what the sender dropped (up to packets still in flight).
            assert abs(stats.lost - live.packets_lost) <= 3
            assert stats.reordered > 0
            session.leave(sub)
        finally:
            await sim.stop()


@pytest.mark.parametrize(("dialect", "attribute"), [("streamnumber", "streamnumber:1"),
                                                    ("streamprofile", "streamprofile:1"),
                                                    ("streamMode", "streamMode:SUB")])
async def test_substream_asked_in_the_device_dialect(tmp_path: Path, dialect: str, attribute: str) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw)
        dev = sim.devices[0]
        from dataclasses import replace

        # Per-device dialect from [media.dialects] overrides the default.
        gw.streams.config = replace(gw.streams.config, media=replace(
            gw.streams.config.media, dialects=((dev.device_id, dialect),)))
        try:
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel, substream=1), 10)
            live = next(iter(sim.device(channel).media.sessions.values()))  # type: ignore[union-attr]
            assert f"a={attribute}" in str(live.offer)
            assert str(session.key).endswith("?stream=sub")
            session.leave(sub)
        finally:
            await sim.stop()


@pytest.mark.parametrize(("offered", "answered"), [("tcp-passive", "udp"), ("udp", "tcp-passive"),
                                                   ("udp", "tcp-active")])
async def test_answer_with_another_transport_is_followed(tmp_path: Path, offered: str, answered: str) -> None:
    from gateway.sim.media import Misbehaviour

    async with running_gateway(config(tmp_path, offered)) as gw:
        sim = await started(gw)
        dev = sim.devices[0]
        try:
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            sim.device(channel).media.misbehave = Misbehaviour(answer_transport=answered)  # type: ignore[union-attr]
            session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            assert (await asyncio.wait_for(sub.get(), 5)).keyframe
            assert session.transport == answered
            session.leave(sub)
        finally:
            await sim.stop()


@pytest.mark.parametrize("transport", ["udp", "udp-single", "tcp-passive", "tcp-active"])
async def test_h265_with_audio(tmp_path: Path, transport: str) -> None:
    async with running_gateway(config(tmp_path, transport)) as gw:
        sim = await started(gw, codec="h265")
        try:
            dev = sim.devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            units = []
            while len([u for u in units if u.codec.is_video]) < 30:
                units.append(await asyncio.wait_for(sub.get(), 5))
            video = [u for u in units if u.codec.is_video]
            assert video[0].codec is Codec.H265 and video[0].keyframe
            assert decode(video, Codec.H265) >= 25
            assert any(u.codec is Codec.G711A for u in units)
            session.leave(sub)
        finally:
            await sim.stop()


async def test_answer_without_gb28181_sdp_fields(tmp_path: Path) -> None:
    from gateway.sim.media import Misbehaviour

    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw)
        try:
            dev = sim.devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            sim.device(channel).media.misbehave = Misbehaviour(omit_sdp_fields=True)  # type: ignore[union-attr]
            session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
            assert (await asyncio.wait_for(sub.get(), 5)).keyframe
            live = next(iter(sim.device(channel).media.sessions.values()))  # type: ignore[union-attr]
            assert "y=" not in str(live.answer)
            session.leave(sub)
        finally:
            await sim.stop()


async def test_gateway_shutdown_sends_bye_to_streaming_devices(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw)
        dev = sim.devices[0]
        channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
        session, sub = await asyncio.wait_for(gw.streams.open(dev.device_id, channel), 10)
        await asyncio.wait_for(sub.get(), 5)
        media = sim.device(channel).media  # type: ignore[union-attr]
        stopping = loop.time()
    try:  # the gateway has stopped: the device saw our BYE, promptly
        (ended,) = media.history
        assert ended.bye_received_at is not None and ended.bye_received_at - stopping < 5
    finally:
        await sim.stop()


async def test_demo_cameras_send_h264_h265_g711a_and_aac(tmp_path: Path) -> None:
    from gateway.app import DEMO_CHANNELS, DEMO_MEDIA, Gateway
    from gateway.sim.config import channel_id, device_ids
    from media.packetize import adts_config

    video_codecs = {"h264": Codec.H264, "h265": Codec.H265 if "libx265" in av.codecs_available else Codec.H264}
    audio_codecs = {"g711a": Codec.G711A, "aac": Codec.AAC}
    assert [(v, a) for v, a, _ in DEMO_MEDIA] == [("h264", "g711a"), ("h265", "g711a"), ("h264", "aac")]
    gw = Gateway(config(tmp_path), demo=True)
    await gw.start()
    try:
        ids = device_ids(SimConfig().first_id, len(DEMO_MEDIA))
        await wait_until(lambda: all((d := gw.devices.get(i)) is not None and d.rec.catalog_complete
                                     and len(d.channels) == DEMO_CHANNELS for i in ids), 10)

        async def watch(device_id: str, video: Codec, audio: Codec) -> list:  # type: ignore[type-arg]
            session, sub = await gw.streams.open(device_id, channel_id(device_id, DEMO_CHANNELS - 1))
            try:
                units = []
                while len([u for u in units if u.codec.is_video]) < 10 or not any(u.codec.is_audio for u in units):
                    units.append(await asyncio.wait_for(sub.get(), 5))
                assert session.fanout.cache.video_codec is video
                return units
            finally:
                session.leave(sub)

        wanted = [(video_codecs[v], audio_codecs[a]) for v, a, _ in DEMO_MEDIA]
        got = await asyncio.wait_for(asyncio.gather(*(watch(i, v, a) for i, (v, a) in zip(ids, wanted,
                                                                                              strict=True))), 30)
        for units, (video, audio), (_, _, rate) in zip(got, wanted, DEMO_MEDIA, strict=True):
            assert {u.codec for u in units if u.codec.is_video} == {video}
            assert {u.codec for u in units if u.codec.is_audio} == {audio}
            assert decode([u for u in units if u.codec.is_video], video) >= 5
            if audio is Codec.AAC:  # AAC-LC mono at the demo's rate, one ADTS frame per access unit
                assert {adts_config(u.data) for u in units if u.codec.is_audio} == {
                    bytes.fromhex("1588" if rate == 8000 else "1408")}
        # Let the streams linger out (BYE answered) before the demo cameras go: the demo stops first.
        await wait_until(lambda: gw.streams.sessions == {}, timeout=5)
    finally:
        await gw.stop()


def test_parse_substream_is_the_one_stream_parameter() -> None:
    from gateway.streams import parse_substream

    assert [parse_substream(v) for v in ("main", "sub", "MAIN", "Sub", "0", "1")] == [0, 1, 0, 1, 0, 1]
    for bad in ("", "2", "substream", "x" * 100):
        with pytest.raises(ValueError, match="stream must be main or sub"):
            parse_substream(bad)
