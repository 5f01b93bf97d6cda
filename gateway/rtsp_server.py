"""RTSP server: live streams to RTSP viewers, a thin asyncio adapter over ``media.rtsp`` and ``StreamManager``.

Theory of operation
-------------------
Viewers play ``rtsp://host:port/<device_id>/<channel_id>`` (or ``/<channel_id>`` when the channel ID is unique;
``?stream=sub`` for the sub-stream). Each TCP connection has one ``RtspConnectionParser``; requests are handled
in order by one task per connection (``DESCRIBE`` awaits the stream, so later pipelined requests wait for it).

* ``DESCRIBE`` opens the stream (``StreamManager.open``: 404 unknown/offline, 503 no answer, 504 no media, with the
  ``StreamError`` reason as the reason phrase) and answers SDP built from the GOP cache's parameter sets: track 0
  video (H.264 packetization-mode 1, or H.265), track 1 PCMA/8000 when G.711A audio has been seen on the stream.
  The stream joined here is kept for the connection and left (``session.leave``) when the connection closes,
  on ``TEARDOWN`` or when the RTSP session times out (``rtsp.session_timeout`` without a request or RTCP).
* ``SETUP`` accepts RTP over the RTSP connection (``RTP/AVP/TCP;interleaved=``); UDP is answered
  ``461 Unsupported Transport``.
* ``PLAY`` subscribes a callback consumer to the session's ``FanOut``: the cached GOP is replayed at once (the
  viewer starts on a keyframe), each access unit is packetized (``media.packetize``) and written ``$``-framed.
  ``RTP-Info`` gives the first sequence number and RTP timestamp of each track. A viewer whose transport write
  buffer is above ``MAX_WRITE_BUFFER`` does not take the unit (the callback returns ``False``): it resumes at the
  next keyframe rather than buffering without bound.
"""

from __future__ import annotations

import asyncio
import secrets
import weakref

import structlog

from media import rtsp, sdp
from media.frames import AccessUnit, Codec
from media.packetize import G711Packetizer, H264Packetizer, H265Packetizer, h264_fmtp, h265_fmtp

from .config import RtspConfig
from .fanout import CallbackSubscription, StreamEnded, Subscription
from .streams import StreamError, StreamManager, StreamSession

log = structlog.get_logger("gateway.rtsp")

PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
SERVER = "gb28181-gateway"
#: Bytes a viewer's TCP write buffer may hold before it skips to the next keyframe.
MAX_WRITE_BUFFER = 4 * 1024 * 1024
#: How long DESCRIBE waits for the parameter sets (and a first audio unit) after the first frame.
PARAMS_WAIT = 2.0
AUDIO_WAIT = 0.3
VIDEO_PT = 96
PCMA_PT = 8


class _Reply(Exception):
    """Answer the current request with ``status`` (and ``reason``)."""

    def __init__(self, status: int, reason: str | None = None) -> None:
        super().__init__(reason or rtsp.reason_phrase(status))
        self.status = status
        self.reason = reason


