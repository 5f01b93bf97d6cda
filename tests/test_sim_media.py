"""The simulator's media: INVITE answered, PS over RTP streamed (UDP, TCP active, TCP passive), misbehaviour on request.

The test plays the platform with our own SipServer + SipRouter on 127.0.0.1: it answers REGISTER 200 (no digest:
the registry is tested elsewhere), builds INVITEs with ``media.sdp.gb28181_offer``, ACKs 2xx with
``Dialog.from_uac(...).create_ack`` and receives the RTP on real sockets, demuxing it with ``media.ps.PsDemuxer``
and decoding the video with PyAV. Clips are 2 s long and streams run a second or two.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from media_util import HIKVISION, capture, decode_video, have_encoder, rtp_packets

from gateway.config import SipConfig
from gateway.sim import SimConfig, Simulator
from gateway.sim.cli import _parser, config_from_args, main
from gateway.sim.media import MediaSession, MediaTransport, Misbehaviour, SessionState
from gateway.sim.source import CLOCK, CaptureSource, ClipSource, ClipSpec, _tone, get_clip
from gateway.sip_router import SipRouter
from gateway.sip_transport import SipServer
from media import sdp
from media.frames import AccessUnit, Codec
from media.packetize import adts_config
from media.ps import PsDemuxer
from media.rtp import Rfc4571Decoder, RtpError, parse_rtp
from sip.dialog import Dialog
from sip.endpoint import Peer, RequestReceived, ResponseReceived, SipEvent, Transport
from sip.message import NameAddr, SipRequest, SipResponse, SipUri, Via, build_request, build_response

pytestmark = pytest.mark.e2e

PLATFORM_ID = "34020000002000000001"
DOMAIN = "3402000000"
DEVICE = "34020000001320000001"
CHANNEL = "34020000001310001001"
CHANNEL2 = "34020000001310001002"
SSRC = 340201234  # "0340201234": live, domain digits 40201, stream 1234
GRACE = 0.3
"""Seconds to let packets in flight land after a stream stopped."""


# --------------------------------------------------------------------------------------------------- receivers
Rtp = tuple[int, bool, int, int, int, bytes]
"""(pt, marker, seq, ts, ssrc, payload)"""


def rtp(data: bytes) -> Rtp:
    pt, marker, seq, ts, ssrc, off, end = parse_rtp(data)
    return pt, marker, seq, ts, ssrc, data[off:end]


class Sink:
    """Where the test receives media: ``(arrival loop time, packet)`` for each UDP datagram or RFC 4571 frame."""

    def __init__(self) -> None:
        self.items: list[tuple[float, bytes]] = []
        self.port = 0
        self.connections = 0
        self.closed = asyncio.Event()
        self._transports: list[asyncio.BaseTransport] = []
        self._server: asyncio.Server | None = None

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    @classmethod
    async def udp(cls) -> Sink:
        sink = cls()
        loop = asyncio.get_running_loop()
        sink_ref = sink

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
                sink_ref.items.append((sink_ref._now(), data))

        transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sink._transports.append(transport)
        sink.port = transport.get_extra_info("sockname")[1]
        return sink

    def _stream_protocol(self) -> asyncio.Protocol:
        sink = self

        class Proto(asyncio.Protocol):
            def __init__(self) -> None:
                self.decoder = Rfc4571Decoder()

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sink.connections += 1
                sink._transports.append(transport)

            def data_received(self, data: bytes) -> None:
                now = sink._now()
                sink.items.extend((now, bytes(frame)) for frame in self.decoder.feed(data))

            def connection_lost(self, exc: Exception | None) -> None:
                sink.closed.set()

        return Proto()

    @classmethod
    async def tcp_listen(cls) -> Sink:
        """The platform listens (offer ``a=setup:passive``): the device connects here."""
        sink = cls()
        sink._server = await asyncio.get_running_loop().create_server(sink._stream_protocol, "127.0.0.1", 0)
        sink.port = sink._server.sockets[0].getsockname()[1]
        return sink

    async def tcp_connect(self, port: int) -> None:
        """The platform connects (offer ``a=setup:active``) to the port of the device's answer."""
        await asyncio.get_running_loop().create_connection(self._stream_protocol, "127.0.0.1", port)

    def drop_connections(self) -> None:
        for t in self._transports:
            t.close()

    def close(self) -> None:
        self.drop_connections()
        if self._server is not None:
            self._server.close()

    def rtp(self) -> list[Rtp]:
        """The packets that parse as RTP."""
        out = []
        for _, data in self.items:
            try:
                out.append(rtp(data))
            except RtpError:
                continue
        return out

    def count_after(self, t: float) -> int:
        return sum(1 for at, _ in self.items if at > t)


