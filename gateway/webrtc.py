"""WebRTC viewers over WHEP (draft-ietf-wish-whep): live streams to browsers, through aiortc.

Theory of operation
-------------------
**Signalling.** A browser (or any WHEP player) POSTs an SDP offer to ``/whep/<device_id>/<channel_id>`` (or
``/whep/<channel_id>`` where the channel ID is unique; ``?stream=sub`` for the sub-stream) on the HTTP server
(``gateway.api``, bearer token as for the REST API). The gateway joins the stream like any viewer
(``StreamManager.open``: the camera is INVITEd if nobody watches it yet), builds an ``RTCPeerConnection`` with
send-only tracks, gathers its ICE host candidates and answers ``201`` with the complete SDP answer (no trickle
ICE) and ``Location: /whep/session/<id>``; ``DELETE`` on that URL ends the session. Errors are the API's JSON
errors: an offer that is not SDP, has no video m-line we can answer or no H.264 ``400``, a wrong Content-Type
``415``, an unknown or offline channel ``404``, a camera that does not answer ``503``, no media ``504``, beyond
``webrtc.max_sessions`` or ``webrtc.max_transcodes`` ``503``. ``OPTIONS`` answers CORS preflights without a
token, and every ``/whep/`` response carries ``Access-Control-Allow-Origin: *`` and exposes ``Location``.

**Passthrough.** H.264 without B-frames goes to the browser as it came from the camera: each access unit from
the stream's ``FanOut`` becomes an ``av.Packet`` that the track hands to aiortc's ``RTCRtpSender``. For anything
that is not an ``av.Frame`` the sender calls its codec's ``pack()`` instead of encoding: RFC 6184 packetization
(STAP-A, FU-A) for H.264, one payload per packet for PCMA/PCMU. So G.711A/U audio is sent as PCMA/PCMU without
transcoding too (split into 20 ms packets when a unit is longer than 40 ms). RTP timestamps come from the units'
PTS (90 kHz video, 8 kHz audio, one timeline unwrapped from the 33-bit PES clock). AAC audio is not sent
(browsers do not take it over WebRTC); the answer then has no audio. aiortc knows only the Baseline and
Constrained Baseline H.264 profiles, so the answer announces ``profile-level-id=42e01f`` whatever the camera's
profile (Main, High); Chromium decodes them all the same (a player holding to the profile might not).

**Start and keyframes.** Media starts when the peer connection is connected: the viewer subscribes a callback to
the fan-out, which replays the cached GOP (from its keyframe) at once. The replayed frames get timestamps 1 ms
apart ending at the newest one, so the browser decodes through the GOP and shows the live picture at once instead
of playing the GOP's age behind; replayed audio is not sent. Replays are paced (``REPLAY_RATE``). A browser that
loses a picture sends PLI (or FIR). aiortc's sender only sets a flag for its encoder then, which the passthrough
``pack()`` path never reads, so each video sender's RTCP handler is wrapped: a PLI is answered from the GOP
cache when it holds a keyframe (the viewer re-subscribes: the whole cached GOP is replayed, so every frame after
the keyframe decodes, timestamps continuing), else by a forced keyframe of the transcode, else by asking the
camera (``StreamSession.request_keyframe``, rate-limited to one IFrameCmd per 2 s per stream). One answer per
``PLI_INTERVAL`` per viewer; the others are counted as rate limited. (aiortc routes RTCP feedback by its media
SSRC, which a FIR leaves 0: FIR reaches no sender. Browsers send PLI.)

**Transcoding.** Browsers play H.264 only here (H.265 support is patchy), and not B-frames. A stream that is H.265,
or H.264 whose SPS announces frame reordering or whose cached GOP holds B slices or DTS != PTS (Main/High
profile without that VUI hint is judged by its GOP: a stream that starts using B-frames later is not caught), is
transcoded: one ``Transcoder`` per ``StreamSession``, shared by all its WebRTC viewers, decodes with PyAV (one
thread) and encodes libx264 ultrafast/zerolatency Constrained Baseline with a keyframe every second, in a worker
thread, into its own ``FanOut`` (the GOP cache and consumer handling are the same as for the camera's stream; a
keyframe request there forces an IDR). Audio passes through the worker unchanged, in order. The source's
cached GOP is decoded but only its newest frame is encoded, so the first viewer starts on the live picture. At
most ``webrtc.max_transcodes`` run; the worker's queue is bounded (``TRANSCODE_QUEUE``): a transcode that cannot
keep up skips to the next keyframe of the camera (counted).

**ICE.** Host candidates only (no STUN or TURN): ``webrtc.ice_addresses`` (or every interface's address as aioice
finds them, 127.0.0.1 only on a host without another) on ports from ``webrtc.udp_port_min..max``. aioice 0.13
has no port range and no address choice, so ``IceHost`` gathers the candidates itself onto the aioice
``Connection`` after ``setRemoteDescription`` and before aiortc would (aiortc's own ``gather_candidates`` call
then finds them gathered): it binds ``StunProtocol`` sockets in the range (the next free port after the last
one used, wrapping), as aioice's ``get_component_candidates`` binds port 0. This reads aioice's private gathering state
(``_local_candidates*``, ``_protocols``, ``_components``), checked at start (``check_aioice``): a newer aioice
that changes them fails loudly, never silently using random ports. An address that is not on this host
(a 1:1 NAT's public address) is announced as configured while its socket binds the wildcard address.

**Lifecycle and counting.** A WHEP session is a stream consumer from its POST until it ends (DELETE, the peer
connection failing or closing, which includes aioice's consent checks failing ~30 s after a browser vanished,
not connecting within ``CONNECT_TIMEOUT``, the stream ending, the gateway stopping): RTSP and WebRTC viewers
together keep the camera stream up, and it lingers ``media.linger`` after the last one of either. While media
flows it counts in ``gb28181_viewers{protocol="webrtc"}``; offers by outcome, session ends by reason, keyframe
requests by answer and transcodes are metrics too (``gateway.metrics``).

This adapter is longer than STYLE's ~300 lines: it holds four small parts (ICE host gathering, the packet
track, the transcoder and the WHEP resource), each of which is only used here.
"""

