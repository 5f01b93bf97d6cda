"""The RTSP server end to end, with real clients (ffprobe/ffmpeg) against a gateway and a simulated camera."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from gw_util import running_gateway
from test_streams import config, started, wait_until

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
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw)
        try:
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
        finally:
            await sim.stop()


@needs_ffmpeg
async def test_unknown_channel_fails_in_ffprobe(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw)
        try:
            rc, out, err = await ffprobe(url_of(gw, sim.devices[0].device_id, "34020000001310000099"))
            assert rc != 0
            assert "404" in err, err
        finally:
            await sim.stop()


@needs_ffmpeg
async def test_two_viewers_share_one_invite_then_linger_and_bye(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path, linger=0.5)) as gw:
        sim = await started(gw)
        try:
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
        finally:
            await sim.stop()


async def test_session_timeout_leaves_the_stream(tmp_path: Path) -> None:
    from dataclasses import replace

    from gateway.config import RtspConfig

    cfg = replace(config(tmp_path, linger=0.3), rtsp=RtspConfig(port=0, session_timeout=0.5))
    async with running_gateway(cfg) as gw:
        sim = await started(gw)
        try:
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
        finally:
            await sim.stop()