def demux(packets: list[Rtp]) -> tuple[list[AccessUnit], list[AccessUnit], PsDemuxer]:
    demuxer = PsDemuxer()
    units: list[AccessUnit] = []
    for _, marker, _, _, _, payload in packets:
        units += demuxer.feed(payload, marker)
    units += demuxer.flush()
    return [u for u in units if u.codec.is_video], [u for u in units if u.codec.is_audio], demuxer


@dataclass
class Decoded:
    pcm: npt.NDArray[np.int32]
    rate: int

    def __len__(self) -> int:
        return len(self.pcm)


def decode_audio(decoder: str, frames: list[bytes]) -> Decoded:
    """Decode ``frames`` (one packet each) with PyAV: mono samples as 16-bit integers, and the sample rate."""
    import av

    ctx: Any = av.CodecContext.create(decoder, "r")
    if decoder.startswith("pcm_"):
        ctx.sample_rate = 8000
        ctx.layout = "mono"
    out: list[npt.NDArray[np.int32]] = []
    rate = 0
    for data in frames:
        for frame in ctx.decode(av.Packet(data)):
            samples = frame.to_ndarray()[0]
            if samples.dtype.kind == "f":
                samples = samples * 32768
            out.append(samples.astype(np.int32))
            rate = frame.sample_rate
    return Decoded(np.concatenate(out), rate)


def adts_frame_length(data: bytes) -> int:
    return ((data[3] & 0x03) << 11) | (data[4] << 3) | (data[5] >> 5)


def seq_gaps(seqs: list[int]) -> int:
    return sum((b - a - 1) & 0xFFFF for a, b in itertools.pairwise(seqs))


# --------------------------------------------------------------------------------------------------- the platform
@dataclass
class Call:
    invite: SipRequest
    peer: Peer
    response: SipResponse
    answer: sdp.SessionDescription | None = None
    dialog: Dialog | None = None


@dataclass
class Platform:
    server: SipServer | None = None
    byes: list[tuple[float, SipRequest]] = field(default_factory=list)
    events: list[tuple[float, SipEvent]] = field(default_factory=list)
    _tags: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> None:
        router = SipRouter()
        router.on_method("REGISTER", self._on_register)
        router.on_method("BYE", self._on_bye)
        router.on_event(lambda _server, ev: self.events.append((self._now(), ev)))
        self.server = SipServer(SipConfig(port=0, t1=0.1, source_rate_limit=0), router)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _on_register(self, server: SipServer, ev: RequestReceived) -> None:
        server.respond(build_response(ev.request, 200, to_tag="p", headers=[("Expires", "3600")]))

    def _on_bye(self, server: SipServer, ev: RequestReceived) -> None:
        self.byes.append((self._now(), ev.request))
        server.respond(build_response(ev.request, 200))

    def via(self, transport: Transport) -> Via:
        assert self.server is not None
        return Via(transport=transport.value, host="127.0.0.1", port=self.port,
                   params=(("rport", None), ("branch", self.server.endpoint.new_branch())))

    def invite_request(self, sim: Simulator, offer: sdp.SessionDescription, *, channel: str = CHANNEL,
                       transport: Transport = Transport.UDP) -> tuple[SipRequest, Peer]:
        assert self.server is not None
        ssrc = offer.y or "0"
        req = build_request(
            "INVITE", SipUri(host="127.0.0.1", port=sim.port, user=channel), via=self.via(transport),
            from_=NameAddr(SipUri(host=DOMAIN, user=PLATFORM_ID), params=(("tag", f"t{next(self._tags)}"),)),
            to=NameAddr(SipUri(host=DOMAIN, user=channel)), call_id=self.server.endpoint.new_call_id(), cseq=20,
            body=bytes(offer), content_type="Application/SDP",
            headers=[("Contact", f"<sip:{PLATFORM_ID}@127.0.0.1:{self.port}>"),
                     ("Subject", f"{channel}:{ssrc},{PLATFORM_ID}:0")],
        )
        return req, Peer(transport, ("127.0.0.1", sim.port))

    async def invite(self, sim: Simulator, offer: sdp.SessionDescription, *, channel: str = CHANNEL,
                     transport: Transport = Transport.UDP, ack: bool = True) -> Call:
        """INVITE, wait for the final answer, ACK a 2xx."""
        assert self.server is not None
        req, peer = self.invite_request(sim, offer, channel=channel, transport=transport)
        resp = await asyncio.wait_for(self.server.request(req, peer), 30)
        call = Call(req, peer, resp)
        if 200 <= resp.status < 300:
            call.answer = sdp.parse(resp.body)
            call.dialog = Dialog.from_uac(req, resp)
            if ack:
                self.server.send(call.dialog.create_ack(resp, self.via(transport)), peer)
        return call

    async def bye(self, call: Call) -> int:
        assert self.server is not None and call.dialog is not None
        bye = call.dialog.create_request("BYE", self.via(call.peer.transport))
        return (await asyncio.wait_for(self.server.request(bye, call.peer), 30)).status