from __future__ import annotations

import asyncio
import errno
import fractions
import queue
import secrets
import socket
import threading
from collections import deque
from collections.abc import Coroutine
from typing import Any

import av
import structlog
from aiohttp import web
from aioice import turn
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol, get_host_addresses
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, AnyRtcpPacket, RtcpPsfbPacket

from media import h264, sdp
from media.frames import AccessUnit, Codec

from . import metrics
from .config import WebrtcConfig
from .fanout import CallbackSubscription, FanOut, GopCache, StreamEnded, Subscription
from .streams import StreamError, StreamManager, StreamSession, parse_substream
from .validation import ApiError, check_id

__all__ = ["WHEP_KEY", "IceHost", "Refused", "Transcoder", "WhepEndpoint", "WhepSession", "check_aioice", "check_offer",
           "is_preflight", "transcode_reason"]

log = structlog.get_logger("gateway.webrtc")

#: Seconds a session may take to connect (ICE + DTLS) after its answer before it is ended.
CONNECT_TIMEOUT = 30.0
#: Seconds between two answers to a viewer's PLI/FIR.
PLI_INTERVAL = 1.0
#: RTP ticks (90 kHz) between replayed frames: 1 ms, so a replayed GOP is decoded through at once.
REPLAY_SPACING = 90
#: Bytes/s and burst bytes at which a replayed GOP is sent (20 Mbit/s, 64 KiB).
REPLAY_RATE = 20e6 / 8
REPLAY_BURST = 64 * 1024
#: Bounds of a track's queue toward aiortc; beyond them the viewer skips to the next keyframe.
MAX_TRACK_PACKETS = 4096
MAX_TRACK_BYTES = 16 * 1024 * 1024
#: G.711 units longer than this many bytes (samples) are sent as 20 ms packets.
G711_MAX_PAYLOAD = 320
G711_PACKET = 160
#: Access units waiting for the transcode worker; beyond it the transcode skips to the camera's next keyframe.
TRANSCODE_QUEUE = 400
#: The transcode's keyframe interval (90 kHz ticks: one second).
TRANSCODE_KEYINT = 90000
TRANSCODE_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "forced-idr": "1",
                     "threads": "1", "x264-params": "keyint=infinite:scenecut=0:bframes=0"}
CORS_ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
CORS_EXPOSE_HEADERS = "Location, ETag, Link"
_TB_VIDEO = fractions.Fraction(1, 90000)
_TB_AUDIO = fractions.Fraction(1, 8000)
_MASK33 = (1 << 33) - 1
_HALF33 = 1 << 32
_AUDIO_MIME = {Codec.G711A: "audio/PCMA", Codec.G711U: "audio/PCMU"}
_RTPMAP_CODEC = {"PCMA": Codec.G711A, "PCMU": Codec.G711U}
_RECEIVING = (sdp.Direction.RECVONLY, sdp.Direction.SENDRECV)


