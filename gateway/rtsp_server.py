"""RTSP server: live streams to RTSP viewers, a thin asyncio adapter over ``media.rtsp`` and ``StreamManager``.

Theory of operation
-------------------
Viewers play ``rtsp://host:port/<device_id>/<channel_id>`` (or ``/<channel_id>`` when the channel ID is unique;
``?stream=sub`` for the sub-stream). Each TCP connection has one ``RtspConnectionParser``; requests are handled
in order by one task per connection (``DESCRIBE`` awaits the stream, so later pipelined requests wait for it).
A connection carries one RTSP session of one stream at a time.

* ``DESCRIBE`` opens the stream (``StreamManager.open``: 404 unknown/offline, 503 no answer, 504 no media, with the
  ``StreamError`` reason as the reason phrase) and answers SDP built from the GOP cache's parameter sets: track 0
  video (H.264 packetization-mode 1 with ``sprop-parameter-sets``/``profile-level-id``, or H.265 with
  ``sprop-vps/sps/pps``), track 1 audio when the stream carries some (PCMA, PCMU, or AAC as RFC 3640
  ``mpeg4-generic``). The stream joined here is kept for the connection and left (``session.leave``) when the
  connection closes, on ``TEARDOWN`` or when the RTSP session times out (``rtsp.session_timeout`` without a
  request or RTCP from the viewer).
* ``SETUP`` takes, per track, RTP over the RTSP connection (``RTP/AVP/TCP;interleaved=``) or UDP unicast
  (``RTP/AVP;client_port=``). UDP goes to the RTSP peer's own address only (a ``destination=`` is ignored: the
  server must not be usable to flood a third party) from one server-wide pair of sockets (``rtsp.udp_port`` and
  the next port), whose received datagrams (receiver reports, NAT openers) count as the viewer's activity.
* ``PLAY`` subscribes a callback consumer to the session's ``FanOut``: the cached GOP is replayed at once (the
  viewer starts on a keyframe), each access unit is packetized (``media.packetize``) and written ``$``-framed or
  sent by UDP. ``RTP-Info`` gives the first sequence number and RTP timestamp of each track. ``PAUSE`` stops the
  flow (a live stream cannot be paused; the next ``PLAY`` starts again at a keyframe) with sequence numbers and
  timestamps continuing. An RTCP sender report follows each track's first unit and then one every
  ``RTCP_INTERVAL``; all tracks map their timestamps onto one NTP timeline (from the stream's PTS), which is how
  players synchronise audio and video.
* Flow control: a TCP viewer whose transport write buffer is above ``MAX_WRITE_BUFFER`` does not take the unit (the
  callback returns ``False``): it resumes at the next keyframe rather than buffering without bound. UDP output
  replays the cached GOP at PLAY through a per-viewer token bucket (``rtsp.udp_pace_rate``, bursts of
  ``PACE_BURST``) so that burst does not overflow the client's socket buffer; live media goes out as it comes
  (behind the paced backlog while one drains, never delayed otherwise). A viewer whose paced queue exceeds
  ``MAX_PACED_BYTES`` skips to the next keyframe the same way.
* A stream that ends (camera BYE, no media, gateway stopping) ends its viewers: an RTCP BYE with the reason on
  every track, then the connection is closed.
* Authentication (``rtsp.auth``): Digest (RFC 2617 without qop, which live555/VLC, ffmpeg and NVRs all speak) or
  Basic; ``OPTIONS`` is always open; a connection is authenticated by its first accepted request. After
  ``MAX_AUTH_FAILURES`` wrong answers the connection is closed.
* Limits: ``rtsp.max_connections`` (beyond: 503 and close), ``MAX_PENDING_REQUESTS`` pipelined requests per
  connection, the parser's message size cap. Counters go to ``gateway.metrics`` about once a second.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import structlog

from media import rtsp, sdp
from media.frames import AccessUnit, Codec
from media.packetize import (
    AacPacketizer,
    G711Packetizer,
    H264Packetizer,
    H265Packetizer,
    PacketizeError,
    aac_fmtp,
    adts_info,
    h264_fmtp,
    h265_fmtp,
)
from media.rtp import build_rtcp_bye, build_sender_report, ntp_timestamp
from sip.digest import AuthResult, Challenge, Credentials, DigestAlgorithm, NonceManager, verify
from sip.errors import SipProtocolError

from . import metrics
from .config import RtspConfig, is_loopback
from .fanout import CallbackSubscription, StreamEnded, Subscription
from .streams import StreamError, StreamManager, StreamSession, parse_substream

log = structlog.get_logger("gateway.rtsp")

PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
SERVER = "gb28181-gateway"
REALM = "gb28181-gateway"
#: Bytes a viewer's TCP write buffer may hold before it skips to the next keyframe.
MAX_WRITE_BUFFER = 4 * 1024 * 1024
#: Bytes a UDP viewer's paced queue may hold before it skips to the next keyframe.
MAX_PACED_BYTES = 4 * 1024 * 1024
#: Token bucket depth of the UDP pacer: bytes sent back to back before pacing starts.
PACE_BURST = 64 * 1024
#: Seconds between RTCP sender reports on a track (RFC 3550 §6.2's minimum).
RTCP_INTERVAL = 5.0
#: Requests a connection may have queued while an earlier one (DESCRIBE) is still being answered.
MAX_PENDING_REQUESTS = 32
#: Wrong credentials tolerated on one connection before it is closed.
MAX_AUTH_FAILURES = 5
#: Seconds a digest nonce stays valid.
NONCE_LIFETIME = 300.0
#: Seconds between the server's housekeeping passes (idle sessions, metrics).
TICK = 1.0
VIDEO_PT = 96
AAC_PT = 97
_AUDIO_PT = {Codec.G711A: (8, "PCMA/8000"), Codec.G711U: (0, "PCMU/8000")}
_MASK32 = 0xFFFFFFFF
_MASK33 = (1 << 33) - 1
_HALF33 = 1 << 32

Packetizer = H264Packetizer | H265Packetizer | G711Packetizer | AacPacketizer


class _Reply(Exception):
    """Answer the current request with ``status`` (and ``reason``, extra ``headers``)."""

    def __init__(self, status: int, reason: str | None = None, headers: list[tuple[str, str]] | None = None,
                 close: bool = False) -> None:
        super().__init__(reason or rtsp.reason_phrase(status))
        self.status = status
        self.reason = reason
        self.headers = headers or []
        self.close = close


# ------------------------------------------------------------------------------------------------- tracks
@dataclass(frozen=True, slots=True)
class TrackSpec:
    """One media line of the SDP a DESCRIBE answers (``a=control:trackID=<index>``)."""

    index: int
    kind: Literal["video", "audio"]
    codec: Codec
    pt: int
    clock: int
    rtpmap: str
    fmtp: str | None = None

    def media(self) -> sdp.MediaDescription:
        attrs: list[sdp.Attribute] = [("rtpmap", f"{self.pt} {self.rtpmap}")]
        if self.fmtp is not None:
            attrs.append(("fmtp", f"{self.pt} {self.fmtp}"))
        attrs.append(("control", f"trackID={self.index}"))
        return sdp.MediaDescription(self.kind, 0, "RTP/AVP", (str(self.pt),), attributes=tuple(attrs))

    def packetizer(self, ssrc: int, seq: int, ts_offset: int) -> Packetizer:
        codec = self.codec
        if codec is Codec.H264:
            return H264Packetizer(ssrc, self.pt, seq=seq, ts_offset=ts_offset)
        if codec is Codec.H265:
            return H265Packetizer(ssrc, self.pt, seq=seq, ts_offset=ts_offset)
        if codec is Codec.AAC:
            return AacPacketizer(ssrc, self.pt, seq=seq, ts_offset=ts_offset)
        return G711Packetizer(ssrc, self.pt, seq=seq, ts_offset=ts_offset)


def describe_tracks(session: StreamSession, audio: AccessUnit | None) -> tuple[TrackSpec, ...]:
    """The tracks of ``session`` from its GOP cache (video) and its first audio unit (``audio``).

    Raises ``_Reply`` 503 before the parameter sets are known, 415 for a video codec RTSP cannot carry here.
    """
    cache = session.fanout.cache
    if cache.sps is None or cache.pps is None:
        raise _Reply(503, "No parameter sets received yet")
    if cache.video_codec is Codec.H264:
        video = TrackSpec(0, "video", Codec.H264, VIDEO_PT, 90000, "H264/90000", h264_fmtp(cache.sps, cache.pps))
    elif cache.video_codec is Codec.H265 and cache.vps is not None:
        video = TrackSpec(0, "video", Codec.H265, VIDEO_PT, 90000, "H265/90000",
                          h265_fmtp(cache.vps, cache.sps, cache.pps))
    else:
        raise _Reply(415, f"Video codec {cache.video_codec} not served over RTSP")
    tracks = [video]
    if audio is not None:
        codec, sample = audio.codec, audio.data
        if codec in _AUDIO_PT:
            pt, rtpmap = _AUDIO_PT[codec]
            tracks.append(TrackSpec(1, "audio", codec, pt, 8000, rtpmap))
        elif codec is Codec.AAC:
            try:
                rate, channels = adts_info(sample)
                tracks.append(TrackSpec(1, "audio", codec, AAC_PT, rate, f"MPEG4-GENERIC/{rate}/{max(channels, 1)}",
                                        aac_fmtp(sample)))
            except PacketizeError as exc:
                log.info("aac audio not described", stream=str(session.key), reason=str(exc))
    return tuple(tracks)


@dataclass(slots=True, eq=False)
class _Track:
    """A track set up on one connection: where its RTP goes and its packetizer while playing."""

    spec: TrackSpec
    channel: int | None = None  # interleaved RTP channel (TCP); RTCP is channel + 1
    rtp_addr: tuple[str, int] | None = None  # UDP destination of RTP
    rtcp_addr: tuple[str, int] | None = None
    packetizer: Packetizer | None = None
    ssrc: int = 0
    last_ext: int = 0  # unwrapped PTS (90 kHz, from the connection's base) of the last unit sent
    sr_due: float = 0.0

    @property
    def transport(self) -> str:
        if self.channel is not None:
            return f"RTP/AVP/TCP;unicast;interleaved={self.channel}-{self.channel + 1}"
        assert self.rtp_addr is not None and self.rtcp_addr is not None
        return f"RTP/AVP;unicast;client_port={self.rtp_addr[1]}-{self.rtcp_addr[1]}"


# ------------------------------------------------------------------------------------------------- UDP
class _UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, owner: _UdpSockets) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        conn = self.owner.peers.get((addr[0], addr[1]))
        if conn is not None:
            conn.last_activity = conn.loop.time()

    def error_received(self, exc: Exception) -> None:
        log.debug("rtsp udp error", error=str(exc))  # ICMP port unreachable from a viewer gone away


class _UdpSockets:
    """The server's RTP/RTCP UDP socket pair (an even port and the next one), shared by every UDP viewer."""

    def __init__(self) -> None:
        self.rtp: asyncio.DatagramTransport | None = None
        self.rtcp: asyncio.DatagramTransport | None = None
        self.port = 0
        self.peers: dict[tuple[str, int], _Connection] = {}

    async def open(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(64):
            rtp, _p = await loop.create_datagram_endpoint(lambda: _UdpEndpoint(self), local_addr=(host, port))
            got = rtp.get_extra_info("sockname")[1]
            if got % 2 == 0 and got < 65535:
                try:
                    rtcp, _p = await loop.create_datagram_endpoint(lambda: _UdpEndpoint(self),
                                                                   local_addr=(host, got + 1))
                except OSError:
                    if port:
                        rtp.close()
                        raise
                else:
                    self.rtp, self.rtcp, self.port = rtp, rtcp, got
                    return
            rtp.close()
        raise OSError("no free even/odd UDP port pair for RTSP")

    def close(self) -> None:
        for t in (self.rtp, self.rtcp):
            if t is not None:
                t.close()
        self.rtp = self.rtcp = None
        self.peers.clear()


class _Pacer:
    """A token bucket in front of the shared UDP socket for one viewer (see the module docstring): the cached GOP
    replayed at PLAY is spread out; live media goes straight out unless a backlog is still draining."""

    __slots__ = ("loop", "udp", "rate", "tokens", "last", "queue", "queued", "timer", "replaying")

    def __init__(self, loop: asyncio.AbstractEventLoop, udp: _UdpSockets, rate_bytes: float) -> None:
        self.loop = loop
        self.udp = udp
        self.rate = rate_bytes
        self.tokens = float(PACE_BURST)
        self.last = loop.time()
        self.queue: deque[tuple[bytes, tuple[str, int]]] = deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.replaying = False

    def send(self, packets: list[bytes], addr: tuple[str, int], *, paced: bool) -> None:
        """Send at once (live media, nothing queued), or behind what is queued / through the bucket (``paced``:
        the cached GOP replayed at PLAY)."""
        if paced or self.queue:
            self._enqueue(packets, addr)
            return
        sock = self.udp.rtp
        if sock is not None:
            for p in packets:
                sock.sendto(p, addr)

    def _enqueue(self, packets: list[bytes], addr: tuple[str, int]) -> None:
        for p in packets:
            self.queue.append((p, addr))
            self.queued += len(p)
        if self.timer is None:
            self._drain()

    def _drain(self) -> None:
        self.timer = None
        now = self.loop.time()
        tokens = min(PACE_BURST, self.tokens + (now - self.last) * self.rate)
        self.last = now
        sock = self.udp.rtp
        queue = self.queue
        while queue and tokens > 0:
            p, addr = queue.popleft()
            self.queued -= len(p)
            if sock is not None:
                sock.sendto(p, addr)
            tokens -= len(p)
        self.tokens = tokens
        if queue:
            self.timer = self.loop.call_later(max(0.001, -tokens / self.rate), self._drain)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0


# ------------------------------------------------------------------------------------------------- server
class RtspServer:
    """The gateway component: ``start()`` listens on ``rtsp.listen:rtsp.port``; ``stop()`` closes every viewer."""

    def __init__(self, config: RtspConfig, streams: StreamManager) -> None:
        self.config = config
        self.streams = streams
        self.port = config.port
        self.udp = _UdpSockets()
        self._server: asyncio.Server | None = None
        self._tick: asyncio.TimerHandle | None = None
        self.connections: set[_Connection] = set()
        self.nonces = NonceManager(secrets.token_bytes(32), NONCE_LIFETIME)
        self.auth = config.effective_auth

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.config.listen, self.config.port)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            await self.udp.open(self.config.listen, self.config.udp_port)
        except OSError:
            self._server.close()
            raise
        self._tick = loop.call_later(TICK, self._housekeeping)
        if self.auth == "none" and not is_loopback(self.config.listen):
            log.warning("rtsp viewers are not authenticated beyond loopback (rtsp.auth = 'none')",
                        listen=self.config.listen)
        log.info("rtsp listening", listen=self.config.listen, port=self.port, udp_ports=f"{self.udp.port}-"
                 f"{self.udp.port + 1}", auth=self.auth)

    async def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close("gateway stopping", bye=True)
        self.udp.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _housekeeping(self) -> None:
        now = asyncio.get_running_loop().time()
        timeout = self.config.session_timeout
        for conn in list(self.connections):
            if now - conn.last_activity > timeout:
                conn.close("session timeout")
            else:
                conn.flush_counters()
        self._tick = asyncio.get_running_loop().call_later(TICK, self._housekeeping)