def offer_for(transport: MediaTransport, port: int, ssrc: int = SSRC) -> sdp.SessionDescription:
    if transport is MediaTransport.UDP:
        return sdp.gb28181_offer(platform_id=PLATFORM_ID, media_ip="127.0.0.1", port=port, ssrc=ssrc)
    setup = sdp.SetupRole.PASSIVE if transport is MediaTransport.TCP_PASSIVE else sdp.SetupRole.ACTIVE
    return sdp.gb28181_offer(platform_id=PLATFORM_ID, media_ip="127.0.0.1", port=port, ssrc=ssrc,
                             transport=sdp.Transport.TCP, setup=setup)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    p = Platform()
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


MakeSim = Callable[..., Awaitable[Simulator]]


@pytest.fixture
async def make_sim(platform: Platform) -> AsyncIterator[MakeSim]:
    sims: list[Simulator] = []

    async def make(**kw: object) -> Simulator:
        base: dict[str, object] = dict(server=("127.0.0.1", platform.port), channels=2, keepalive_interval=30.0,
                                       register_rate=1000.0, t1=0.05, unregister_timeout=2.0, seed=7,
                                       clip_seconds=2)
        base.update(kw)
        sim = Simulator(SimConfig(**base))  # type: ignore[arg-type]
        await sim.start()
        sims.append(sim)
        assert await sim.wait_registered(timeout=10)
        return sim

    yield make
    for sim in sims:
        await sim.stop()


async def start_stream(platform: Platform, sim: Simulator, transport: MediaTransport,
                       *, ssrc: int = SSRC) -> tuple[Call, Sink, MediaSession]:
    """INVITE for ``transport``, ACK, set up the receiving side; returns once the device reports media flowing."""
    sink = await (Sink.udp() if transport is MediaTransport.UDP else Sink.tcp_listen())
    call = await platform.invite(sim, offer_for(transport, sink.port if transport is not MediaTransport.TCP_ACTIVE
                                                else 9, ssrc))
    assert call.response.status == 200, call.response
    assert call.answer is not None
    if transport is MediaTransport.TCP_ACTIVE:
        await sink.tcp_connect(call.answer.media_port)
    session = sim.device(CHANNEL).media.find(call.invite.call_id)
    assert session is not None
    assert await session.wait_streaming(10)
    return call, sink, session


# --------------------------------------------------------------------------------------------------- the source
@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_clip_encoded_once_decodes(codec: str) -> None:
    if not have_encoder("lib" + codec.replace("h", "x")):
        pytest.skip(f"PyAV has no lib{codec.replace('h', 'x')} encoder")
    spec = ClipSpec(codec=codec, seconds=2)
    clip = get_clip(spec)
    assert get_clip(ClipSpec(codec=codec, seconds=2)) is clip  # cached: paid once per process
    video = [u for u in clip.units if u.codec.is_video]
    audio = [u for u in clip.units if u.codec.is_audio]
    assert clip.video_frames == len(video) == 50 and clip.audio_frames == len(audio) == 50
    assert clip.duration == 2 * CLOCK
    assert [i for i, u in enumerate(video) if u.keyframe] == [0, 25]  # GOP = fps
    assert [u.pts for u in video] == [i * 3600 for i in range(50)]
    assert all(u.dts == u.pts for u in video)  # no B-frames
    assert all(u.codec is Codec.G711A and len(u.data) == 320 for u in audio)  # 40 ms at 8 kHz
    sizes, errors = decode_video("h264" if codec == "h264" else "hevc", [u.data for u in video])
    assert errors == 0 and sizes == [(320, 240)] * 50
    # Parameter sets in-band before every keyframe: decoding can start at the second GOP.
    sizes, errors = decode_video("h264" if codec == "h264" else "hevc", [u.data for u in video[25:]])
    assert errors == 0 and len(sizes) == 25


def test_clip_spec_limits() -> None:
    with pytest.raises(ValueError, match="640x360"):
        ClipSpec(width=1280, height=720)
    with pytest.raises(ValueError, match="audio_frame_ms"):
        ClipSpec(audio_frame_ms=30)
    with pytest.raises(ValueError, match="size = 640x480"):
        SimConfig(width=640, height=480)
    with pytest.raises(ValueError, match="loss = 1.5"):
        SimConfig(loss=1.5)
    with pytest.raises(ValueError, match="reject = 200"):
        Misbehaviour(reject=200)