class Refused(Exception):
    """An offer refused with HTTP ``status`` and ``reason`` (answered as ``ApiError``); ``result`` is the
    ``gb28181_webrtc_sessions_total`` label."""

    def __init__(self, status: int, reason: str, result: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.result = result
        self.headers = headers or {}


# ------------------------------------------------------------------------------------------------- offers
def check_offer(text: str) -> frozenset[Codec]:
    """Check that ``text`` is an SDP offer we can answer; return the G.711 codecs its audio m-line takes.

    Raises ``Refused`` 400: not SDP, no video m-line that receives, no ICE credentials or DTLS fingerprint for
    it, no H.264 with packetization-mode 1.
    """
    try:
        desc = sdp.parse(text)
    except sdp.SdpError as exc:
        raise Refused(400, f"body is not an SDP offer: {exc}", "bad_request") from None
    session_direction = next((sdp.Direction(name) for name, _ in desc.attributes
                              if name in ("sendrecv", "sendonly", "recvonly", "inactive")), sdp.Direction.SENDRECV)

    def receiving(m: sdp.MediaDescription) -> bool:
        return m.port != 0 and (m.direction or session_direction) in _RECEIVING

    video = next((m for m in desc.media if m.kind == "video" and receiving(m)), None)
    if video is None:
        raise Refused(400, "the offer has no video m-line the gateway can answer (one that receives: recvonly or"
                       " sendrecv, with a port other than 0)", "bad_request")
    if "SAVPF" not in video.proto.upper():
        raise Refused(400, f"the offer's video is not WebRTC media (proto {video.proto[:40]!r}, expected"
                      " UDP/TLS/RTP/SAVPF)", "bad_request")
    missing = [name for name in ("ice-ufrag", "ice-pwd", "fingerprint")
               if video.attribute(name) is None and desc.attribute(name) is None]
    if missing:
        raise Refused(400, f"the offer's video lacks a={', a='.join(missing)}: not a WebRTC offer",
                      "bad_request")
    fmtps = video.fmtps
    if not any(rtpmap.encoding.upper() == "H264" and "packetization-mode=1" in fmtps.get(pt, "").replace(" ", "")
               for pt, rtpmap in video.rtpmaps.items()):
        raise Refused(400, "the offer's video takes no H.264 (packetization-mode=1): the gateway sends H.264",
                       "bad_request")
    audio = next((m for m in desc.media if m.kind == "audio" and receiving(m)), None)
    if audio is None:
        return frozenset()
    return frozenset(_RTPMAP_CODEC[r.encoding.upper()] for r in audio.rtpmaps.values()
                     if r.encoding.upper() in _RTPMAP_CODEC and r.clock_rate == 8000)


def transcode_reason(cache: GopCache) -> str | None:
    """Why the stream in ``cache`` must be transcoded for browsers (``"H.265"``, ``"B-frames"``), or ``None``."""
    codec = cache.video_codec
    if codec is Codec.H265:
        return "H.265"
    if cache.sps is not None:
        try:
            allows = h264.sps_allows_b_frames(h264.parse_sps(cache.sps))
        except (ValueError, IndexError):  # BitstreamError, a cut SPS: judge by the GOP
            allows = None
        if allows is not None:
            return "B-frames" if allows else None
    video = [au for au in cache.units if au.codec is Codec.H264]
    if any(au.dts is not None and au.pts is not None and au.dts != au.pts for au in video):
        return "B-frames"
    return "B-frames" if h264.has_b_frames(au.data for au in video) else None


# ------------------------------------------------------------------------------------------------- ICE
def check_aioice() -> None:
    """Fail loudly if aioice's gathering state is not what ``IceHost`` fills in (see the module docstring)."""
    conn = Connection(ice_controlling=False)
    missing = [name for name in ("_local_candidates_start", "_local_candidates_end", "_local_candidates",
                                 "_protocols", "_components") if not hasattr(conn, name)]
    if missing:
        raise RuntimeError(f"aioice changed its ICE gathering internals ({', '.join(missing)} missing): "
                           "webrtc.ice_addresses and webrtc.udp_port_min/max cannot be applied with this version")


class IceHost:
    """ICE host candidates on ``ice_addresses`` (or every interface) with ports from ``udp_port_min..max``.

    Without addresses and with both ports 0 aioice gathers on its own (every interface but 127.0.0.1, any port).
    """

    def __init__(self, config: WebrtcConfig) -> None:
        self.addresses = config.ice_addresses
        self.port_min, self.port_max = config.udp_port_min, config.udp_port_max
        self.custom = bool(self.addresses) or self.port_min != 0
        self._next = self.port_min
        self._foreign: set[str] = set()  # announced addresses that are not on this host (bound to the wildcard)
        if self.custom:
            check_aioice()

    async def gather(self, pc: RTCPeerConnection) -> None:
        """Gather the host candidates of every ICE transport of ``pc`` (after ``setRemoteDescription``)."""
        if not self.custom:
            return
        done: set[RTCIceTransport] = set()
        for transceiver in pc.getTransceivers():
            ice = transceiver.sender.transport.transport
            if ice not in done:
                done.add(ice)
                await self._gather(ice.iceGatherer._connection)

    async def _gather(self, conn: Connection) -> None:
        if conn._local_candidates_start:
            return
        conn._local_candidates_start = True
        # A host with no address but loopback (a bare container) still serves a browser on the same host.
        addresses = list(self.addresses) or get_host_addresses(use_ipv4=True, use_ipv6=True) or ["127.0.0.1"]
        found: list[Candidate] = []
        try:
            for component in sorted(conn._components):
                for address in addresses:
                    protocol = await self._bind(conn, address)
                    if protocol is None:
                        continue
                    port = protocol.transport.get_extra_info("sockname")[1]
                    protocol.local_candidate = Candidate(
                        foundation=candidate_foundation("host", "udp", address), component=component,
                        transport="udp", priority=candidate_priority(component, "host"), host=address, port=port,
                        type="host")
                    conn._protocols.append(protocol)
                    found.append(protocol.local_candidate)
        finally:
            conn._local_candidates += found
            conn._local_candidates_end = True
        if not found:
            raise Refused(503, "no UDP port free for WebRTC media (webrtc.udp_port_min..udp_port_max exhausted, or"
                           " no usable webrtc.ice_addresses)", "failed")

    def _ports(self) -> list[int]:
        if self.port_min == 0:
            return [0]
        span = self.port_max - self.port_min + 1
        start = self._next - self.port_min
        return [self.port_min + (start + i) % span for i in range(span)]

    async def _bind(self, conn: Connection, address: str) -> StunProtocol | None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for port in self._ports():
            host = ("::" if family == socket.AF_INET6 else "0.0.0.0") if address in self._foreign else address
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, turn.UDP_SOCKET_BUFFER_SIZE)
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRNOTAVAIL and host == address:
                    log.info("webrtc ice address is not on this host: announced, socket bound to all", address=address)
                    self._foreign.add(address)
                    return await self._bind(conn, address)
                if exc.errno == errno.EADDRINUSE and port:
                    continue
                log.warning("webrtc ice bind failed", address=address, port=port, error=str(exc))
                return None
            sock.setblocking(False)
            _, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(conn), sock=sock)
            if port:
                self._next = port + 1 if port < self.port_max else self.port_min
            return protocol
        log.warning("webrtc udp port range exhausted", address=address, port_min=self.port_min,
                    port_max=self.port_max)
        return None