class _Connection(asyncio.Protocol):
    def __init__(self, server: RtspServer) -> None:
        self.server = server
        self.parser = rtsp.RtspConnectionParser()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.peer_host = ""
        self.queue: asyncio.Queue[rtsp.RtspRequest] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()
        self.last_activity = self.loop.time()
        self.closed = False
        self.refused = False
        self.authenticated = server.auth == "none"
        self.auth_failures = 0
        # Stream state
        self.stream_path: tuple[str | None, str, int] | None = None
        self.session: StreamSession | None = None
        self.sub: Subscription | None = None
        self.specs: tuple[TrackSpec, ...] = ()
        self.session_id: str | None = None
        self.tracks: dict[int, _Track] = {}
        self.player: CallbackSubscription | None = None
        self.paused_at: float | None = None
        self.pacer: _Pacer | None = None
        self.video: _Track | None = None
        self.audio: _Track | None = None
        self.cname = f"{SERVER}-{secrets.token_hex(4)}"
        # NTP mapping of the stream's PTS while playing (one timeline for every track)
        self._base_wall: float | None = None
        self._last_pts = 0
        self._ext = 0
        # Counters flushed to metrics by the server's housekeeping
        self.sent = {"tcp": [0, 0], "udp": [0, 0]}  # transport → [packets, bytes]

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer_host = peer[0] if peer else ""
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if len(self.server.connections) >= self.server.config.max_connections:
            self.refused = True
            metrics.RTSP_CONNECTIONS_REFUSED.inc()
            log.warning("rtsp connection refused: rtsp.max_connections reached", peer=self.peer,
                        max_connections=self.server.config.max_connections)
        self.server.connections.add(self)
        metrics.RTSP_CONNECTIONS.inc()
        self.task = asyncio.create_task(self._serve(), name=f"rtsp {self.peer}")

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        try:
            items = self.parser.feed(data)
        except rtsp.RtspError as exc:
            log.info("rtsp bad request", peer=self.peer, reason=exc.reason)
            self._write(bytes(rtsp.error_response(exc, [("Server", SERVER)])))
            self._count("other", exc.status)
            self.close(exc.reason)
            return
        for item in items:
            if isinstance(item, rtsp.RtspRequest):
                if self.queue.qsize() >= MAX_PENDING_REQUESTS:
                    self._write(bytes(rtsp.build_response(item, 503, [("Server", SERVER)],
                                                          reason="Too many pipelined requests")))
                    self.close("too many pipelined requests")
                    return
                self.queue.put_nowait(item)
            # InterleavedFrame: RTCP receiver reports; they count as activity only.

    def connection_lost(self, exc: Exception | None) -> None:
        self.close("connection closed")

    # -- lifecycle
    def close(self, reason: str, *, bye: bool = False) -> None:
        if self.closed:
            return
        if bye:
            self._send_bye(reason)
        self.closed = True
        self.server.connections.discard(self)
        metrics.RTSP_CONNECTIONS.dec()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        stream = self._stream_fields()
        self._leave_stream()
        self.flush_counters()
        if self.transport is not None:
            self.transport.close()
        log.info("rtsp connection closed", peer=self.peer, reason=reason, **stream)

    def _stream_fields(self) -> dict[str, str]:
        """``device_id``/``channel_id`` (and the stream's Call-ID) of this connection's stream, for log lines."""
        session = self.session
        if session is None:
            return {}
        fields = {"device_id": session.key.device_id, "channel_id": session.key.channel_id}
        if session.invite is not None:
            fields["call_id"] = session.invite.call_id
        return fields

    def flush_counters(self) -> None:
        for transport, counts in self.sent.items():
            if counts[0]:
                metrics.RTSP_SENT_PACKETS.labels(transport).inc(counts[0])
                metrics.RTSP_SENT_BYTES.labels(transport).inc(counts[1])
                counts[0] = counts[1] = 0

    def _stop_playing(self) -> None:
        if self.player is not None:
            self.player.close()
            self.player = None
            metrics.VIEWERS.labels("rtsp").dec()
        if self.pacer is not None:
            self.pacer.close()

    def _leave_stream(self) -> None:
        self._stop_playing()
        if self.session is not None and self.sub is not None:
            self.session.leave(self.sub)
        for track in self.tracks.values():
            for addr in (track.rtp_addr, track.rtcp_addr):
                if addr is not None and self.server.udp.peers.get(addr) is self:
                    del self.server.udp.peers[addr]
        self.session = self.sub = None
        self.stream_path = None
        self.session_id = None
        self.specs = ()
        self.tracks = {}
        self.video = self.audio = None
        self.pacer = None
        self.paused_at = None

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _count(self, method: str, status: int) -> None:
        name = method if method in metrics.RTSP_METHODS else "other"
        metrics.RTSP_REQUESTS.labels(name, f"{status // 100}xx").inc()

    # -- requests
    async def _serve(self) -> None:
        while True:
            req = await self.queue.get()
            self.last_activity = self.loop.time()
            close_after = False
            try:
                if self.refused:
                    raise _Reply(503, "Too many connections", close=True)
                self._authorize(req)
                status, headers, body, session = await self._handle(req)
                resp = rtsp.build_response(req, status, [("Server", SERVER), *headers], body, session=session)
            except _Reply as exc:
                resp = rtsp.build_response(req, exc.status, [("Server", SERVER), *exc.headers], reason=exc.reason)
                close_after = exc.close
            except rtsp.RtspError as exc:
                resp = rtsp.build_response(req, exc.status, [("Server", SERVER)], reason=exc.reason)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rtsp request failed", peer=self.peer, method=req.method)
                resp = rtsp.build_response(req, 500, [("Server", SERVER)])
            if self.closed:
                return
            self._write(bytes(resp))
            self._count(req.method, resp.status)
            if close_after:
                self.close(resp.reason)
                return
            if resp.status < 300 and req.method == "PLAY":
                self._start_playing()
            log.debug("rtsp request", peer=self.peer, method=req.method, uri=req.uri, status=resp.status,
                      **self._stream_fields())

    def _authorize(self, req: rtsp.RtspRequest) -> None:
        mode = self.server.auth
        if self.authenticated or req.method == "OPTIONS":
            return
        config = self.server.config
        header = req.get("Authorization")
        stale = False
        if header is not None:
            scheme = header.strip().partition(" ")[0].lower()
            if mode == "basic" and scheme == "basic":
                try:
                    user, _, password = base64.b64decode(header.strip()[6:].strip(), validate=True).decode(
                        "utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    user = password = ""
                if hmac.compare_digest(user.encode(), config.username.encode()) and \
                        hmac.compare_digest(password.encode(), config.password.encode()):
                    self.authenticated = True
                    return
            elif mode == "digest" and scheme == "digest":
                try:
                    creds = Credentials.parse(header)
                    result = verify(creds, config.password, req.method, self.loop.time(), self.server.nonces,
                                    REALM, allowed=(DigestAlgorithm.MD5,))
                except SipProtocolError:
                    result = AuthResult.BAD_RESPONSE
                else:
                    if creds.username != config.username:
                        result = AuthResult.BAD_RESPONSE
                if result is AuthResult.OK:
                    self.authenticated = True
                    return
                stale = result is AuthResult.STALE_NONCE
            if not stale:
                self.auth_failures += 1
                metrics.RTSP_AUTH_FAILURES.inc()
                log.info("rtsp authentication failed", peer=self.peer, method=req.method,
                         failures=self.auth_failures)
        if mode == "basic":
            challenge = f'Basic realm="{REALM}"'
        else:
            challenge = str(Challenge(REALM, self.server.nonces.issue(self.loop.time()), stale=stale))
        raise _Reply(401, headers=[("WWW-Authenticate", challenge)],
                     close=self.auth_failures >= MAX_AUTH_FAILURES)

    async def _handle(self, req: rtsp.RtspRequest) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        method = req.method
        if method == "OPTIONS":
            return 200, [("Public", PUBLIC)], b"", None
        if method not in ("DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"):
            raise _Reply(405 if method in rtsp.METHODS else 501, headers=[("Allow", PUBLIC)])
        if method == "DESCRIBE":
            return await self._describe(req)
        if method == "SETUP":
            return await self._setup(req)
        session = self._check_session(req)
        if method == "PLAY":
            return self._play(req)
        if method == "PAUSE":
            return self._pause()
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
        try:
            substream = parse_substream(query.get("stream", "main"))
        except ValueError as exc:
            raise _Reply(404, f"Unknown stream: {exc}") from None
        return (device, channel, substream), url.control

    async def _open(self, path: tuple[str | None, str, int]) -> StreamSession:
        if self.session is not None and not self.session.fanout.closed:
            if path == self.stream_path:
                return self.session
            if self.player is not None:
                raise _Reply(455, "Another stream is playing on this connection: TEARDOWN first")
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
        self.specs = describe_tracks(session, await session.wait_described())
        return session

    async def _describe(self, req: rtsp.RtspRequest) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        path, _ = self._target(req)
        session = await self._open(path)
        host = (self.transport.get_extra_info("sockname") or ("0.0.0.0",))[0] if self.transport else "0.0.0.0"
        addrtype = "IP6" if ":" in host else "IP4"
        desc = sdp.SessionDescription(
            media=tuple(spec.media() for spec in self.specs),
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
        if self.player is not None and path == self.stream_path:
            raise _Reply(455, "Already playing: SETUP comes before PLAY")
        await self._open(path)
        track_no = 0
        if control is not None:
            digits = "".join(c for c in control if c.isdigit())
            track_no = int(digits) if digits else 0
        spec = next((s for s in self.specs if s.index == track_no), None)
        if spec is None:
            raise _Reply(404, f"No track {track_no}")
        header = req.get("Transport")
        if header is None:
            raise _Reply(461, "Transport header required")
        track = self._choose_transport(spec, rtsp.parse_transport(header))
        old = self.tracks.get(track_no)
        if old is not None:
            for addr in (old.rtp_addr, old.rtcp_addr):
                if addr is not None:
                    self.server.udp.peers.pop(addr, None)
        self.tracks[track_no] = track
        for addr in (track.rtp_addr, track.rtcp_addr):
            if addr is not None:
                self.server.udp.peers[addr] = self
        if track.rtp_addr is not None and self.pacer is None:
            self.pacer = _Pacer(self.loop, self.server.udp, self.server.config.udp_pace_rate * 1e6 / 8)
        if self.session_id is None:
            self.session_id = secrets.token_hex(8)
        transport = track.transport
        if track.rtp_addr is not None:
            transport += f";server_port={self.server.udp.port}-{self.server.udp.port + 1}"
        transport += f";ssrc={track.ssrc:08X}"
        session = rtsp.format_session(self.session_id, int(self.server.config.session_timeout))
        return 200, [("Transport", transport)], b"", session

    def _choose_transport(self, spec: TrackSpec, offers: list[rtsp.TransportSpec]) -> _Track:
        """The first of the client's transports we can serve (RTP over TCP interleaved, or UDP unicast)."""
        ssrc = secrets.randbits(32)
        for offer in offers:
            if not offer.protocol.upper().startswith("RTP/AVP") or offer.unicast is False:
                continue
            if offer.is_tcp:
                channels = offer.interleaved or (2 * spec.index, 2 * spec.index + 1)
                used = {ch for t, tr in self.tracks.items() if t != spec.index and tr.channel is not None
                        for ch in (tr.channel, tr.channel + 1)}
                if channels[0] in used or channels[0] + 1 in used or channels[0] > 254:
                    raise _Reply(461, "Interleaved channel already in use")
                return _Track(spec, channel=channels[0], ssrc=ssrc)
            if offer.lower_transport == "UDP" and offer.client_port is not None:
                rtp_port, rtcp_port = offer.client_port
                if not (0 < rtp_port <= 65535 and 0 < rtcp_port <= 65535) or self.server.udp.rtp is None:
                    continue
                return _Track(spec, rtp_addr=(self.peer_host, rtp_port), rtcp_addr=(self.peer_host, rtcp_port),
                              ssrc=ssrc)
        raise _Reply(461, "Supported: RTP/AVP/TCP;interleaved=n-m or RTP/AVP;unicast;client_port=n-m")

    def _play(self, req: rtsp.RtspRequest) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        if self.session is None or not self.tracks or self.session_id is None:
            raise _Reply(455, "SETUP first")
        if self.session.fanout.closed:
            raise _Reply(503, "Stream ended")
        if self.player is None:
            self._prepare_packetizers()
        base = req.uri.rstrip("/")
        if rtsp.parse_url(req.uri).control is not None:  # PLAY on a track URL: use the aggregate URL
            base = base.rsplit("/", 1)[0]
        infos = []
        for number, track in sorted(self.tracks.items()):
            pk = track.packetizer
            if pk is not None:
                infos.append(rtsp.rtp_info(f"{base}/trackID={number}", pk.seq, pk.last_timestamp))
        headers = [("Range", "npt=now-")]
        if infos:
            headers.append(("RTP-Info", ",".join(infos)))
        return 200, headers, b"", self.session_id

    def _prepare_packetizers(self) -> None:
        """Fresh packetizers at PLAY; after PAUSE they continue where they stopped (plus the pause's duration)."""
        now = self.loop.time()
        for track in self.tracks.values():
            old = track.packetizer
            if old is None:
                seq, ts = secrets.randbits(16), secrets.randbits(32)
            else:
                paused = now - (self.paused_at or now)
                seq = old.seq
                ts = (old.last_timestamp + int((paused + 0.04) * track.spec.clock)) & _MASK32
            track.packetizer = track.spec.packetizer(track.ssrc, seq, ts)
            track.sr_due = 0.0
        self.video = self.tracks.get(0)
        self.audio = self.tracks.get(1)
        self._base_wall = None
        self.paused_at = None

    def _pause(self) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        if self.session is None or not self.tracks:
            raise _Reply(455, "SETUP first")
        if self.player is not None:
            self._stop_playing()
            self.paused_at = self.loop.time()
        return 200, [], b"", self.session_id

    def _start_playing(self) -> None:
        if self.player is not None or self.session is None or self.closed:
            return
        if self.pacer is not None:
            self.pacer.replaying = True  # the cached GOP is replayed inside subscribe_callback: pace it
        try:
            self.player = self.session.fanout.subscribe_callback(
                f"rtsp {self.peer}", self._on_unit, on_end=self._on_stream_end)
        except StreamEnded as exc:
            self.close(f"stream ended: {exc}", bye=True)
            return
        finally:
            if self.pacer is not None:
                self.pacer.replaying = False
        metrics.VIEWERS.labels("rtsp").inc()

    # -- media
    def _on_unit(self, au: AccessUnit) -> bool | None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return None
        codec = au.codec
        if codec.is_video:
            track = self.video
            if track is None:
                return None
            if codec is not track.spec.codec:
                self.loop.call_soon(lambda: self.close("video codec changed", bye=True))
                return None
        else:
            track = self.audio
            if track is None or codec is not track.spec.codec:
                return None
        pacer = self.pacer
        if track.channel is not None:
            if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                return False if codec.is_video else None  # audio alone never forces a skip; it is just dropped
        elif pacer is not None and pacer.queued > MAX_PACED_BYTES:
            if codec.is_video:
                metrics.RTSP_UDP_PACED_DROPS.inc()
                return False
            return None
        pk = track.packetizer
        assert pk is not None
        packets = pk.packetize(au)
        if not packets:
            return True
        pts = au.pts
        if pts is not None:
            if self._base_wall is None:
                self._base_wall = time.time()
                self._ext = 0
            else:
                self._ext += ((pts - self._last_pts + _HALF33) & _MASK33) - _HALF33
            self._last_pts = pts
            track.last_ext = self._ext
        size = 0
        for p in packets:
            size += len(p)
        if track.channel is not None:
            prefix = b"$" + bytes((track.channel,))
            transport.writelines([b for p in packets for b in (prefix + len(p).to_bytes(2, "big"), p)])
            counts = self.sent["tcp"]
        else:
            assert pacer is not None and track.rtp_addr is not None
            pacer.send(packets, track.rtp_addr, paced=pacer.replaying)
            counts = self.sent["udp"]
        counts[0] += len(packets)
        counts[1] += size
        now = self.loop.time()
        if now >= track.sr_due:
            track.sr_due = now + RTCP_INTERVAL
            self._send_rtcp(track, self._sender_report(track))
        return True

    def _sender_report(self, track: _Track) -> bytes:
        pk = track.packetizer
        assert pk is not None
        base = self._base_wall if self._base_wall is not None else time.time()
        ntp = ntp_timestamp(base + track.last_ext / 90000)
        return build_sender_report(track.ssrc, ntp, pk.last_timestamp, pk.packets, pk.octets, self.cname)

    def _send_rtcp(self, track: _Track, packet: bytes) -> None:
        if track.channel is not None:
            self._write(b"$" + bytes((track.channel + 1,)) + len(packet).to_bytes(2, "big") + packet)
            self.sent["tcp"][1] += len(packet)
        elif track.rtcp_addr is not None and self.server.udp.rtcp is not None:
            self.server.udp.rtcp.sendto(packet, track.rtcp_addr)
            self.sent["udp"][1] += len(packet)

    def _send_bye(self, reason: str) -> None:
        """RTCP BYE with ``reason`` on every track that has sent media (the viewer learns why the stream ended)."""
        for track in self.tracks.values():
            pk = track.packetizer
            if pk is None or self.player is None:
                continue
            base = self._base_wall if self._base_wall is not None else time.time()
            packet = build_rtcp_bye(track.ssrc, reason, packets=pk.packets, octets=pk.octets,
                                    ntp=ntp_timestamp(base + track.last_ext / 90000),
                                    rtp_timestamp=pk.last_timestamp, cname=self.cname)
            self._send_rtcp(track, packet)

    def _on_stream_end(self, reason: str) -> None:
        if reason != "unsubscribed":
            self.loop.call_soon(lambda: self.close(f"stream ended: {reason}", bye=True))