def test_clip_source_loops_with_continuous_timestamps() -> None:
    clip = get_clip(ClipSpec(seconds=1, fps=10, audio_frame_ms=20))
    bursts = ClipSource(clip, max_payload=500).bursts(1234, seq=65530, pts_base=(1 << 32) - 3 * 9000)
    taken = [next(bursts) for _ in range(125)]  # 2.5 loops: 50 bursts (10 video, 50 audio at 20 ms) per second
    assert [b.at for b in taken[:3]] == [0.0, 0.02, 0.04]
    assert all(abs(b.at - i * 0.02) < 1e-9 for i, b in enumerate(taken))
    assert sum(b.video_frames for b in taken) == 25 and sum(b.audio_frames for b in taken) == 125
    packets = [rtp(p) for b in taken for p in b.packets]
    assert all(p[4] == 1234 and p[0] == 96 for p in packets)
    seqs = [p[2] for p in packets]
    assert seqs[0] == 65530 and seq_gaps(seqs) == 0  # wrapping at 2**16
    ts = [p[3] for p in packets]
    steps = {(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(ts)}
    assert steps <= {0, 1800}  # 20 ms steps, wrapping at 2**32, continuous across loops
    video, audio, _ = demux(packets)
    assert len(video) == 25 and len(audio) == 125
    assert all((b.pts - a.pts) % (1 << 33) == 9000 for a, b in itertools.pairwise(video))


@pytest.mark.parametrize(("audio", "rate", "codec", "frames", "step"), [
    ("g711a", 8000, Codec.G711A, 50, 3600),  # 40 ms units
    ("g711u", 8000, Codec.G711U, 50, 3600),
    ("aac", 8000, Codec.AAC, 15, 11520),  # whole 1024-sample frames in 2 s: 128 ms at 8 kHz
    ("aac", 16000, Codec.AAC, 31, 5760),  # 64 ms at 16 kHz
    ("none", 8000, None, 0, 0),
])
def test_clip_audio_codecs_through_ps(audio: str, rate: int, codec: Codec | None, frames: int, step: int) -> None:
    clip = get_clip(ClipSpec(seconds=2, fps=10, audio=audio, audio_rate=rate))
    units = [u for u in clip.units if u.codec.is_audio]
    assert clip.spec.audio_codec is codec and clip.audio_frames == len(units) == frames
    assert all(u.codec is codec and u.keyframe for u in units)
    assert [u.pts for u in units] == [k * step for k in range(frames)]
    # One loop through PsMuxer + PsRtpPacketizer (ClipSource), back through our PsDemuxer: the same units.
    bursts = ClipSource(clip, max_payload=1400).bursts(1234)
    taken = [next(bursts) for _ in range(len({u.pts for u in clip.units}))]
    assert sum(b.audio_frames for b in taken) == frames and sum(b.video_frames for b in taken) == 20
    video, audio_out, demuxer = demux([rtp(p) for b in taken for p in b.packets])
    assert len(video) == 20 and demuxer.video_codec is Codec.H264
    assert demuxer.audio_codec is codec
    assert [(u.codec, u.pts, u.data) for u in audio_out] == [(u.codec, u.pts, u.data) for u in units]
    if codec is Codec.AAC:
        # One ADTS frame per access unit (AAC-LC, mono, the clip's rate), and PyAV decodes them all.
        assert all(u.data[:2] == b"\xff\xf1" and adts_frame_length(u.data) == len(u.data) for u in audio_out)
        assert adts_config(audio_out[0].data) == (bytes.fromhex("1588") if rate == 8000 else bytes.fromhex("1408"))
        decoded = decode_audio("aac", [u.data for u in audio_out])
        assert len(decoded) == frames * 1024 and decoded.rate == rate
    elif codec is not None:
        # G.711 A-law and mu-law, each decoding back to the clip's tone within the law's quantisation error.
        decoded = decode_audio("pcm_alaw" if codec is Codec.G711A else "pcm_mulaw", [u.data for u in audio_out])
        assert decoded.rate == 8000 and len(decoded) == frames * 320
        assert int(np.max(np.abs(decoded.pcm - _tone(len(decoded)).astype(np.int32)))) < 400


def test_clip_audio_choices() -> None:
    assert ClipSpec(audio=True) == ClipSpec() and ClipSpec().audio == "g711a"  # type: ignore[arg-type]
    assert ClipSpec(audio=False).audio == "none" and ClipSpec(audio=False).audio_codec is None  # type: ignore[arg-type]
    assert SimConfig(audio=False).audio == "none" and SimConfig().audio == "g711a"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="audio = 'opus': expected g711a, g711u, aac or none"):
        ClipSpec(audio="opus")
    with pytest.raises(ValueError, match="audio_rate = 16000: expected 8000 for g711u"):
        ClipSpec(audio="g711u", audio_rate=16000)
    with pytest.raises(ValueError, match="audio = 'mp3'"):
        SimConfig(audio="mp3")
    with pytest.raises(ValueError, match="audio_rate = 44100: expected 8000 or 16000 for aac"):
        SimConfig(audio="aac", audio_rate=44100)
    assert SimConfig(audio="none", audio_rate=16000).audio_rate == 16000  # no audio: the rate is not looked at
    assert ClipSource(get_clip(ClipSpec(seconds=1, fps=5, audio="aac", audio_rate=16000))).description \
        == "h264 320x240@5 + AAC 16 kHz"