# ------------------------------------------------------------------------------------------------- tracks
class _PacketTrack(MediaStreamTrack):
    """Encoded packets for one aiortc sender: a bounded queue, paced while a GOP is replayed."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._queue: deque[tuple[av.Packet[Any], int, bool]] = deque()
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._tokens = float(REPLAY_BURST)
        self._refilled = 0.0

    def put(self, packet: av.Packet[Any], size: int, paced: bool) -> bool:
        """Queue ``packet`` (``size`` payload bytes); False if the queue is full (nothing queued then)."""
        if self._queue and (len(self._queue) >= MAX_TRACK_PACKETS or self._bytes + size > MAX_TRACK_BYTES):
            return False
        self._queue.append((packet, size, paced))
        self._bytes += size
        self._wake()
        return True

    def clear(self) -> None:
        self._queue.clear()
        self._bytes = 0

    def stop(self) -> None:
        super().stop()
        self.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def recv(self) -> av.Packet[Any]:
        loop = asyncio.get_running_loop()
        while not self._queue:
            if self.readyState == "ended":
                raise MediaStreamError
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        packet, size, paced = self._queue.popleft()
        self._bytes -= size
        if paced:
            now = loop.time()
            self._tokens = min(float(REPLAY_BURST), self._tokens + (now - self._refilled) * REPLAY_RATE)
            self._refilled = now
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / REPLAY_RATE)
            self._tokens -= size
        return packet


def _packet(data: bytes, pts: int, time_base: fractions.Fraction) -> av.Packet[Any]:
    packet = av.Packet(data)
    packet.pts = pts
    packet.time_base = time_base
    return packet


# ------------------------------------------------------------------------------------------------- transcoder
class Transcoder:
    """One stream decoded and re-encoded to H.264 Constrained Baseline for its WebRTC viewers (shared).

    ``fanout`` is what viewers subscribe to. ``start()`` subscribes to the camera stream and starts the worker
    thread; ``stop(reason)`` ends both and the viewers. All methods are for the event loop except ``_run``.
    """

    def __init__(self, endpoint: WhepEndpoint, stream: StreamSession, reason: str) -> None:
        self.endpoint = endpoint
        self.stream = stream
        self.reason = reason
        codec = stream.fanout.cache.video_codec
        assert codec is not None
        self.codec = codec
        self.loop = asyncio.get_running_loop()
        self.fanout = FanOut(request_keyframe=self.force_keyframe, keyframe_request_interval=1.0,
                             clock=self.loop.time, name=f"{stream.key} (webrtc h264)")
        self.users = 0
        self.stopped = False
        self._queue: queue.Queue[tuple[AccessUnit, bool] | None] = queue.Queue(TRANSCODE_QUEUE)
        self._force = False
        self._stop = False
        self._source: CallbackSubscription | None = None
        self._replay: list[AccessUnit] | None = None
        self.thread = threading.Thread(target=self._run, name=f"transcode {stream.key}", daemon=True)

    def start(self) -> None:
        """Subscribe to the camera stream (its cached GOP is decoded, its newest frame encoded) and start."""
        self.thread.start()
        metrics.WEBRTC_TRANSCODES.inc()
        self._replay = []
        try:
            self._source = self.stream.fanout.subscribe_callback(f"webrtc transcode {self.stream.key}",
                                                                 self._on_unit, on_end=self._on_source_end)
        except StreamEnded as exc:
            self._replay = None
            self.stop(f"stream ended: {exc.reason}")
            raise
        source = self._source
        replay, self._replay = self._replay, None
        last_video = max((i for i, au in enumerate(replay) if au.codec.is_video), default=-1)
        for i, au in enumerate(replay):
            try:
                self._queue.put_nowait((au, i >= last_video))
            except queue.Full:
                metrics.WEBRTC_TRANSCODE_DROPS.labels("queue_full").inc()
                source.skip()
                break
        log.info("webrtc transcode started", stream=str(self.stream.key), reason=self.reason,
                 codec=self.codec.name)

    def force_keyframe(self) -> None:
        self._force = True

    def stop(self, reason: str) -> None:
        if self.stopped:
            return
        self.stopped = True
        metrics.WEBRTC_TRANSCODES.dec()
        self._stop = True
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the worker sees _stop after its current unit
        if self._source is not None:
            self._source.close()
        self.fanout.close(reason)
        self.endpoint._forget_transcoder(self)
        log.info("webrtc transcode stopped", stream=str(self.stream.key), reason=reason)

    # -- on the loop
    def _on_unit(self, au: AccessUnit) -> bool | None:
        if self._replay is not None:
            self._replay.append(au)
            return True
        try:
            self._queue.put_nowait((au, True))
        except queue.Full:
            metrics.WEBRTC_TRANSCODE_DROPS.labels("queue_full").inc()
            return False if au.codec.is_video else None
        return True

    def _on_source_end(self, reason: str) -> None:
        if reason != "unsubscribed":
            self.loop.call_soon(self.stop, f"stream ended: {reason}")

    def _publish(self, au: AccessUnit) -> None:
        if not self.stopped:
            self.fanout.publish(au)

    # -- in the worker thread
    def _emit(self, au: AccessUnit) -> None:
        try:
            self.loop.call_soon_threadsafe(self._publish, au)
        except RuntimeError:  # the loop is closed: the gateway is gone
            self._stop = True

    def _fail(self, reason: str) -> None:
        try:
            self.loop.call_soon_threadsafe(self.stop, reason)
        except RuntimeError:
            pass

    def _run(self) -> None:
        try:
            self._work()
        except Exception as exc:  # a bug or a codec missing from PyAV: end the viewers with the reason
            log.exception("webrtc transcode failed", stream=str(self.stream.key))
            self._fail(f"transcode failed: {exc}")

    def _work(self) -> None:
        decoder = av.CodecContext.create("hevc" if self.codec is Codec.H265 else "h264", "r")
        assert isinstance(decoder, av.VideoCodecContext)
        decoder.thread_count = 1
        encoder: av.VideoCodecContext | None = None
        encoding = False
        last_pts: int | None = None
        ext = 0
        last_key: int | None = None
        while not self._stop:
            item = self._queue.get()
            if item is None:
                break
            au, encode = item
            if au.codec.is_audio:
                self._emit(au)
                continue
            if au.codec is not self.codec:
                self._fail("video codec changed")
                break
            encoding = encoding or encode
            if au.pts is not None:
                ext = ext + (((au.pts - last_pts + _HALF33) & _MASK33) - _HALF33) if last_pts is not None else 0
                last_pts = au.pts
            packet = _packet(au.data, ext, _TB_VIDEO)
            if au.dts is not None and au.pts is not None:
                packet.dts = ext - ((au.pts - au.dts) & _MASK33)
            try:
                frames = decoder.decode(packet)
            except av.FFmpegError:
                metrics.WEBRTC_TRANSCODE_DROPS.labels("undecodable").inc()
                continue
            if not encoding:
                continue
            for frame in frames:
                if frame.format.name != "yuv420p" or frame.width % 2 or frame.height % 2:
                    frame = frame.reformat(width=frame.width & ~1, height=frame.height & ~1, format="yuv420p")
                if encoder is None or (encoder.width, encoder.height) != (frame.width, frame.height):
                    encoder = self._encoder(frame.width, frame.height, decoder.framerate)
                    last_key = None
                pts = frame.pts if frame.pts is not None else ext
                if self._force or last_key is None or pts - last_key >= TRANSCODE_KEYINT:
                    self._force = False
                    last_key = pts
                    frame.pict_type = av.video.frame.PictureType.I
                else:
                    frame.pict_type = av.video.frame.PictureType.NONE
                frame.pts = pts
                frame.time_base = _TB_VIDEO
                for out in encoder.encode(frame):
                    out_pts = (out.pts if out.pts is not None else pts) & _MASK33
                    self._emit(AccessUnit(Codec.H264, out_pts, out_pts, out.is_keyframe, bytes(out)))

    @staticmethod
    def _encoder(width: int, height: int, rate: fractions.Fraction | None) -> av.VideoCodecContext:
        encoder = av.CodecContext.create("libx264", "w")
        assert isinstance(encoder, av.VideoCodecContext)
        encoder.width = width
        encoder.height = height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = _TB_VIDEO
        encoder.framerate = rate or fractions.Fraction(25, 1)
        encoder.thread_count = 1
        encoder.options = dict(TRANSCODE_OPTIONS)
        return encoder


# ------------------------------------------------------------------------------------------------- sessions
class WhepSession:
    """One browser: its peer connection, its tracks, the stream it holds (a consumer) and its media timeline."""

    def __init__(self, endpoint: WhepEndpoint, ident: str, stream: StreamSession, sub: Subscription,
                 peer: str) -> None:
        self.endpoint = endpoint
        self.ident = ident
        self.stream = stream
        self.sub = sub
        self.peer = peer
        self.loop = asyncio.get_running_loop()
        self.pc: RTCPeerConnection | None = None
        self.source: FanOut = stream.fanout
        self.transcoder: Transcoder | None = None
        self.audio_codec: Codec | None = None
        self.video = _PacketTrack("video")
        self.audio: _PacketTrack | None = None
        self.player: CallbackSubscription | None = None
        self.closed = False
        self.playing = False
        self.keyframe_answers = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last_pli = -1e9
        self._replay: list[AccessUnit] | None = None
        # One timeline: PES PTS unwrapped (90 kHz) → video RTP ticks (out = ext - offset) and audio samples.
        self._last_pts: int | None = None
        self._ext = 0
        self._offset: int | None = None
        self._last_out: int | None = None
        self._audio_end: int | None = None

    # -- negotiation
    async def negotiate(self, offer: str) -> str:
        """The SDP answer to ``offer`` (checked by ``check_offer``); ``Refused`` 400 if aiortc refuses it."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        video = pc.addTransceiver(self.video, direction="sendonly")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType.lower() in ("video/h264", "video/rtx")])
        audio: RTCRtpTransceiver | None = None
        if self.audio_codec is not None:
            self.audio = _PacketTrack("audio")
            audio = pc.addTransceiver(self.audio, direction="sendonly")
            mime = _AUDIO_MIME[self.audio_codec]
            audio.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                       if c.mimeType == mime])
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except (ValueError, KeyError, IndexError, OperationError, InvalidAccessError, InvalidStateError) as exc:
            raise Refused(400, f"offer refused: {exc or type(exc).__name__}", "bad_request") from None
        await self.endpoint.ice.gather(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        self._watch_rtcp(video.sender)
        pc.on("connectionstatechange", self._on_state)
        self._timer = self.loop.call_later(CONNECT_TIMEOUT, self._connect_timeout)
        if self.audio is not None and audio is not None and audio.currentDirection not in ("sendonly", "sendrecv"):
            self.audio = None  # the offer's audio was not usable after all
        return pc.localDescription.sdp

    def _watch_rtcp(self, sender: RTCRtpSender) -> None:
        """Observe PLI/FIR on the video sender (aiortc's passthrough ignores them), then let aiortc handle it."""
        handle = sender._handle_rtcp_packet

        async def watched(packet: AnyRtcpPacket) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                self._on_pli()
            await handle(packet)

        sender._handle_rtcp_packet = watched  # type: ignore[method-assign]

    def _on_state(self) -> None:
        pc = self.pc
        if pc is None or self.closed:
            return
        state = pc.connectionState
        if state == "connected":
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._start()
        elif state in ("failed", "closed"):
            self.close("peer_gone", f"peer connection {state}")

    def _connect_timeout(self) -> None:
        self._timer = None
        if not self.playing:
            self.close("connect_timeout", f"not connected within {CONNECT_TIMEOUT:g} s")

    # -- media
    def _start(self) -> None:
        if self.closed or self.player is not None:
            return
        self._subscribe()
        if self.player is not None and not self.playing:
            self.playing = True
            metrics.VIEWERS.labels("webrtc").inc()
            log.info("webrtc playing", session=self.ident, stream=str(self.stream.key), peer=self.peer,
                     transcoded=self.transcoder is not None, audio=self.audio is not None)

    def _subscribe(self) -> None:
        self._replay = []
        try:
            self.player = self.source.subscribe_callback(f"webrtc {self.ident}", self._on_unit, on_end=self._on_end)
        except StreamEnded as exc:
            self._replay = None
            self.close("stream_ended", f"stream ended: {exc.reason}")
            return
        replay, self._replay = self._replay, None
        self._send_replay(replay)

    def _on_end(self, reason: str) -> None:
        if reason != "unsubscribed":
            self.loop.call_soon(self.close, "stream_ended", f"stream ended: {reason}")

    def _unwrap(self, pts: int) -> int:
        if self._last_pts is not None:
            self._ext += ((pts - self._last_pts + _HALF33) & _MASK33) - _HALF33
        self._last_pts = pts
        return self._ext

    def _send_replay(self, units: list[AccessUnit]) -> None:
        """The cached GOP (video only), its timestamps 1 ms apart ending where the live ones continue."""
        video = [au for au in units if au.codec.is_video]
        if not video:
            return
        out = self._last_out + REPLAY_SPACING if self._last_out is not None else 0
        ext = self._ext
        for au in video:
            ext = self._unwrap(au.pts) if au.pts is not None else ext
            if not self.video.put(_packet(au.data, out, _TB_VIDEO), len(au.data), True):
                if self.player is not None:
                    self.player.skip()
                return
            self._last_out = out
            self._offset = ext - out
            out += REPLAY_SPACING

    def _on_unit(self, au: AccessUnit) -> bool | None:
        if self._replay is not None:
            self._replay.append(au)
            return True
        if au.codec.is_video:
            if au.codec is not Codec.H264:
                self.loop.call_soon(self.close, "stream_ended", "video codec changed")
                return None
            return self._send_video(au)
        if self.audio is not None and au.codec is self.audio_codec:
            self._send_audio(au)
        return None

    def _send_video(self, au: AccessUnit) -> bool:
        last = self._last_out
        if au.pts is None:
            out = (last + 3600) if last is not None else 0
        else:
            ext = self._unwrap(au.pts)
            if self._offset is None:
                self._offset = ext - (last + REPLAY_SPACING if last is not None else 0)
            out = ext - self._offset
            if last is not None and out <= last:
                out = last + 1
        if not self.video.put(_packet(au.data, out, _TB_VIDEO), len(au.data), False):
            return False  # the fan-out resumes this viewer at the next keyframe
        self._last_out = out
        return True

    def _send_audio(self, au: AccessUnit) -> None:
        assert self.audio is not None
        if self._offset is None or au.pts is None:
            return  # video first: the viewer starts on a keyframe
        out = (self._unwrap(au.pts) - self._offset) * 8000 // 90000
        if self._audio_end is not None and out < self._audio_end:
            out = self._audio_end  # no overlap: PES audio timestamps jitter by a few ticks
        data = au.data
        step = len(data) if len(data) <= G711_MAX_PAYLOAD else G711_PACKET
        for i in range(0, len(data), step):
            chunk = data[i:i + step]
            if not self.audio.put(_packet(chunk, out + i, _TB_AUDIO), len(chunk), False):
                break
        self._audio_end = out + len(data)

    def _on_pli(self) -> None:
        """A PLI/FIR from the browser: replay the cached GOP, else force or ask for a keyframe (rate-limited)."""
        if self.closed or self.player is None:
            return
        now = self.loop.time()
        if now - self._last_pli < PLI_INTERVAL:
            metrics.WEBRTC_KEYFRAME_REQUESTS.labels("rate_limited").inc()
            return
        self._last_pli = now
        self.keyframe_answers += 1
        if self.source.cache.has_keyframe:
            metrics.WEBRTC_KEYFRAME_REQUESTS.labels("cache").inc()
            old, self.player = self.player, None
            old.close()
            self.video.clear()
            self._subscribe()
        elif self.transcoder is not None:
            metrics.WEBRTC_KEYFRAME_REQUESTS.labels("encoder").inc()
            self.transcoder.force_keyframe()
        else:
            metrics.WEBRTC_KEYFRAME_REQUESTS.labels("camera").inc()
            self.stream.request_keyframe()
        log.debug("webrtc keyframe requested by viewer", session=self.ident)

    # -- end
    def close(self, why: str, detail: str) -> None:
        """End the session (idempotent): stop media, leave the stream, close the peer connection."""
        if self.closed:
            return
        self.closed = True
        self.endpoint._forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.player is not None:
            self.player.close()
            self.player = None
        if self.playing:
            metrics.VIEWERS.labels("webrtc").dec()
        self.stream.leave(self.sub)
        if self.transcoder is not None:
            self.endpoint._release(self.transcoder)
            self.transcoder = None
        self.video.stop()
        if self.audio is not None:
            self.audio.stop()
        metrics.WEBRTC_ENDED.labels(why).inc()
        log.info("webrtc session ended", session=self.ident, stream=str(self.stream.key), peer=self.peer,
                 reason=detail)
        if self.pc is not None:
            self.endpoint._spawn(self.pc.close())


# ------------------------------------------------------------------------------------------------- WHEP
def is_preflight(request: web.Request) -> bool:
    """A CORS preflight of a WHEP resource: answered without a token (browsers send none with it)."""
    return request.method == "OPTIONS" and request.path.startswith("/whep/")


class WhepEndpoint:
    """The WHEP resources on the HTTP server: ``add_routes(app)`` registers them and their shutdown."""

    def __init__(self, config: WebrtcConfig, streams: StreamManager) -> None:
        self.config = config
        self.streams = streams
        self.ice = IceHost(config)
        self.sessions: dict[str, WhepSession] = {}
        self.transcoders: dict[StreamSession, Transcoder] = {}
        self._opening = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._threads: list[threading.Thread] = []

    def add_routes(self, app: web.Application) -> None:
        app[WHEP_KEY] = self
        r = app.router
        r.add_delete("/whep/session/{session_id}", self.delete)
        r.add_route("OPTIONS", "/whep/session/{session_id}", self.preflight)
        r.add_post("/whep/{device_id}/{channel_id}", self.offer)
        r.add_route("OPTIONS", "/whep/{device_id}/{channel_id}", self.preflight)
        r.add_post("/whep/{channel_id}", self.offer)
        r.add_route("OPTIONS", "/whep/{channel_id}", self.preflight)
        app.on_response_prepare.append(self._cors)
        app.on_shutdown.append(self._shutdown)

    # -- HTTP
    async def preflight(self, request: web.Request) -> web.Response:
        post = "session_id" not in request.match_info
        methods = "POST, OPTIONS" if post else "DELETE, OPTIONS"
        headers = {"Allow": methods, "Access-Control-Allow-Methods": methods,
                   "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS, "Access-Control-Max-Age": "86400"}
        if post:
            headers["Accept-Post"] = "application/sdp"
        return web.Response(status=204, headers=headers)

    async def _cors(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/whep/"):
            response.headers.setdefault("Access-Control-Allow-Origin", "*")
            response.headers.setdefault("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)

    async def offer(self, request: web.Request) -> web.Response:
        try:
            return await self._offer(request)
        except Refused as exc:
            metrics.WEBRTC_SESSIONS.labels(exc.result).inc()
            log.info("webrtc offer refused", path=request.path, peer=request.remote, status=exc.status,
                     reason=exc.reason)
            raise ApiError(exc.status, exc.reason, exc.headers) from None
        except (ApiError, web.HTTPException):  # malformed IDs, a body too large
            metrics.WEBRTC_SESSIONS.labels("bad_request").inc()
            raise
        except Exception:
            metrics.WEBRTC_SESSIONS.labels("failed").inc()
            raise

    async def _offer(self, request: web.Request) -> web.Response:
        target = self._target(request)
        if request.content_type != "application/sdp":
            raise Refused(415, f"expected Content-Type: application/sdp (an SDP offer), not"
                           f" {request.content_type[:60]!r}", "bad_request")
        try:
            text = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(400, "body is not an SDP offer: not UTF-8", "bad_request") from None
        audio_codecs = check_offer(text)
        limit = self.config.max_sessions
        if len(self.sessions) + self._opening >= limit:
            raise Refused(503, f"too many WebRTC sessions (webrtc.max_sessions = {limit})", "session_limit",
                           {"Retry-After": "10"})
        peer = request.remote or "?"
        device, channel, substream = target
        self._opening += 1
        try:
            try:
                stream, sub = await self.streams.open(device, channel, substream=substream, consumer=f"webrtc {peer}")
            except StreamError as exc:
                status = exc.http_status if exc.http_status in (404, 503, 504) else 502
                result = {404: "not_found", 503: "no_answer", 504: "no_media"}.get(status, "failed")
                raise Refused(status, exc.reason, result) from None
            sub.close()  # held, not read: the consumer count keeps the stream up; media comes by callback
            session = WhepSession(self, secrets.token_urlsafe(16), stream, sub, peer)
        finally:
            self._opening -= 1
        self.sessions[session.ident] = session
        metrics.WEBRTC_SESSIONS_OPEN.set(len(self.sessions))
        try:
            await self._prepare(session, audio_codecs)
            answer = await session.negotiate(text)
        except BaseException:
            session.close("not_answered", "offer not answered")
            raise
        if self._stopping:
            session.close("gateway_stopping", "gateway stopping")
            raise Refused(503, "the gateway is stopping", "failed")
        if session.closed:  # the stream ended meanwhile
            raise Refused(502, "the stream ended while the offer was answered", "failed")
        metrics.WEBRTC_SESSIONS.labels("ok").inc()
        log.info("webrtc session created", session=session.ident, stream=str(stream.key), peer=peer,
                 transcode=session.transcoder.reason if session.transcoder is not None else None,
                 audio=session.audio_codec.name if session.audio is not None and session.audio_codec else None)
        location = f"/whep/session/{session.ident}"
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": location})

    async def delete(self, request: web.Request) -> web.Response:
        ident = request.match_info["session_id"]
        session = self.sessions.get(ident)
        if session is None:
            raise ApiError(404, f"no WHEP session {ident[:64]!r}")
        session.close("deleted", "DELETE by the client")
        return web.Response(status=204)

    @staticmethod
    def _target(request: web.Request) -> tuple[str | None, str, int]:
        info = request.match_info
        device = info.get("device_id")
        if device is not None:
            check_id(device, "device ID")
        channel = check_id(info["channel_id"], "channel ID")
        try:
            return device, channel, parse_substream(request.query.get("stream", "main"))
        except ValueError as exc:
            raise Refused(400, str(exc), "bad_request") from None

    async def _prepare(self, session: WhepSession, audio_codecs: frozenset[Codec]) -> None:
        """Wait for the stream's parameters; choose passthrough or transcode, and the audio to send."""
        stream = session.stream
        cache = stream.fanout.cache
        first_audio = await stream.wait_described()
        if stream.fanout.closed:
            raise Refused(502, f"the stream ended: {stream.error.reason if stream.error else 'stopped'}", "failed")
        codec = cache.video_codec
        if codec is None:
            raise Refused(502, "the stream carries no video", "unsupported")
        if codec not in (Codec.H264, Codec.H265):
            raise Refused(415, f"video codec {codec.name} cannot be played in a browser", "unsupported")
        reason = transcode_reason(cache)
        if reason is not None:
            transcoder = self._transcoder(stream, reason)
            session.transcoder = transcoder
            session.source = transcoder.fanout
        if first_audio is not None and first_audio.codec in audio_codecs:
            session.audio_codec = first_audio.codec

    # -- transcoders
    def _transcoder(self, stream: StreamSession, reason: str) -> Transcoder:
        transcoder = self.transcoders.get(stream)
        if transcoder is None:
            limit = self.config.max_transcodes
            if len(self.transcoders) >= limit:
                why = "transcoding is off" if limit == 0 else f"{limit} already run"
                raise Refused(503, f"the stream needs transcoding for browsers ({reason}) and {why}"
                               f" (webrtc.max_transcodes = {limit})", "transcode_limit", {"Retry-After": "10"})
            transcoder = Transcoder(self, stream, reason)
            self.transcoders[stream] = transcoder
            self._threads = [t for t in self._threads if t.is_alive()] + [transcoder.thread]
            try:
                transcoder.start()
            except StreamEnded as exc:
                raise Refused(502, f"stream ended: {exc.reason}", "failed") from None
        transcoder.users += 1
        return transcoder

    def _release(self, transcoder: Transcoder) -> None:
        transcoder.users -= 1
        if transcoder.users <= 0:
            transcoder.stop("no WebRTC viewer left")

    def _forget_transcoder(self, transcoder: Transcoder) -> None:
        if self.transcoders.get(transcoder.stream) is transcoder:
            del self.transcoders[transcoder.stream]

    # -- bookkeeping
    def _forget(self, session: WhepSession) -> None:
        if self.sessions.get(session.ident) is session:
            del self.sessions[session.ident]
        metrics.WEBRTC_SESSIONS_OPEN.set(len(self.sessions))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shutdown(self, app: web.Application) -> None:
        self._stopping = True
        for session in list(self.sessions.values()):
            session.close("gateway_stopping", "gateway stopping")
        for transcoder in list(self.transcoders.values()):
            transcoder.stop("gateway stopping")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        threads, self._threads = self._threads, []
        for thread in threads:
            await asyncio.to_thread(thread.join, 5)


WHEP_KEY = web.AppKey("whep", WhepEndpoint)
"""``app[WHEP_KEY]``: the application's ``WhepEndpoint``."""