class RtspServer:
    """The gateway component: ``start()`` listens on ``rtsp.listen:rtsp.port``; ``stop()`` closes every viewer."""

    def __init__(self, config: RtspConfig, streams: StreamManager) -> None:
        self.config = config
        self.streams = streams
        self.port = config.port
        self._server: asyncio.Server | None = None
        self.connections: set[_Connection] = set()
        # Streams on which G.711A audio has been seen (for the SDP audio track).
        self._audio: weakref.WeakKeyDictionary[StreamSession, Codec] = weakref.WeakKeyDictionary()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.config.listen, self.config.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("rtsp listening", listen=self.config.listen, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close("gateway stopping")
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def note_audio(self, session: StreamSession, codec: Codec) -> None:
        self._audio.setdefault(session, codec)


class _Connection(asyncio.Protocol):
    def __init__(self, server: RtspServer) -> None:
        self.server = server
        self.parser = rtsp.RtspConnectionParser()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.queue: asyncio.Queue[rtsp.RtspRequest] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()
        self.last_activity = self.loop.time()
        self.watchdog: asyncio.TimerHandle | None = None
        self.closed = False
        # Stream state
        self.stream_path: tuple[str | None, str, int] | None = None
        self.session: StreamSession | None = None
        self.sub: Subscription | None = None
        self.has_audio = False
        self.session_id: str | None = None
        self.channels: dict[int, int] = {}  # track → interleaved RTP channel
        self.player: CallbackSubscription | None = None
        self.video: H264Packetizer | H265Packetizer | None = None
        self.audio: G711Packetizer | None = None
        self.video_codec: Codec | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server.connections.add(self)
        self.task = asyncio.create_task(self._serve(), name=f"rtsp {self.peer}")
        self._arm_watchdog()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        try:
            items = self.parser.feed(data)
        except rtsp.RtspError as exc:
            log.info("rtsp bad request", peer=self.peer, reason=exc.reason)
            self._write(bytes(rtsp.error_response(exc, [("Server", SERVER)])))
            self.close(exc.reason)
            return
        for item in items:
            if isinstance(item, rtsp.RtspRequest):
                self.queue.put_nowait(item)
            # InterleavedFrame: RTCP receiver reports; they count as activity only.

    def connection_lost(self, exc: Exception | None) -> None:
        self.close("connection closed")

    # -- lifecycle
    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.connections.discard(self)
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        self._leave_stream()
        if self.transport is not None:
            self.transport.close()
        log.info("rtsp connection closed", peer=self.peer, reason=reason)

    def _arm_watchdog(self) -> None:
        timeout = self.server.config.session_timeout
        self.watchdog = self.loop.call_later(timeout / 4 + 0.05, self._check_idle)

    def _check_idle(self) -> None:
        if self.closed:
            return
        if self.loop.time() - self.last_activity > self.server.config.session_timeout:
            self.close("session timeout")
            return
        self._arm_watchdog()

    def _leave_stream(self) -> None:
        if self.player is not None:
            self.player.close()
            self.player = None
        if self.session is not None and self.sub is not None:
            self.session.leave(self.sub)
        self.session = self.sub = None
        self.stream_path = None
        self.session_id = None
        self.channels = {}
        self.video = self.audio = None

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- requests
    async def _serve(self) -> None:
        while True:
            req = await self.queue.get()
            self.last_activity = self.loop.time()
            try:
                status, headers, body, session = await self._handle(req)
                resp = rtsp.build_response(req, status, [("Server", SERVER), *headers], body, session=session)
            except _Reply as exc:
                resp = rtsp.build_response(req, exc.status, [("Server", SERVER)], reason=exc.reason)
            except rtsp.RtspError as exc:
                resp = rtsp.build_response(req, exc.status, [("Server", SERVER)])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rtsp request failed", peer=self.peer, method=req.method)
                resp = rtsp.build_response(req, 500, [("Server", SERVER)])
            if self.closed:
                return
            self._write(bytes(resp))
            if resp.status < 300 and req.method == "PLAY":
                self._start_playing()
            log.debug("rtsp request", peer=self.peer, method=req.method, uri=req.uri, status=resp.status)

    async def _handle(self, req: rtsp.RtspRequest) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        method = req.method
        if method == "OPTIONS":
            return 200, [("Public", PUBLIC)], b"", None
        if method not in ("DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"):
            raise _Reply(405 if method in rtsp.METHODS else 501)
        if method == "DESCRIBE":
            return await self._describe(req)
        if method == "SETUP":
            return await self._setup(req)
        session = self._check_session(req)
        if method == "PLAY":
            return self._play(req)
        if method == "PAUSE":
            raise _Reply(455, "Live streams cannot be paused")
        if method == "TEARDOWN":
            self._leave_stream()
            return 200, [], b"", None
        return 200, [], b"", session  # GET_PARAMETER / SET_PARAMETER keepalive

    def _check_session(self, req: rtsp.RtspRequest) -> str | None:
        given = req.session
        if given is None:
            if req.method in ("PLAY", "PAUSE"):
                raise _Reply(454)
            return None
        ident, _ = rtsp.parse_session(given)
        if ident != self.session_id:
            raise _Reply(454)
        return ident

    def _target(self, req: rtsp.RtspRequest) -> tuple[tuple[str | None, str, int], str | None]:
        url = rtsp.parse_url(req.uri)
        parts = [p for p in url.path.split("/") if p]
        if not 1 <= len(parts) <= 2:
            raise _Reply(404, "Expected /<device_id>/<channel_id> or /<channel_id>")
        device, channel = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        query = dict(kv.partition("=")[::2] for kv in url.query.split("&") if kv)
        substream = 1 if query.get("stream", "main").lower() in ("sub", "1") else 0
        return (device, channel, substream), url.control

    async def _open(self, path: tuple[str | None, str, int]) -> StreamSession:
        if self.session is not None and not self.session.fanout.closed:
            if path == self.stream_path:
                return self.session
            self._leave_stream()  # another stream on the same connection: the old one goes
        device, channel, substream = path
        try:
            session, sub = await self.server.streams.open(device, channel, substream=substream,
                                                          consumer=f"rtsp {self.peer}")
        except StreamError as exc:
            raise _Reply(exc.http_status if exc.http_status in (404, 503, 504) else 502, exc.reason) from None
        if self.closed:
            session.leave(sub)
            raise asyncio.CancelledError
        sub.close()  # the consumer count stays until leave(); units flow to the PLAY callback instead
        self.session, self.sub, self.stream_path = session, sub, path
        cache = session.fanout.cache
        deadline = self.loop.time() + PARAMS_WAIT
        while (cache.sps is None or cache.pps is None or (cache.video_codec is Codec.H265 and cache.vps is None)
               or not cache.has_keyframe) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        if session not in self.server._audio:
            self._scan_audio(session)
            deadline = self.loop.time() + AUDIO_WAIT
            while session not in self.server._audio and self.loop.time() < deadline:
                await asyncio.sleep(0.05)
                self._scan_audio(session)
        self.has_audio = self.server._audio.get(session) is Codec.G711A
        return session

    def _scan_audio(self, session: StreamSession) -> None:
        for au in session.fanout.cache.units:
            if au.codec.is_audio:
                self.server.note_audio(session, au.codec)
                return

    async def _describe(self, req: rtsp.RtspRequest) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        path, _ = self._target(req)
        session = await self._open(path)
        cache = session.fanout.cache
        if cache.sps is None or cache.pps is None:
            raise _Reply(503, "No parameter sets received yet")
        if cache.video_codec is Codec.H264:
            video_attrs: list[sdp.Attribute] = [("rtpmap", f"{VIDEO_PT} H264/90000"),
                                                ("fmtp", h264_fmtp(cache.sps, cache.pps, VIDEO_PT))]
        elif cache.video_codec is Codec.H265 and cache.vps is not None:
            video_attrs = [("rtpmap", f"{VIDEO_PT} H265/90000"),
                           ("fmtp", f"{VIDEO_PT} {h265_fmtp(cache.vps, cache.sps, cache.pps)}")]
        else:
            raise _Reply(415, f"Video codec {cache.video_codec} not served over RTSP")
        media = [sdp.MediaDescription("video", 0, "RTP/AVP", (str(VIDEO_PT),),
                                      attributes=(*video_attrs, ("control", "trackID=0")))]
        if self.has_audio:
            media.append(sdp.MediaDescription("audio", 0, "RTP/AVP", (str(PCMA_PT),),
                                              attributes=(("rtpmap", f"{PCMA_PT} PCMA/8000"),
                                                          ("control", "trackID=1"))))
        host = (self.transport.get_extra_info("sockname") or ("0.0.0.0",))[0] if self.transport else "0.0.0.0"
        addrtype = "IP6" if ":" in host else "IP4"
        desc = sdp.SessionDescription(
            media=tuple(media),
            origin=sdp.Origin("-", str(secrets.randbits(31)), "1", host, addrtype=addrtype),
            session_name=str(session.key),
            connection=sdp.Connection("0.0.0.0" if addrtype == "IP4" else "::", addrtype=addrtype),
            attributes=(("tool", SERVER), ("range", "npt=now-"), ("control", "*")),
        )
        base = req.uri.rstrip("/") + "/"
        return 200, [("Content-Base", base), ("Content-Type", "application/sdp")], bytes(desc), None

    async def _setup(self, req: rtsp.RtspRequest) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        path, control = self._target(req)
        if self.session_id is not None and req.session is not None:
            self._check_session(req)
        await self._open(path)
        track = 0
        if control is not None:
            digits = "".join(c for c in control if c.isdigit())
            track = int(digits) if digits else 0
        if track > (1 if self.has_audio else 0):
            raise _Reply(404, f"No track {track}")
        header = req.get("Transport")
        if header is None:
            raise _Reply(461, "Transport header required")
        spec = next((s for s in rtsp.parse_transport(header) if s.is_tcp), None)
        if spec is None:
            raise _Reply(461, "Only RTP/AVP/TCP (interleaved) is supported")
        channels = spec.interleaved or (2 * track, 2 * track + 1)
        if any(ch == channels[0] for t, ch in self.channels.items() if t != track):
            raise _Reply(461, "Interleaved channel already in use")
        self.channels[track] = channels[0]
        if self.session_id is None:
            self.session_id = secrets.token_hex(8)
        transport = f"RTP/AVP/TCP;unicast;interleaved={channels[0]}-{channels[1]}"
        session = rtsp.format_session(self.session_id, int(self.server.config.session_timeout))
        return 200, [("Transport", transport)], b"", session

    def _play(self, req: rtsp.RtspRequest) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        if self.session is None or not self.channels or self.session_id is None:
            raise _Reply(455, "SETUP first")
        if self.session.fanout.closed:
            raise _Reply(503, "Stream ended")
        codec = self.session.fanout.cache.video_codec
        base = req.uri.rstrip("/")
        infos = []
        if self.player is None:
            ssrc = secrets.randbits(32)
            if 0 in self.channels:
                cls = H265Packetizer if codec is Codec.H265 else H264Packetizer
                self.video = cls(ssrc, VIDEO_PT, seq=secrets.randbits(16), ts_offset=secrets.randbits(32))
                self.video_codec = codec
            if 1 in self.channels:
                self.audio = G711Packetizer(ssrc ^ 1, PCMA_PT, seq=secrets.randbits(16),
                                            ts_offset=secrets.randbits(32))
        for track, pk in ((0, self.video), (1, self.audio)):
            if pk is not None and track in self.channels:
                infos.append(rtsp.rtp_info(f"{base}/trackID={track}", pk.seq, pk.last_timestamp))
        headers = [("Range", "npt=now-")]
        if infos:
            headers.append(("RTP-Info", ",".join(infos)))
        return 200, headers, b"", self.session_id

    def _start_playing(self) -> None:
        if self.player is not None or self.session is None or self.closed:
            return
        try:
            self.player = self.session.fanout.subscribe_callback(
                f"rtsp {self.peer}", self._on_unit, on_end=self._on_stream_end)
        except StreamEnded as exc:
            self.close(f"stream ended: {exc}")

    # -- media
    def _on_unit(self, au: AccessUnit) -> bool | None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return None
        codec = au.codec
        if codec.is_video:
            if codec is not self.video_codec:
                self.loop.call_soon(self.close, "video codec changed")
                return None
            if self.video is None:
                return None
            if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                return False  # resume at the next keyframe
            channel = self.channels[0]
            packets = self.video.packetize(au)
        else:
            if self.session is not None and codec.is_audio:
                self.server.note_audio(self.session, codec)
            if self.audio is None or codec is not Codec.G711A:
                return None
            if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                return None  # audio alone never forces a skip; it is just dropped
            channel = self.channels[1]
            packets = self.audio.packetize(au)
        prefix = b"$" + bytes((channel,))
        transport.writelines([b for p in packets for b in (prefix + len(p).to_bytes(2, "big"), p)])
        return True

    def _on_stream_end(self, reason: str) -> None:
        if reason != "unsubscribed":
            self.loop.call_soon(self.close, f"stream ended: {reason}")
