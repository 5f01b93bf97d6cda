"""WebRTC (WHEP) end to end: aiortc as an independent browser-like client against the gateway's HTTP port, with
simulated cameras; real sockets on 127.0.0.1 throughout."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from gw_util import running_gateway, sample
from rtsp_util import RawRtspClient
from site_util import simulated
from test_streams import config, wait_until

from gateway import webrtc
from gateway.app import Gateway
from gateway.config import Config, ConfigError, HttpConfig, WebrtcConfig
from gateway.fanout import GopCache
from gateway.sim import Simulator
from media.frames import AccessUnit, Codec

pytestmark = pytest.mark.e2e

PORT_MIN, PORT_MAX = 41000, 41049
TOKEN = "a-token-for-the-whep-tests"


def wconfig(tmp_path: Path, token: str = "", **webrtc_keys: Any) -> Config:
    base = config(tmp_path)
    keys: dict[str, Any] = {"ice_addresses": ["127.0.0.1"], "udp_port_min": PORT_MIN, "udp_port_max": PORT_MAX}
    keys.update(webrtc_keys)
    return replace(base, webrtc=WebrtcConfig(**keys), http=replace(base.http, token=token))


def channel_path(gw: Gateway, sim: Simulator, index: int = 0) -> str:
    dev = sim.devices[0]
    channels = sorted(gw.devices.get(dev.device_id).channels)  # type: ignore[union-attr]
    return f"{dev.device_id}/{channels[index]}"


class Whep:
    """A WHEP client: an aiortc peer connection that only receives, and the HTTP exchanges around it."""

    def __init__(self, port: int, token: str = "") -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = aiohttp.ClientSession()
        self.pc: RTCPeerConnection | None = None
        self.location: str | None = None
        self.answer = ""

    async def offer(self, audio: bool = True) -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        pc.addTransceiver("video", direction="recvonly")
        if audio:
            pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp

    async def post(self, path: str, body: str | bytes, content_type: str = "application/sdp",
                   headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        async with self.http.post(self.base + path, data=body,
                                  headers={**self.headers, "Content-Type": content_type, **(headers or {})},
                                  timeout=aiohttp.ClientTimeout(total=30)) as resp:
            data = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, data, resp.headers

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        async with self.http.request(method, self.base + path, headers={**self.headers, **(headers or {})},
                                     timeout=aiohttp.ClientTimeout(total=30)) as resp:
            data = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, data, resp.headers

    async def play(self, path: str, audio: bool = True) -> None:
        """Offer, POST, take the answer (201 expected)."""
        status, body, headers = await self.post(f"/whep/{path}", await self.offer(audio))
        assert status == 201, body
        assert headers["Content-Type"].startswith("application/sdp")
        assert headers["Access-Control-Allow-Origin"] == "*" and "Location" in headers["Access-Control-Expose-Headers"]
        self.location = headers["Location"]
        self.answer = body
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))

    def track(self, kind: str) -> MediaStreamTrack:
        assert self.pc is not None
        return next(t.receiver.track for t in self.pc.getTransceivers() if t.kind == kind)

    async def frames(self, kind: str, count: int, timeout: float = 20) -> list[Any]:
        track = self.track(kind)
        out = []

        async def collect() -> None:
            while len(out) < count:
                out.append(await track.recv())

        await asyncio.wait_for(collect(), timeout)
        return out

    async def delete(self) -> int:
        assert self.location is not None
        status, _, _ = await self.request("DELETE", self.location)
        return status

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        await self.http.close()


@asynccontextmanager
async def whep_client(port: int, token: str = "") -> AsyncIterator[Whep]:
    client = Whep(port, token)
    try:
        yield client
    finally:
        await client.close()


def candidates(answer: str) -> list[tuple[str, int]]:
    return [(m[1], int(m[2])) for m in re.finditer(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ (\S+)", answer)]


def video_ssrc(answer: str) -> int:
    video = answer[answer.index("m=video"):]
    return int(re.search(r"a=ssrc:(\d+) ", video).group(1))  # type: ignore[union-attr]


def whep_endpoint(gw: Gateway) -> webrtc.WhepEndpoint:
    return gw.http.app[webrtc.WHEP_KEY]


async def test_h264_passthrough_video_and_g711a_audio(tmp_path: Path) -> None:
    async with simulated(wconfig(tmp_path)) as (gw, sim):
        path = channel_path(gw, sim)
        async with whep_client(gw.http.port) as client:
            await client.play(path)
            assert client.location is not None and client.location.startswith("/whep/session/")
            # The answer: H.264 video, PCMA audio, host candidates on 127.0.0.1 within the port range.
            assert "H264/90000" in client.answer and "PCMA/8000" in client.answer
            cands = candidates(client.answer)
            assert cands and all(host == "127.0.0.1" and PORT_MIN <= port <= PORT_MAX for host, port in cands)
            video = await client.frames("video", 30)
            assert len(video) == 30 and video[0].width == 320 and video[0].height == 240
            audio = await client.frames("audio", 10)
            assert audio[0].sample_rate in (8000, 48000)
            endpoint = whep_endpoint(gw)
            assert len(endpoint.sessions) == 1 and not endpoint.transcoders
            assert sample("gb28181_viewers", {"protocol": "webrtc"}) == 1
            # A PLI is answered from the GOP cache: the cached GOP is sent again and decoding goes on.
            answered = sample("gb28181_webrtc_keyframe_requests_total", {"answer": "cache"})
            session = next(iter(endpoint.sessions.values()))
            assert client.pc is not None
            receiver = next(t.receiver for t in client.pc.getTransceivers() if t.kind == "video")
            await receiver._send_rtcp_pli(video_ssrc(client.answer))
            await wait_until(lambda: session.keyframe_answers == 1, 5)
            assert sample("gb28181_webrtc_keyframe_requests_total", {"answer": "cache"}) == answered + 1
            assert len(await client.frames("video", 25)) == 25
            # DELETE ends the session; a second DELETE is 404.
            assert await client.delete() == 204
            assert await client.delete() == 404
            assert not endpoint.sessions
            assert sample("gb28181_viewers", {"protocol": "webrtc"}) == 0
        # The camera is BYEd after the linger.
        media = sim.device(path.split("/")[1]).media  # type: ignore[union-attr]
        await wait_until(lambda: not media.sessions, 5)
        await wait_until(lambda: gw.streams.sessions == {}, 5)


async def test_h265_is_transcoded_once_for_all_viewers(tmp_path: Path) -> None:
    async with simulated(wconfig(tmp_path), codec="h265") as (gw, sim):
        channel = channel_path(gw, sim).split("/")[1]
        endpoint = whep_endpoint(gw)
        async with whep_client(gw.http.port) as first, whep_client(gw.http.port) as second:
            await first.play(channel)  # the bare /whep/<channel_id> form
            assert "H264/90000" in first.answer and "H265" not in first.answer
            frames = await first.frames("video", 30)
            assert frames[-1].width == 320 and frames[-1].height == 240
            assert len(await first.frames("audio", 5)) == 5  # G.711A passes through the transcode
            await second.play(channel)
            assert len(await second.frames("video", 25)) == 25
            assert len(endpoint.transcoders) == 1
            transcoder = next(iter(endpoint.transcoders.values()))
            assert transcoder.users == 2 and transcoder.reason == "H.265"
            assert sample("gb28181_webrtc_transcodes") == 1
            assert await first.delete() == 204
            assert len(endpoint.transcoders) == 1  # the second viewer still watches
            assert len(await second.frames("video", 10)) == 10
            assert await second.delete() == 204
            assert not endpoint.transcoders and sample("gb28181_webrtc_transcodes") == 0
            await asyncio.to_thread(transcoder.thread.join, 5)
            assert not transcoder.thread.is_alive()


async def test_default_ice_addresses_are_discovered(tmp_path: Path) -> None:
    """``ice_addresses = []``: this host's addresses (127.0.0.1 only without another), ports from the range."""
    async with simulated(wconfig(tmp_path, ice_addresses=[])) as (gw, sim):
        async with whep_client(gw.http.port) as client:
            await client.play(channel_path(gw, sim), audio=False)
            cands = candidates(client.answer)
            assert cands and all(PORT_MIN <= port <= PORT_MAX for _, port in cands)
            assert "m=audio" not in client.answer
            assert len(await client.frames("video", 5)) == 5