# --------------------------------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("codec", ["h264", "h265"])
@pytest.mark.parametrize("transport", list(MediaTransport))
async def test_stream(platform: Platform, make_sim: MakeSim, transport: MediaTransport, codec: str) -> None:
    if not have_encoder("lib" + codec.replace("h", "x")):
        pytest.skip(f"PyAV has no lib{codec.replace('h', 'x')} encoder")
    sim = await make_sim(codec=codec)
    call, sink, session = await start_stream(platform, sim, transport)
    try:
        answer = call.answer
        assert answer is not None
        assert answer.direction is sdp.Direction.SENDONLY and answer.ssrc == SSRC
        assert answer.payload_types == (96,) and answer.media_ip == "127.0.0.1"
        assert answer.media_port == session.local_port
        info = answer.media_info
        assert info is not None and info.video_codec == ("2" if codec == "h264" else "5")
        assert info.resolution == "320x240" and info.audio_codec == "1"
        if transport is MediaTransport.UDP:
            assert answer.transport is sdp.Transport.UDP
        else:
            assert answer.transport is sdp.Transport.TCP and answer.connection_mode == "new"
            assert answer.setup is (sdp.SetupRole.ACTIVE if transport is MediaTransport.TCP_PASSIVE
                                    else sdp.SetupRole.PASSIVE)
            assert sink.connections == 1
        assert session.transport is transport and session.state is SessionState.STREAMING
        await asyncio.sleep(1.5)
        assert await platform.bye(call) == 200
        stopped = asyncio.get_running_loop().time()
        assert await session.wait_ended(5)
        await asyncio.sleep(GRACE)
    finally:
        sink.close()
    assert session.end_reason == "bye" and session.bye_received_at is not None
    assert sink.count_after(stopped + GRACE / 2) == 0  # nothing after the BYE
    packets = sink.rtp()
    assert len(packets) == session.packets_sent == session.rtp_packets > 0
    assert {p[4] for p in packets} == {SSRC} and {p[0] for p in packets} == {96}
    assert seq_gaps([p[2] for p in packets]) == 0
    assert all(0 <= (b[3] - a[3]) & 0xFFFFFFFF < CLOCK for a, b in itertools.pairwise(packets))
    if transport is not MediaTransport.UDP:
        assert session.bytes_sent == sum(len(d) + 2 for _, d in sink.items)
    video, audio, demuxer = demux(packets)
    assert len(video) == session.video_frames_sent and len(audio) == session.audio_frames_sent
    assert demuxer.video_codec is (Codec.H264 if codec == "h264" else Codec.H265)
    assert demuxer.audio_codec is Codec.G711A
    # Real-time pace: 25 fps and 25 audio frames (40 ms) a second over the time it streamed.
    assert session.first_packet_at is not None
    elapsed = session.bye_received_at - session.first_packet_at
    assert abs(len(video) - 25 * elapsed) <= 3 and abs(len(audio) - 25 * elapsed) <= 3
    assert all((b.pts - a.pts) % (1 << 33) == 3600 for a, b in itertools.pairwise(video))
    assert video[0].keyframe
    sizes, errors = decode_video("h264" if codec == "h264" else "hevc", [u.data for u in video])
    assert errors == 0 and sizes == [(320, 240)] * len(video)


@pytest.mark.parametrize(("audio", "rate", "codec", "f_audio"), [
    ("g711u", 8000, Codec.G711U, ("1", "8", "1")),
    ("aac", 16000, Codec.AAC, ("", "", "3")),  # f= has no AAC code: only the sample rate (3: 16 kHz)
    ("none", 8000, None, ("", "", "")),
])
async def test_stream_audio_codecs(platform: Platform, make_sim: MakeSim, audio: str, rate: int,
                                   codec: Codec | None, f_audio: tuple[str, str, str]) -> None:
    sim = await make_sim(audio=audio, audio_rate=rate)
    call, sink, session = await start_stream(platform, sim, MediaTransport.UDP)
    try:
        assert call.answer is not None and call.answer.media_info is not None
        info = call.answer.media_info
        assert (info.audio_codec, info.audio_kbps, info.sample_rate) == f_audio
        await until(lambda: session.video_frames_sent >= 10)
        assert await platform.bye(call) == 200
        assert await session.wait_ended(5)
        await asyncio.sleep(GRACE)
    finally:
        sink.close()
    video, audio_units, demuxer = demux(sink.rtp())
    assert len(video) == session.video_frames_sent and len(audio_units) == session.audio_frames_sent
    assert demuxer.audio_codec is codec and {u.codec for u in audio_units} == ({codec} if codec else set())
    if codec is Codec.AAC:
        assert len(decode_audio("aac", [u.data for u in audio_units])) == 1024 * len(audio_units) > 0


