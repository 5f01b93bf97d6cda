"""The RTSP server end to end, with real clients (ffprobe/ffmpeg) against a gateway and a simulated camera."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from gw_util import running_gateway, sample
from rtsp_util import RawRtspClient, rtcp_packets, starts_keyframe_h264
from site_util import simulated
from test_streams import _capture, config, started, wait_until

from gateway import rtsp_server
from gateway.config import RtspConfig
from gateway.sim import Simulator
from media import rtsp as rtsp_core  # noqa: I001

pytestmark = pytest.mark.e2e

FFPROBE = shutil.which("ffprobe")
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFPROBE is None or FFMPEG is None,
                                  reason="ffprobe/ffmpeg not installed (Debian package ffmpeg)")


async def run(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def ffprobe(url: str) -> tuple[int, str, str]:
    assert FFPROBE is not None
    return await run(FFPROBE, "-rtsp_transport", "tcp", "-v", "error", "-show_streams", "-of", "json", url)


async def raw_request(port: int, text: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(text.encode())
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


def url_of(gw, device: str, channel: str) -> str:  # type: ignore[no-untyped-def]
    return f"rtsp://127.0.0.1:{gw.rtsp.port}/{device}/{channel}"


async def test_options_and_unknown_channel_answer_with_cseq(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        head = await raw_request(gw.rtsp.port, f"OPTIONS rtsp://127.0.0.1:{gw.rtsp.port}/x RTSP/1.0\r\nCSeq: 7\r\n\r\n")
        assert head.startswith(b"RTSP/1.0 200 ")
        assert b"CSeq: 7\r\n" in head and b"DESCRIBE" in head and b"Public:" in head
        head = await raw_request(
            gw.rtsp.port,
            f"DESCRIBE rtsp://127.0.0.1:{gw.rtsp.port}/34020000001320000001/34020000001320000099 RTSP/1.0\r\n"
            "CSeq: 42\r\nAccept: application/sdp\r\n\r\n")
        assert head.startswith(b"RTSP/1.0 404 ")
        assert b"CSeq: 42\r\n" in head
        head = await raw_request(gw.rtsp.port, f"FOO rtsp://127.0.0.1:{gw.rtsp.port}/x RTSP/1.0\r\nCSeq: 3\r\n\r\n")
        assert head.startswith(b"RTSP/1.0 501 ") and b"CSeq: 3\r\n" in head


@needs_ffmpeg
async def test_ffprobe_and_ffmpeg_play_a_live_channel(tmp_path: Path) -> None:
    async with simulated(config(tmp_path)) as (gw, sim):
        dev = sim.devices[0]
        channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
        url = url_of(gw, dev.device_id, channel)
        rc, out, err = await ffprobe(url)
        assert rc == 0, err
        streams = json.loads(out)["streams"]
        video = [s for s in streams if s["codec_type"] == "video"]
        assert video and video[0]["codec_name"] == "h264", streams
        assert (video[0]["width"], video[0]["height"]) == (320, 240)
        audio = [s for s in streams if s["codec_type"] == "audio"]
        assert audio and audio[0]["codec_name"] == "pcm_alaw", streams
        assert FFMPEG is not None
        rc, out, err = await run(FFMPEG, "-nostdin", "-rtsp_transport", "tcp", "-i", url, "-frames:v", "25",
                                 "-f", "null", "-")
        assert rc == 0, err
        assert "frame=   25" in err or "frame=25" in err.replace(" ", ""), err[-2000:]
        # The bare channel form works too.
        rc, out, err = await ffprobe(f"rtsp://127.0.0.1:{gw.rtsp.port}/{channel}")
        assert rc == 0, err


@needs_ffmpeg
async def test_unknown_channel_fails_in_ffprobe(tmp_path: Path) -> None:
    async with simulated(config(tmp_path)) as (gw, sim):
        rc, out, err = await ffprobe(url_of(gw, sim.devices[0].device_id, "34020000001310000099"))
        assert rc != 0
        assert "404" in err, err


@needs_ffmpeg
async def test_two_viewers_share_one_invite_then_linger_and_bye(tmp_path: Path) -> None:
    async with simulated(config(tmp_path, linger=0.5)) as (gw, sim):
        dev = sim.devices[0]
        channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
        url = url_of(gw, dev.device_id, channel)
        results = await asyncio.gather(ffprobe(url), ffprobe(url))
        for rc, out, err in results:
            assert rc == 0, err
            assert json.loads(out)["streams"][0]["codec_name"] == "h264"
        media = sim.device(channel).media  # type: ignore[union-attr]
        assert len(media.history) == 1  # one INVITE for both viewers
        # Both left: the stream lingers, then the device sees BYE.
        await wait_until(lambda: not gw.rtsp.connections, timeout=5)
        await wait_until(lambda: not media.sessions, timeout=5)
        await wait_until(lambda: gw.streams.sessions == {}, timeout=5)


async def test_session_timeout_leaves_the_stream(tmp_path: Path) -> None:
    from dataclasses import replace

    from gateway.config import RtspConfig

    cfg = replace(config(tmp_path, linger=0.3), rtsp=RtspConfig(port=0, session_timeout=0.5))
    async with simulated(cfg) as (gw, sim):
        dev = sim.devices[0]
        channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.rtsp.port)
        writer.write(f"DESCRIBE {url_of(gw, dev.device_id, channel)} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"RTSP/1.0 200 ") and b"CSeq: 1\r\n" in head
        assert b"Content-Base: " in head
        assert len(gw.streams.sessions) == 1
        # Silent client: the connection is closed and the stream left, then BYE after linger.
        await wait_until(lambda: not gw.rtsp.connections, timeout=5)
        await wait_until(lambda: gw.streams.sessions == {}, timeout=5)
        writer.close()


def rtsp_config(tmp_path: Path, linger: float = 0.5, **rtsp: object):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(config(tmp_path, linger=linger), rtsp=RtspConfig(**{"port": 0, **rtsp}))  # type: ignore[arg-type]


@asynccontextmanager
async def live_channel(tmp_path: Path, *, sim: dict[str, object] | None = None, linger: float = 0.5,
                       **rtsp: object) -> AsyncIterator[tuple[Any, Simulator, str, str]]:
    """A gateway (``rtsp_config``) with one simulated device (``started(gw, **sim)``): (gw, sim, device ID, its
    first channel ID); the simulator stops before the gateway."""
    async with running_gateway(rtsp_config(tmp_path, linger, **rtsp)) as gw:
        simulator = await started(gw, **(sim or {}))
        try:
            dev = simulator.devices[0]
            yield gw, simulator, dev.device_id, next(iter(gw.devices.get(dev.device_id).channels))
        finally:
            await simulator.stop()


async def ffmpeg_frames(url: str, transport: str, frames: int = 50, *extra: str,
                        timeout: float = 60) -> tuple[int, int, str]:
    """Decode ``frames`` video frames with ffmpeg (``framecrc``: one line per decoded frame per stream);
    returns (video frames, audio frames, stderr). Fails on a non-zero exit or any warning/error logged."""
    assert FFMPEG is not None
    rc, out, err = await run(FFMPEG, "-nostdin", "-v", "warning", "-threads", "1", "-rtsp_transport", transport,
                             *extra, "-i", url, "-frames:v", str(frames), "-f", "framecrc", "-", timeout=timeout)
    assert rc == 0, err[-3000:]
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    return sum(line.startswith("0,") for line in lines), sum(line.startswith("1,") for line in lines), err


@needs_ffmpeg
@pytest.mark.parametrize(("codec", "transport", "audio"), [
    ("h264", "udp", "g711a"), ("h265", "tcp", "g711a"), ("h265", "udp", "g711a"), ("h264", "tcp", "aac"),
    ("h264", "udp", "g711u"), ("h264", "tcp", "none")])
async def test_ffmpeg_decodes_video_and_audio_per_codec_and_transport(tmp_path: Path, codec: str,
                                                                      transport: str, audio: str) -> None:
    sim_kw: dict[str, object] = {"codec": codec, "audio": audio, "audio_rate": 16000 if audio == "aac" else 8000}
    async with live_channel(tmp_path, sim=sim_kw) as (gw, sim, device, channel):
        rc, out, err = await ffprobe(url_of(gw, device, channel))
        assert rc == 0, err
        streams = json.loads(out)["streams"]
        names = {s["codec_type"]: s["codec_name"] for s in streams}
        expected = {"video": {"h264": "h264", "h265": "hevc"}[codec]}
        if audio != "none":
            expected["audio"] = {"g711a": "pcm_alaw", "g711u": "pcm_mulaw", "aac": "aac"}[audio]
            rate = next(s["sample_rate"] for s in streams if s["codec_type"] == "audio")
            assert rate == ("16000" if audio == "aac" else "8000")
        assert names == expected
        video, audio_frames, err = await ffmpeg_frames(url_of(gw, device, channel), transport, 50)
        assert video == 50, video
        # 2 s of audio: 40 ms G.711 frames (50), 1024-sample AAC frames at 16 kHz (31).
        assert audio_frames >= {"none": 0, "aac": 25}.get(audio, 40), audio_frames
        assert err.strip() == "", err  # no decoder errors, no lost packets
        assert sample("gb28181_rtsp_sent_packets_total", {"transport": transport}) > 0


@needs_ffmpeg
async def test_substream_url_plays_the_substream(tmp_path: Path) -> None:
    async with live_channel(tmp_path) as (gw, sim, device, channel):
        video, _, _ = await ffmpeg_frames(url_of(gw, device, channel) + "?stream=sub", "tcp", 10)
        assert video == 10
        media = sim.device(channel).media  # type: ignore[union-attr]
        assert len(media.history) == 1
        assert "?stream=sub" in str(next(iter(gw.streams.sessions)))
        head = await raw_request(gw.rtsp.port, f"DESCRIBE {url_of(gw, device, channel)}?stream=third RTSP/1.0\r\n"
                                               "CSeq: 2\r\n\r\n")
        assert head.startswith(b"RTSP/1.0 404 ") and b"main or sub" in head


@needs_ffmpeg
async def test_hikvision_capture_replay_plays_over_rtsp(tmp_path: Path) -> None:
    capture = _capture("hikvision_h264_704x576_ps.lenpfx.rtp")
    async with live_channel(tmp_path, sim={"replay": str(capture)}) as (gw, sim, device, channel):
        rc, out, err = await ffprobe(url_of(gw, device, channel))
        assert rc == 0, err
        video = [s for s in json.loads(out)["streams"] if s["codec_type"] == "video"]
        assert (video[0]["codec_name"], video[0]["width"], video[0]["height"]) == ("h264", 704, 576)
        frames, _, err = await ffmpeg_frames(url_of(gw, device, channel), "tcp", 30)
        assert frames == 30 and err.strip() == "", err


@needs_ffmpeg
async def test_twenty_ffmpeg_viewers_share_one_invite_and_bye_follows_the_last(tmp_path: Path) -> None:
    async with live_channel(tmp_path, linger=0.5) as (gw, sim, device, channel):
        url = url_of(gw, device, channel)
        results = await asyncio.gather(*(ffmpeg_frames(url, ("tcp", "udp")[i % 2], 10, timeout=120)
                                         for i in range(20)))
        assert [r[0] for r in results] == [10] * 20
        media = sim.device(channel).media  # type: ignore[union-attr]
        assert len(media.history) == 1  # one INVITE for twenty viewers
        await wait_until(lambda: not gw.rtsp.connections, timeout=10)
        await wait_until(lambda: not media.sessions, timeout=5)  # BYE after the linger
        assert sample("gb28181_viewers", {"protocol": "rtsp"}) == 0


async def test_first_packet_is_a_keyframe_and_comes_fast_on_a_running_stream(tmp_path: Path) -> None:
    async with live_channel(tmp_path) as (gw, sim, device, channel):
        warm = await RawRtspClient.connect(gw.rtsp.port, f"{device}/{channel}")
        await warm.play_tcp()
        client = await RawRtspClient.connect(gw.rtsp.port, f"{device}/{channel}")
        await client.request("DESCRIBE")
        await client.request("SETUP", f"{client.base}/trackID=0",
                             [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")])
        loop = asyncio.get_running_loop()
        sent = loop.time()
        play = await client.request("PLAY")
        info = play.get("RTP-Info") or ""
        channel_no, packet = await client.frame()
        elapsed = loop.time() - sent
        assert channel_no == 0 and starts_keyframe_h264(packet[12:])
        assert elapsed < 1.0  # functional bound; the benchmark measures the real figure
        seq = int.from_bytes(packet[2:4], "big")
        ts = int.from_bytes(packet[4:8], "big")
        assert f"seq={seq}" in info and f"rtptime={ts}" in info
        assert sample("gb28181_viewers", {"protocol": "rtsp"}) == 2
        warm.close()
        client.close()


async def test_sender_reports_put_audio_and_video_on_one_timeline(tmp_path: Path) -> None:
    """Video and audio of the clip both sit on a 40 ms grid from PTS 0: mapped through their tracks' sender
    reports, every packet's NTP time must fall on one common 40 ms grid (that is what players sync on)."""
    async with live_channel(tmp_path) as (gw, sim, device, channel):
        client = await RawRtspClient.connect(gw.rtsp.port, f"{device}/{channel}")
        await client.play_tcp(tracks=2)
        reports: dict[int, tuple[int, int]] = {}
        rtp: dict[int, list[int]] = {0: [], 2: []}
        while len(reports) < 2 or min(len(v) for v in rtp.values()) < 10:
            ch, packet = await client.frame()
            if ch in (1, 3):
                (count, pt, body), *_ = rtcp_packets(packet)
                assert pt == 200 and count == 0
                hi, lo, ts = int.from_bytes(body[4:8], "big"), int.from_bytes(body[8:12], "big"), \
                    int.from_bytes(body[12:16], "big")
                reports.setdefault(ch - 1, (hi * 2**32 + lo, ts))
            else:
                rtp[ch].append(int.from_bytes(packet[4:8], "big"))
        times = []
        for ch, clock in ((0, 90000), (2, 8000)):
            ntp, ts0 = reports[ch]
            for ts in rtp[ch]:
                delta = ((ts - ts0 + 2**31) % 2**32) - 2**31
                times.append(ntp / 2**32 + delta / clock)
        origin = times[0]
        for t in times:
            off = (t - origin) % 0.04
            assert min(off, 0.04 - off) < 0.002, (t - origin)
        client.close()