async def test_bad_offers_are_400_and_other_refusals(tmp_path: Path) -> None:
    async with running_gateway(wconfig(tmp_path)) as gw, whep_client(gw.http.port) as client:
        unknown = "34020000001320000099/34020000001310099001"
        offer = await client.offer()
        bad_before = sample("gb28181_webrtc_sessions_total", {"result": "bad_request"})
        cases = [
            ("hello", "not an SDP offer"),
            (re.sub(r"m=video.*?(?=m=audio)", "", offer, flags=re.S), "no video m-line"),
            (offer.replace("a=recvonly", "a=sendonly"), "no video m-line"),
            (re.sub(r"a=rtpmap:\d+ H264/90000\r\n", "", offer), "no H.264"),
            (re.sub(r"a=fingerprint:[^\r\n]*\r\n", "", offer), "lacks a=fingerprint"),
            (offer.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"), "not WebRTC media"),
        ]
        for body, reason in cases:
            status, data, headers = await client.post(f"/whep/{unknown}", body)
            assert status == 400, (reason, data)
            assert reason in data["error"]["reason"] and data["error"]["status"] == 400
            assert headers["Access-Control-Allow-Origin"] == "*"
        status, data, _ = await client.post(f"/whep/{unknown}", offer, content_type="text/plain")
        assert status == 415 and "application/sdp" in data["error"]["reason"]
        status, data, _ = await client.post("/whep/123/456", offer)
        assert status == 400 and "20 digits" in data["error"]["reason"]
        status, data, _ = await client.post(f"/whep/{unknown}?stream=third", offer)
        assert status == 400
        assert sample("gb28181_webrtc_sessions_total", {"result": "bad_request"}) == bad_before + 9
        # Unknown channel (device/channel and bare channel): 404.
        not_found = sample("gb28181_webrtc_sessions_total", {"result": "not_found"})
        status, data, _ = await client.post(f"/whep/{unknown}", offer)
        assert status == 404 and "unknown device" in data["error"]["reason"]
        status, data, _ = await client.post("/whep/34020000001310099001", offer)
        assert status == 404 and "unknown channel" in data["error"]["reason"]
        assert sample("gb28181_webrtc_sessions_total", {"result": "not_found"}) == not_found + 2
        status, data, _ = await client.request("DELETE", "/whep/session/nope")
        assert status == 404
        status, data, headers = await client.request("PATCH", "/whep/session/nope")
        assert status == 405 and "DELETE" in headers["Allow"]


async def test_offer_refused_by_aiortc_releases_the_stream(tmp_path: Path) -> None:
    async with simulated(wconfig(tmp_path)) as (gw, sim):
        path = channel_path(gw, sim)
        async with whep_client(gw.http.port) as client:
            # H.264 High profile only: aiortc sends Constrained Baseline (and Baseline) only.
            offer = re.sub(r"profile-level-id=42[0-9a-f]{4}", "profile-level-id=640c1f", await client.offer())
            status, data, _ = await client.post(f"/whep/{path}", offer)
            assert status == 400 and "offer refused" in data["error"]["reason"]
        assert not whep_endpoint(gw).sessions
        media = sim.device(path.split("/")[1]).media
        await wait_until(lambda: not media.sessions and gw.streams.sessions == {}, 5)


async def test_rtsp_and_webrtc_viewers_hold_the_stream_together(tmp_path: Path) -> None:
    async with simulated(wconfig(tmp_path)) as (gw, sim):
        path = channel_path(gw, sim)
        media = sim.device(path.split("/")[1]).media
        rtsp = await RawRtspClient.connect(gw.rtsp.port, path)
        try:
            assert (await rtsp.request("DESCRIBE", headers=[("Accept", "application/sdp")])).status == 200
            async with whep_client(gw.http.port) as client:
                await client.play(path)
                assert len(await client.frames("video", 5)) == 5
                (session,) = gw.streams.sessions.values()
                assert session.consumers == 2 and len(media.sessions) == 1
                assert await client.delete() == 204
            await asyncio.sleep(1.0)  # twice the linger: the RTSP viewer still holds the stream
            assert session.consumers == 1 and len(media.sessions) == 1
        finally:
            rtsp.close()
        await wait_until(lambda: not media.sessions, 5)  # BYE after the linger
        await wait_until(lambda: gw.streams.sessions == {}, 5)


async def test_stream_end_ends_the_session(tmp_path: Path) -> None:
    async with simulated(wconfig(tmp_path)) as (gw, sim):
        path = channel_path(gw, sim)
        async with whep_client(gw.http.port) as client:
            await client.play(path)
            assert len(await client.frames("video", 3)) == 3
            ended = sample("gb28181_webrtc_sessions_ended_total", {"reason": "stream_ended"})
            await sim.device(path.split("/")[1]).media.end_all(send_bye=True)
            await wait_until(lambda: not whep_endpoint(gw).sessions, 5)
            assert sample("gb28181_webrtc_sessions_ended_total", {"reason": "stream_ended"}) == ended + 1
            assert await client.delete() == 404


async def test_cors_preflight_and_token(tmp_path: Path) -> None:
    async with running_gateway(wconfig(tmp_path, token=TOKEN)) as gw:
        path = "34020000001320000099/34020000001310099001"
        async with whep_client(gw.http.port) as anonymous:
            status, _, headers = await anonymous.request(
                "OPTIONS", f"/whep/{path}",
                headers={"Origin": "https://viewer.example", "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "authorization, content-type"})
            assert status == 204
            assert headers["Access-Control-Allow-Origin"] == "*"
            assert "POST" in headers["Access-Control-Allow-Methods"]
            allowed = headers["Access-Control-Allow-Headers"].lower()
            assert "authorization" in allowed and "content-type" in allowed
            assert "Location" in headers["Access-Control-Expose-Headers"]
            status, _, headers = await anonymous.request("OPTIONS", "/whep/session/anything")
            assert status == 204 and "DELETE" in headers["Access-Control-Allow-Methods"]
            # Without the token: 401, still readable cross-origin.
            status, data, headers = await anonymous.post(f"/whep/{path}", await anonymous.offer())
            assert status == 401 and headers["Access-Control-Allow-Origin"] == "*"
            assert data["error"]["status"] == 401
        async with whep_client(gw.http.port, TOKEN) as client:
            status, _, _ = await client.post(f"/whep/{path}", await client.offer())
            assert status == 404  # authorized; the channel is unknown


async def test_max_sessions(tmp_path: Path) -> None:
    async with simulated(wconfig(tmp_path, max_sessions=1)) as (gw, sim):
        path = channel_path(gw, sim)
        async with whep_client(gw.http.port) as first, whep_client(gw.http.port) as second:
            await first.play(path)
            status, data, headers = await second.post(f"/whep/{path}", await second.offer())
            assert status == 503 and "webrtc.max_sessions = 1" in data["error"]["reason"]
            assert headers["Retry-After"]
            assert await first.delete() == 204
            await second.play(path)  # a session was freed
            assert len(await second.frames("video", 3)) == 3


async def test_max_transcodes(tmp_path: Path) -> None:
    async with simulated(wconfig(tmp_path, max_transcodes=1), codec="h265") as (gw, sim):
        async with whep_client(gw.http.port) as first, whep_client(gw.http.port) as second:
            await first.play(channel_path(gw, sim, 0))
            limited = sample("gb28181_webrtc_sessions_total", {"result": "transcode_limit"})
            status, data, _ = await second.post(f"/whep/{channel_path(gw, sim, 1)}", await second.offer())
            assert status == 503 and "webrtc.max_transcodes = 1" in data["error"]["reason"]
            assert sample("gb28181_webrtc_sessions_total", {"result": "transcode_limit"}) == limited + 1
            assert len(await first.frames("video", 3)) == 3
    async with simulated(wconfig(tmp_path, max_transcodes=0), codec="h265") as (gw, sim):
        async with whep_client(gw.http.port) as client:
            status, data, _ = await client.post(f"/whep/{channel_path(gw, sim)}", await client.offer())
            assert status == 503 and "transcoding is off" in data["error"]["reason"]


# ------------------------------------------------------------------------------------------------- units
def test_check_offer_audio_codecs() -> None:
    offer = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
             "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\na=fingerprint:sha-256 AB:CD\r\n"
             "m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\na=rtpmap:102 H264/90000\r\n"
             "a=fmtp:102 level-asymmetry-allowed=1; packetization-mode=1; profile-level-id=42e01f\r\n"
             "m=audio 9 UDP/TLS/RTP/SAVPF 111 8 0\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n"
             "a=rtpmap:111 opus/48000/2\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n")
    assert webrtc.check_offer(offer) == {Codec.G711A, Codec.G711U}
    assert webrtc.check_offer(offer.replace("a=rtpmap:8 PCMA/8000\r\n", "")) == {Codec.G711U}
    assert webrtc.check_offer(offer.replace("m=audio 9", "m=audio 0")) == frozenset()
    with pytest.raises(webrtc.Refused) as exc:
        webrtc.check_offer(offer.replace("packetization-mode=1", "packetization-mode=0"))
    assert exc.value.status == 400 and "no H.264" in exc.value.reason
    with pytest.raises(webrtc.Refused):
        webrtc.check_offer(offer.replace("m=video 9", "m=video 0"))


def _encoded(**options: str) -> list[AccessUnit]:
    import fractions

    import av
    import numpy as np

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 90000)
    ctx.framerate = fractions.Fraction(25, 1)
    ctx.options = {"preset": "medium", "threads": "1", **options}
    units = []
    for i in range(12):
        frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20, np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i * 3600
        for p in [*ctx.encode(frame), *([] if i < 11 else ctx.encode(None))]:
            units.append(AccessUnit(Codec.H264, p.pts, p.dts, p.is_keyframe, bytes(p)))
    return units


def _cache(units: list[AccessUnit]) -> GopCache:
    cache = GopCache()
    cache.set_video_codec(units[0].codec)
    for au in units:
        if au.keyframe:
            cache.start_gop(au)
        else:
            cache.append(au)
    return cache


def test_transcode_reason() -> None:
    assert webrtc.transcode_reason(_cache(_encoded(bf="0", profile="baseline"))) is None
    assert webrtc.transcode_reason(_cache(_encoded(bf="0", profile="high"))) is None
    assert webrtc.transcode_reason(_cache(_encoded(bf="2", profile="high"))) == "B-frames"
    # No SPS hint (VUI cut away): judged by the GOP, which has DTS != PTS and B slices.
    with_b = _cache(_encoded(bf="2", profile="high"))
    with_b.sps = None
    assert webrtc.transcode_reason(with_b) == "B-frames"
    h265 = GopCache()
    h265.set_video_codec(Codec.H265)
    assert webrtc.transcode_reason(h265) == "H.265"


async def test_ice_host_ports_and_foreign_address() -> None:
    from aioice.ice import Connection

    ice = webrtc.IceHost(WebrtcConfig(ice_addresses=("127.0.0.1", "198.51.100.7"), udp_port_min=PORT_MIN,
                                      udp_port_max=PORT_MIN + 9))
    conns = [Connection(ice_controlling=False) for _ in range(3)]
    try:
        for conn in conns:
            await ice._gather(conn)
        found = [(c.host, c.port) for conn in conns for c in conn.local_candidates]
        assert [h for h, _ in found] == ["127.0.0.1", "198.51.100.7"] * 3
        ports = [p for _, p in found]
        assert len(set(ports)) == 6 and all(PORT_MIN <= p <= PORT_MIN + 9 for p in ports)
        # The foreign address (a NAT's public IP) is announced; its socket listens on every interface.
        bound = {p.transport.get_extra_info("sockname")[0] for conn in conns for p in conn._protocols}
        assert bound == {"127.0.0.1", "0.0.0.0"}
        # A full range: refused with 503.
        small = webrtc.IceHost(WebrtcConfig(ice_addresses=("127.0.0.1",), udp_port_min=ports[0],
                                            udp_port_max=ports[0]))
        spare = Connection(ice_controlling=False)
        conns.append(spare)
        with pytest.raises(webrtc.Refused) as exc:
            await small._gather(spare)
        assert exc.value.status == 503
    finally:
        for conn in conns:
            await conn.close()


def test_webrtc_config_rules() -> None:
    assert Config().webrtc == WebrtcConfig()
    for keys, message in [
        ({"udp_port_min": 41000, "udp_port_max": 40000}, "webrtc.udp_port_max = 40000: expected a port >="),
        ({"udp_port_min": 0}, "expected 0 together with webrtc.udp_port_min = 0"),
        ({"udp_port_min": 80, "udp_port_max": 90}, "webrtc.udp_port_min = 80: expected 0 (any free port) or"),
        ({"ice_addresses": ["0.0.0.0"]}, "webrtc.ice_addresses = ['0.0.0.0']: expected a list of unicast IP"),
        ({"ice_addresses": ["camera.example"]}, "expected a list of unicast IP"),
        ({"ice_addresses": ["10.0.0.1", "10.0.0.1"]}, "expected a list of unicast IP"),
        ({"max_sessions": 0}, "webrtc.max_sessions = 0: expected an integer 1..100000"),
        ({"max_transcodes": -1}, "webrtc.max_transcodes = -1"),
    ]:
        with pytest.raises(ConfigError) as exc:
            Config.from_mapping({"webrtc": keys})
        assert any(message in e for e in exc.value.errors), exc.value.errors
    ok = Config.from_mapping({"webrtc": {"ice_addresses": ["192.0.2.10", "2001:db8::1"], "udp_port_min": 0,
                                         "udp_port_max": 0, "max_transcodes": 0}})
    assert ok.webrtc.ice_addresses == ("192.0.2.10", "2001:db8::1")
    assert HttpConfig().port == 8080  # the WHEP endpoint lives on the HTTP server


async def test_transcoder_removes_b_frames() -> None:
    """H.264 with B-frames through a ``Transcoder`` (a stand-in stream): Constrained Baseline out, in display
    order, starting on a keyframe with its parameter sets, audio passed through."""
    from types import SimpleNamespace

    from gateway.fanout import FanOut
    from media import h264

    source = FanOut(name="test")
    stream = SimpleNamespace(fanout=source, key="test/b-frames")
    forgotten: list[Any] = []
    endpoint = SimpleNamespace(_forget_transcoder=forgotten.append)
    units = _encoded(bf="2", profile="high")
    source.publish(units[0])  # the stream's codec is known before the transcode starts
    transcoder = webrtc.Transcoder(endpoint, stream, "B-frames")  # type: ignore[arg-type]
    transcoder.start()
    out = transcoder.fanout.subscribe("viewer")
    try:
        for au in units[1:]:
            source.publish(au)
            source.publish(AccessUnit(Codec.G711A, au.dts, au.dts, False, b"\xd5" * 160))
        got: list[AccessUnit] = []
        while sum(au.codec.is_video for au in got) < len(units) - 2:
            got.append(await asyncio.wait_for(out.get(), 5))
        video = [au for au in got if au.codec is Codec.H264]
        assert video[0].keyframe and h264.parameter_sets(video[0].data)[0] is not None
        assert h264.parse_sps(h264.parameter_sets(video[0].data)[0]).profile_idc == 66  # type: ignore[arg-type]
        assert not h264.has_b_frames(au.data for au in video)
        pts = [au.pts for au in video]
        assert pts == sorted(pts) and all(au.dts == au.pts for au in video)
        assert any(au.codec is Codec.G711A for au in got)
    finally:
        transcoder.stop("test over")
        await asyncio.to_thread(transcoder.thread.join, 5)
    assert forgotten == [transcoder] and not transcoder.thread.is_alive()