@pytest.mark.parametrize("sip_transport", [Transport.UDP, Transport.TCP])
async def test_device_ends_the_stream_with_bye(platform: Platform, make_sim: MakeSim,
                                               sip_transport: Transport) -> None:
    sim = await make_sim()
    sink = await Sink.udp()
    call = await platform.invite(sim, offer_for(MediaTransport.UDP, sink.port), transport=sip_transport)
    session = sim.device(CHANNEL).media.find(call.invite.call_id)
    assert session is not None and await session.wait_streaming(10)
    await asyncio.sleep(0.3)
    assert await session.end_stream() == 200
    ended = asyncio.get_running_loop().time()
    await asyncio.sleep(GRACE)
    sink.close()
    assert session.end_reason == "end_stream" and session.bye_sent_at is not None
    [(_, bye)] = platform.byes
    assert bye.call_id == call.invite.call_id and bye.method == "BYE"
    assert bye.from_.tag == call.response.to.tag and bye.to.tag == call.invite.from_.tag
    assert bye.top_via.transport == sip_transport.value
    assert sink.count_after(ended + 0.05) == 0 and len(sink.rtp()) == session.packets_sent > 0


async def test_platform_closing_the_connection_ends_the_session(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    call, sink, session = await start_stream(platform, sim, MediaTransport.TCP_PASSIVE)
    sink.drop_connections()
    assert await session.wait_ended(5)
    await until(lambda: session.bye_status is not None)
    sink.close()
    assert session.end_reason == "connection lost" and session.bye_status == 200
    assert platform.byes[0][1].call_id == call.invite.call_id


async def test_device_stop_ends_sessions_without_bye(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    _, sink, session = await start_stream(platform, sim, MediaTransport.UDP)
    other_sink = await Sink.udp()
    other = await platform.invite(sim, offer_for(MediaTransport.TCP_ACTIVE, 9, SSRC + 1), channel=CHANNEL2)
    assert other.answer is not None
    await other_sink.tcp_connect(other.answer.media_port)
    second = await sim.device(CHANNEL).media.wait_session(2, timeout=5)
    assert second is not None and second.channel_id == CHANNEL2 and await second.wait_streaming(5)
    assert sim.stats()["streams"] == 2
    await sim.device(CHANNEL).stop()  # a power cut: no BYE
    sink.close()
    other_sink.close()
    assert session.ended and session.end_reason == "stopped" and second.end_reason == "stopped"
    assert platform.byes == [] and sim.device(CHANNEL).media.sessions == {} and sim.stats()["streams"] == 0


async def test_end_stream_before_answering(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    media = sim.device(CHANNEL).media
    media.channel_misbehave[CHANNEL2] = Misbehaviour(answer_delay=5.0)  # this channel only
    sink = await Sink.udp()
    normal = await platform.invite(sim, offer_for(MediaTransport.UDP, sink.port))
    assert normal.response.status == 200
    assert platform.server is not None
    req, peer = platform.invite_request(sim, offer_for(MediaTransport.UDP, 9), channel=CHANNEL2)
    answer = asyncio.ensure_future(platform.server.request(req, peer))
    session = await media.wait_session(2, timeout=5)
    assert session is not None and session.state is SessionState.ANSWERING
    assert await session.end_stream() is None  # no dialog: no BYE
    assert (await asyncio.wait_for(answer, 5)).status == 480
    assert session.end_reason == "end_stream" and session.packets_sent == 0
    assert await platform.bye(normal) == 200
    sink.close()


# --------------------------------------------------------------------------------------------------- misbehaviour
@pytest.mark.parametrize("option", ["loss", "duplicate", "reorder"])
async def test_packet_misbehaviour(platform: Platform, make_sim: MakeSim, option: str) -> None:
    sim = await make_sim(rtp_payload=300, **{option: 0.1})  # small packets: a few hundred a second
    call, sink, session = await start_stream(platform, sim, MediaTransport.UDP)
    await asyncio.sleep(1.2)
    assert await platform.bye(call) == 200
    await asyncio.sleep(GRACE)
    sink.close()
    packets = sink.rtp()
    seqs = [p[2] for p in packets]
    assert len(packets) == session.packets_sent
    produced = session.rtp_packets
    assert produced > 200
    if option == "loss":
        assert 0.05 * produced < session.packets_lost < 0.15 * produced
        assert len(set(seqs)) == produced - session.packets_lost == len(packets)
        assert session.first_seq is not None
        produced_seqs = {(session.first_seq + i) & 0xFFFF for i in range(produced)}
        assert set(seqs) <= produced_seqs and len(produced_seqs - set(seqs)) == session.packets_lost
    elif option == "duplicate":
        assert 0.05 * produced < session.packets_duplicated < 0.15 * produced
        assert len(packets) - len(set(seqs)) == session.packets_duplicated
        assert len(set(seqs)) == produced
    else:
        assert 0.05 * produced < session.packets_reordered < 0.15 * produced
        # Each held packet follows its successor; one may still be held when the stream stops (never sent).
        held_at_end = produced - len(packets)
        assert held_at_end in (0, 1) and len(set(seqs)) == len(packets)
        swapped = sum(1 for a, b in itertools.pairwise(seqs) if (a - b) & 0xFFFF == 1)
        assert swapped == session.packets_reordered - held_at_end


async def test_garbage(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(garbage=0.2)
    call, sink, session = await start_stream(platform, sim, MediaTransport.UDP)
    await asyncio.sleep(1.0)
    assert await platform.bye(call) == 200
    await asyncio.sleep(GRACE)
    sink.close()
    ours = [p for p in sink.rtp() if p[4] == SSRC]
    assert len(ours) == session.packets_sent
    assert session.garbage_sent > 3
    assert len(sink.items) - len(ours) == session.garbage_sent
    video, _, _ = demux(ours)
    assert len(video) == session.video_frames_sent  # the media itself is intact


@pytest.mark.parametrize("mode", ["wrong_ssrc", "change_ssrc"])
async def test_ssrc_misbehaviour(platform: Platform, make_sim: MakeSim, mode: str) -> None:
    sim = await make_sim(**{mode: True})
    call, sink, session = await start_stream(platform, sim, MediaTransport.UDP)
    await asyncio.sleep(0.3)
    assert await platform.bye(call) == 200
    await asyncio.sleep(GRACE)
    sink.close()
    assert call.answer is not None
    wire = {p[4] for p in sink.rtp()}
    assert wire == {session.ssrc}
    if mode == "wrong_ssrc":
        assert call.answer.ssrc == SSRC and session.ssrc != SSRC  # answered the offer's, sent another
    else:
        assert call.answer.ssrc == session.ssrc != SSRC  # answered another and sent it
    assert str(session.ssrc).zfill(10)[:6] == "034020"  # still GB-shaped


@pytest.mark.parametrize("transport", [MediaTransport.UDP, MediaTransport.TCP_PASSIVE])
async def test_no_media(platform: Platform, make_sim: MakeSim, transport: MediaTransport) -> None:
    sim = await make_sim(no_media=True)
    call, sink, session = await start_stream(platform, sim, transport)
    await asyncio.sleep(1.0)
    assert session.state is SessionState.STREAMING and session.packets_sent == 0
    assert await platform.bye(call) == 200
    sink.close()
    assert sink.items == [] and sink.connections == 0
    assert session.end_reason == "bye"


@pytest.mark.parametrize("status", [486, 488])
async def test_reject(platform: Platform, make_sim: MakeSim, status: int) -> None:
    sim = await make_sim(reject=status)
    call = await platform.invite(sim, offer_for(MediaTransport.UDP, 9))
    assert call.response.status == status
    session = sim.device(CHANNEL).media.find(call.invite.call_id)
    assert session is not None and await session.wait_ended(5)
    assert session.end_reason == "rejected" and session.status == status


async def test_answer_delay(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    sim.device(CHANNEL).media.misbehave = Misbehaviour(answer_delay=1.0)  # a setter, for the next sessions
    sink = await Sink.udp()
    started = asyncio.get_running_loop().time()
    call = await platform.invite(sim, offer_for(MediaTransport.UDP, sink.port))
    answered = asyncio.get_running_loop().time()
    assert call.response.status == 200 and 1.0 <= answered - started < 3.0
    trying = [at for at, ev in platform.events if isinstance(ev, ResponseReceived) and ev.response.status == 100]
    assert trying and trying[0] - started < 0.5  # 100 Trying at once
    session = sim.device(CHANNEL).media.find(call.invite.call_id)
    assert session is not None and await session.wait_streaming(5)
    assert await platform.bye(call) == 200
    sink.close()


async def test_cancel_while_delaying(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(answer_delay=5.0)
    assert platform.server is not None
    req, peer = platform.invite_request(sim, offer_for(MediaTransport.UDP, 9))
    key = platform.server.send(req, peer)

    def final() -> list[SipResponse]:
        return [ev.response for _, ev in platform.events
                if isinstance(ev, ResponseReceived) and ev.key == key and ev.response.status >= 200]

    await until(lambda: any(isinstance(ev, ResponseReceived) and ev.key == key for _, ev in platform.events))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert platform.server.endpoint.cancel(key, loop.time()) is not None
    platform.server._transmit()  # SipServer has no public cancel(): what the gateway's own code will call
    await until(lambda: bool(final()), 5)
    assert [r.status for r in final()] == [487] and loop.time() - started < 2
    session = sim.device(CHANNEL).media.find(req.call_id)
    assert session is not None and await session.wait_ended(5)
    assert session.end_reason == "cancelled" and session.packets_sent == 0


async def test_refusals(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    # A transport we do not do, an unusable address, an unknown channel, a body that is not SDP.
    offer = offer_for(MediaTransport.UDP, 9)
    bad_proto = sdp.parse(bytes(offer).replace(b"RTP/AVP", b"UDP/BFCP"))
    assert (await platform.invite(sim, bad_proto)).response.status == 488
    no_addr = sdp.gb28181_offer(platform_id=PLATFORM_ID, media_ip="0.0.0.0", port=9, ssrc=SSRC)
    assert (await platform.invite(sim, no_addr)).response.status == 488
    assert (await platform.invite(sim, offer, channel="34020000001310009999")).response.status == 404
    assert platform.server is not None
    req, peer = platform.invite_request(sim, offer)
    req = build_request("INVITE", req.uri, via=platform.via(Transport.UDP), from_=req.from_, to=req.to,
                        call_id="not-sdp", cseq=1, body=b"<xml/>", content_type="Application/MANSCDP+xml")
    assert (await platform.server.request(req, peer)).status == 415
    assert sim.device(CHANNEL).media.sessions == {}


# --------------------------------------------------------------------------------------------------- replay
async def test_replay_hikvision_capture(platform: Platform, make_sim: MakeSim) -> None:
    path = capture(HIKVISION)  # skips if ../shared/data is absent
    original = rtp_packets(HIKVISION)
    sim = await make_sim(replay=str(path), replay_speed=40.0)
    call, sink, session = await start_stream(platform, sim, MediaTransport.UDP)
    await until(lambda: session.rtp_packets >= len(original), 15)
    assert await platform.bye(call) == 200
    await asyncio.sleep(GRACE)
    sink.close()
    packets = sink.rtp()
    assert len(packets) == session.packets_sent >= len(original)
    whole = packets[: len(original)]
    assert [p[5] for p in whole] == [p.payload for p in original]  # every payload, in order
    assert [p[1] for p in whole] == [p.marker for p in original]
    assert {p[4] for p in packets} == {SSRC} and seq_gaps([p[2] for p in packets]) == 0
    # Timestamps keep the capture's spacing, and continue across the loop.
    assert [(p[3] - whole[0][3]) & 0xFFFFFFFF for p in whole] == [(p.ts - original[0].ts) & 0xFFFFFFFF
                                                                  for p in original]
    if len(packets) > len(original):
        assert (packets[len(original)][3] - whole[-1][3]) & 0xFFFFFFFF == 3600
    video, _, demuxer = demux(whole)
    assert len(video) == 1400 and demuxer.truncated_frames == 0


def test_capture_source_rewrites_and_loops() -> None:
    path = capture(HIKVISION)
    src = CaptureSource(path, speed=2.0)
    n = src.packet_count
    bursts = src.bursts(77, seq=10, pts_base=1000)
    out = []
    while len(out) < n + 5:
        burst = next(bursts)
        out += [(burst.at, p) for p in burst.packets]
    first, last, again = rtp(out[0][1]), rtp(out[n - 1][1]), rtp(out[n][1])
    assert first[4] == 77 and first[2] == 10 and first[3] == 1000
    assert again[2] == (10 + n) & 0xFFFF and again[3] - last[3] == 3600
    assert abs(out[n - 1][0] - 55.96 / 2) < 0.01  # paced by the timestamps at twice the speed


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_help_and_bad_replay(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--replay" in out and "--width" in out and "--fps" in out and "not sent yet" not in out
    assert main(["--replay", str(tmp_path / "missing.lenpfx.rtp")]) == 2
    assert "replay" in capsys.readouterr().err
    empty = tmp_path / "empty.lenpfx.rtp"
    empty.write_bytes(struct.pack(">H", 3) + b"abc")
    assert main(["--replay", str(empty)]) == 2
    assert main(["--width", "1920", "--height", "1080"]) == 2
    assert main(["--audio", "opus"]) == 2
    assert main(["--audio", "g711a", "--audio-rate", "16000"]) == 2
    assert "audio_rate = 16000: expected 8000 for g711a" in capsys.readouterr().err
    config = config_from_args(_parser().parse_args(["--audio", "aac", "--audio-rate", "16000"]))
    assert (config.audio, config.audio_rate) == ("aac", 16000)
    assert config_from_args(_parser().parse_args([])).audio == "g711a"