async def test_udp_setup_sends_rtp_from_the_announced_server_port(tmp_path: Path) -> None:
    async with live_channel(tmp_path) as (gw, sim, device, channel):
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

        class Sink(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                got.put_nowait((data, addr))

        rtp_t, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
        rtcp_t, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
        rtp_port = rtp_t.get_extra_info("sockname")[1]
        rtcp_port = rtcp_t.get_extra_info("sockname")[1]
        client = await RawRtspClient.connect(gw.rtsp.port, f"{device}/{channel}")
        await client.request("DESCRIBE")
        resp = await client.request("SETUP", f"{client.base}/trackID=0", [
            ("Transport", f"RTP/AVP;unicast;destination=10.9.9.9;client_port={rtp_port}-{rtcp_port}")])
        assert resp.status == 200
        spec = rtsp_core.parse_transport(resp.get("Transport") or "")[0]
        assert spec.client_port == (rtp_port, rtcp_port) and spec.destination is None
        assert spec.server_port == (gw.rtsp.udp.port, gw.rtsp.udp.port + 1)
        await client.request("PLAY")
        data, addr = await asyncio.wait_for(got.get(), 5)
        while addr[1] != gw.rtsp.udp.port:  # the sender report may come first, from the RTCP port
            assert addr[1] == gw.rtsp.udp.port + 1
            data, addr = await asyncio.wait_for(got.get(), 5)
        assert starts_keyframe_h264(data[12:])
        # A datagram from the viewer's RTCP port counts as activity (keeps the session alive).
        conn = next(iter(gw.rtsp.connections))
        before = conn.last_activity
        await asyncio.sleep(0.05)
        rtcp_t.sendto(b"\x80\xc9\x00\x01\x00\x00\x00\x01", ("127.0.0.1", gw.rtsp.udp.port + 1))
        await wait_until(lambda: conn.last_activity > before, 2)
        assert (await client.request("TEARDOWN")).status == 200
        assert not gw.rtsp.udp.peers
        client.close()
        rtp_t.close()
        rtcp_t.close()


async def test_pause_stops_the_flow_and_play_resumes_with_continuous_numbers(tmp_path: Path) -> None:
    async with live_channel(tmp_path) as (gw, sim, device, channel):
        client = await RawRtspClient.connect(gw.rtsp.port, f"{device}/{channel}")
        await client.play_tcp()
        last_seq = last_ts = 0
        for _ in range(20):
            ch, packet = await client.frame()
            if ch == 0:
                last_seq = int.from_bytes(packet[2:4], "big")
                last_ts = int.from_bytes(packet[4:8], "big")
        assert (await client.request("PAUSE")).status == 200
        while client.frames:  # whatever was in flight before the PAUSE answer
            ch, packet = client.frames.popleft()
            if ch == 0:
                last_seq = int.from_bytes(packet[2:4], "big")
                last_ts = int.from_bytes(packet[4:8], "big")
        with pytest.raises(TimeoutError):
            await client.frame(timeout=0.5)  # paused: nothing flows
        play = await client.request("PLAY")
        assert play.status == 200
        ch, packet = await client.frame()
        while ch != 0:
            ch, packet = await client.frame()
        assert int.from_bytes(packet[2:4], "big") == (last_seq + 1) % 65536
        assert 0 < (int.from_bytes(packet[4:8], "big") - last_ts) % 2**32 < 90000 * 5
        assert starts_keyframe_h264(packet[12:])
        client.close()


async def test_pipelined_requests_and_teardown_then_more(tmp_path: Path) -> None:
    async with live_channel(tmp_path) as (gw, sim, device, channel):
        client = await RawRtspClient.connect(gw.rtsp.port, f"{device}/{channel}")
        # Three requests in one write: answered in order, each with its CSeq.
        for method in ("OPTIONS", "DESCRIBE", "GET_PARAMETER"):
            client.send(method)
        answers = [await client.response() for _ in range(3)]
        assert [(a.status, a.cseq) for a in answers] == [(200, 1), (200, 2), (200, 3)]
        assert answers[1].body.startswith(b"v=0")
        await client.play_tcp()
        await client.frame()
        assert (await client.request("TEARDOWN")).status == 200
        client.frames.clear()
        assert (await client.request("PLAY")).status == 454  # the session is gone
        client.session = None
        await client.play_tcp()  # the same connection starts again
        ch, packet = await client.frame()
        while ch != 0:
            ch, packet = await client.frame()
        assert starts_keyframe_h264(packet[12:])
        client.close()


async def test_slow_tcp_viewer_skips_to_the_next_keyframe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rtsp_server, "MAX_WRITE_BUFFER", 16 * 1024)
    async with live_channel(tmp_path, sim={"width": 640, "height": 360}) as (gw, sim, device, channel):
        import socket

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.rtsp.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        client = RawRtspClient(reader, writer, url_of(gw, device, channel))
        await client.request("DESCRIBE")
        await client.request("SETUP", f"{client.base}/trackID=0",
                             [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")])
        await client.request("PLAY")
        conn = next(iter(gw.rtsp.connections))
        # Small kernel buffers on both ends, so the gateway's own write buffer is what fills.
        conn.transport.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport = writer.transport
        transport.pause_reading()  # the viewer stops reading: the gateway's buffer fills
        await wait_until(lambda: conn.player is not None and conn.player.skipped > 0, 15)
        assert conn.transport.get_write_buffer_size() < 16 * 1024 + 512 * 1024  # type: ignore[union-attr]
        transport.resume_reading()
        # Drain what was queued, then the stream goes on from a keyframe: nothing partial in between.
        keyframes = 0
        for _ in range(3000):
            ch, packet = await client.frame()
            if ch == 0 and starts_keyframe_h264(packet[12:]):
                keyframes += 1
                if keyframes == 2:
                    break
        assert keyframes == 2
        client.close()


async def test_camera_bye_ends_viewers_with_rtcp_bye_and_reason(tmp_path: Path) -> None:
    async with live_channel(tmp_path) as (gw, sim, device, channel):
        client = await RawRtspClient.connect(gw.rtsp.port, f"{device}/{channel}")
        await client.play_tcp()
        await client.frame()
        (live,) = sim.device(channel).media.sessions.values()  # type: ignore[union-attr]
        assert await live.end_stream() == 200
        bye = None
        with pytest.raises(asyncio.IncompleteReadError):
            for _ in range(10000):
                ch, packet = await client.frame()
                if ch == 1:
                    kinds = rtcp_packets(packet)
                    if kinds[-1][1] == 203:
                        bye = kinds[-1][2]
        assert bye is not None
        assert b"stream ended" in bye[5:5 + bye[4]]
        await wait_until(lambda: not gw.rtsp.connections, 5)


async def test_connection_limit_answers_503(tmp_path: Path) -> None:
    async with running_gateway(rtsp_config(tmp_path, max_connections=2)) as gw:
        keep = [await RawRtspClient.connect(gw.rtsp.port, "x") for _ in range(2)]
        for c in keep:
            assert (await c.request("OPTIONS")).status == 200
        extra = await RawRtspClient.connect(gw.rtsp.port, "x")
        resp = await extra.request("OPTIONS")
        assert resp.status == 503 and resp.cseq == 1
        assert await extra.reader.read() == b""  # closed
        assert sample("gb28181_rtsp_connections_refused_total") >= 1
        for c in keep:
            c.close()


@needs_ffmpeg
@pytest.mark.parametrize("mode", ["digest", "basic"])
async def test_viewer_authentication(tmp_path: Path, mode: str) -> None:
    async with live_channel(tmp_path, auth=mode, password="s3cret-Pass") as (gw, sim, device, channel):
        url = url_of(gw, device, channel)
        rc, _, err = await ffprobe(url)
        assert rc != 0 and "401" in err, err
        rc, _, err = await ffprobe(url.replace("rtsp://", "rtsp://viewer:wrong@"))
        assert rc != 0 and "401" in err, err
        video, _, err = await ffmpeg_frames(url.replace("rtsp://", "rtsp://viewer:s3cret-Pass@"), "tcp", 10)
        assert video == 10
        # OPTIONS stays open; the challenge is the configured scheme.
        client = await RawRtspClient.connect(gw.rtsp.port, f"{device}/{channel}")
        assert (await client.request("OPTIONS")).status == 200
        resp = await client.request("DESCRIBE")
        assert resp.status == 401
        assert (resp.get("WWW-Authenticate") or "").startswith("Digest " if mode == "digest" else "Basic ")
        failures = sample("gb28181_rtsp_auth_failures_total")
        bad = "Basic dmlld2VyOm5vcGU=" if mode == "basic" else (
            'Digest username="viewer", realm="gb28181-gateway", nonce="00", uri="x", response="00"')
        for _ in range(rtsp_server.MAX_AUTH_FAILURES):
            if client.reader.at_eof():
                break
            resp = await client.request("DESCRIBE", headers=[("Authorization", bad)])
            assert resp.status == 401
        assert await client.reader.read() == b""  # too many failures: closed
        assert sample("gb28181_rtsp_auth_failures_total") >= failures + rtsp_server.MAX_AUTH_FAILURES


def test_auth_beyond_loopback_needs_a_password() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match="rtsp.password"):
        RtspConfig(listen="0.0.0.0")
    assert RtspConfig(listen="0.0.0.0", password="x").effective_auth == "digest"
    assert RtspConfig(listen="0.0.0.0", auth="none").effective_auth == "none"
    assert RtspConfig().effective_auth == "none"
    with pytest.raises(ConfigError, match="rtsp.udp_port"):
        RtspConfig(udp_port=5001)


async def test_describe_offline_device_404_and_silent_camera_503_with_reasons(tmp_path: Path) -> None:
    from gateway.sim.media import Misbehaviour

    async with live_channel(tmp_path, sim={"devices": 2}) as (gw, sim, device, channel):
        # A camera that does not answer the INVITE in time (media.invite_timeout = 3 s here): 503.
        sim.device(channel).media.misbehave = Misbehaviour(answer_delay=10)  # type: ignore[union-attr]
        client = await RawRtspClient.connect(gw.rtsp.port, f"{device}/{channel}")
        resp = await client.request("DESCRIBE", timeout=15)
        assert resp.status == 503 and resp.reason, resp
        client.close()
        # An offline device: 404 with the reason in the status line.
        other = sim.devices[1]
        other_channel = next(iter(gw.devices.get(other.device_id).channels))  # type: ignore[union-attr]
        await other.stop(unregister=True)
        await wait_until(lambda: not gw.devices.get(other.device_id).rec.online, 5)  # type: ignore[union-attr]
        client = await RawRtspClient.connect(gw.rtsp.port, f"{other.device_id}/{other_channel}")
        resp = await client.request("DESCRIBE")
        assert resp.status == 404 and "offline" in resp.reason, resp
        client.close()
