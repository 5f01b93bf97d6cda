"""Simulated media: a ``SimDevice`` answers INVITE and streams PS over RTP (UDP, TCP active, TCP passive).

Theory of operation
-------------------
Every ``SimDevice`` owns a ``DeviceMedia`` (``device.media``), which registers the device's ``INVITE``, ``ACK``
and ``BYE`` handlers; the ``Simulator`` routes ``RequestCancelled`` (a CANCEL the endpoint already answered 200)
to it too. One INVITE is one ``MediaSession``, run as a task of the device (``spawn``: ``device.stop()`` ends it
without a BYE, as a power cut would):

    INVITE ─► 100 Trying (the endpoint) ─► [answer_delay] ─► reject? ─► final status, end
      │           CANCEL meanwhile ─► 487, end ("cancelled")
      └─► open the media socket ─► 200 OK + SDP answer (sendonly) ─► wait ACK (64 x T1, else BYE)
            ─► [TCP: connect / accept] ─► stream until BYE (200, "bye"), ``end_stream()`` (our BYE), a dead
               TCP connection (our BYE) or the device stopping.

Transport, from the offer (the names are the platform's role, as GB/T 28181 tools name them):

* ``udp`` (``RTP/AVP``): datagrams from a socket of ours to the offer's ``c=`` address and ``m=`` port; the
  answer carries that socket's port.
* ``tcp-passive`` (``TCP/RTP/AVP`` + ``a=setup:passive``, or no setup, or ``actpass``): the platform listens;
  we bind a port (put in the answer, ``a=setup:active``) and connect from it to the offer's address after ACK.
* ``tcp-active`` (``a=setup:active``): the platform connects; we listen on a port of ours, put it in the answer
  (``a=setup:passive``) and stream on the first connection accepted.

Over TCP every RTP packet gets the RFC 4571 2-byte length prefix. The SSRC is the offer's ``y=`` (a random
GB-style one if the offer has none). Media comes from the device's source (``gateway.sim.source``: the cached
generated clip for the configured codec/audio/size/fps, or a replayed capture), paced in real time by PTS, each
frame's packets sent as one burst; a stream that falls more than a second behind (a blocked loop) re-bases its
clock instead of flooding.

Misbehaviour (``Misbehaviour``, initial values from ``SimConfig``; replace ``device.media.misbehave`` or
``device.media.channel_misbehave[channel_id]`` for the next sessions, or ``session.misbehave`` mid-stream, where
the packet-level options apply from the next burst; the SSRC options, ``no_media``, ``answer_delay`` and
``reject`` are read when the INVITE arrives): ``loss``, ``reorder`` (hold a packet and send it after the
next one), ``duplicate`` (fractions of packets, from a per-session ``random.Random`` seeded from the simulator's
generator, so a seeded simulator repeats itself), ``garbage`` (fraction of bursts followed by 1-3 random
datagrams; framed on TCP), ``wrong_ssrc`` (send another SSRC than the ``y=`` answered, which echoes the offer's),
``change_ssrc`` (answer another ``y=`` and send that one: legal, the platform must follow the device's),
``no_media`` (answer 200, send nothing), ``answer_delay`` (seconds before the final answer) and ``reject``
(answer that status instead of 200). Every session counts what it did (``packets_sent``, ``packets_lost``...);
the counters are what tests compare with what arrived.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import ipaddress
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import structlog

from media import sdp
from media.rtp import rfc4571_frame
from sip.dialog import Dialog
from sip.endpoint import Peer, RequestCancelled, RequestReceived, Transport
from sip.errors import (
    CallDoesNotExist,
    LocalProtocolError,
    NotFound,
    RemoteProtocolError,
    UnsupportedMediaType,
)
from sip.message import SipRequest, SipResponse, SipUri, Via, build_response

from .. import __version__
from ..netutil import local_ip_toward
from ..sip_transport import SipServer, SipTimeout
from .source import Burst, CaptureSource, ClipSource, ClipSpec, load_clip

if TYPE_CHECKING:
    from .config import SimConfig
    from .device import SimDevice

__all__ = ["DeviceMedia", "MediaSession", "MediaTransport", "Misbehaviour", "SessionState"]

log = structlog.get_logger("gateway.sim.media")

USER_AGENT = f"gb28181-sim/{__version__}"
SDP_TYPE = "application/sdp"
CONNECT_TIMEOUT = 10.0
"""Seconds to connect to the platform (tcp-passive) or for the platform to connect to us (tcp-active)."""
TCP_MAX_BUFFER = 1 << 20
"""Unsent bytes on a media connection beyond which bursts are dropped (a platform that stopped reading)."""
LATE_RESYNC = 1.0
"""A stream this many seconds behind its clock re-bases the clock instead of catching up."""
HISTORY = 1000
"""Ended sessions a device remembers (``DeviceMedia.history``)."""


class NotAcceptableHere(RemoteProtocolError):
    """An offer we cannot answer (RFC 3261 §21.4.26)."""

    status = 488


class MediaTransport(enum.Enum):
    """How the media travels; TCP modes are named after the platform's role (the offer's ``a=setup``)."""

    UDP = "udp"
    TCP_PASSIVE = "tcp-passive"  # the platform listens, we connect
    TCP_ACTIVE = "tcp-active"  # the platform connects, we listen


class SessionState(enum.Enum):
    ANSWERING = "answering"  # INVITE received, no final answer yet
    WAITING_ACK = "waiting-ack"  # 200 OK sent
    CONNECTING = "connecting"  # ACKed, TCP connection being made
    STREAMING = "streaming"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    """What a session does wrong on purpose (see the module docstring)."""

    loss: float = 0.0
    """Fraction of RTP packets not sent."""
    reorder: float = 0.0
    """Fraction of RTP packets held back and sent after the next one."""
    duplicate: float = 0.0
    """Fraction of RTP packets sent twice."""
    garbage: float = 0.0
    """Fraction of bursts (frames) followed by 1-3 random datagrams (RFC 4571-framed on TCP)."""
    wrong_ssrc: bool = False
    """Send another SSRC than the one answered in ``y=`` (which echoes the offer's)."""
    change_ssrc: bool = False
    """Answer ``y=`` with another SSRC than the offer's, and send that one."""
    no_media: bool = False
    """Answer 200 and send nothing."""
    answer_delay: float = 0.0
    """Seconds between the INVITE and our final answer (100 Trying goes at once)."""
    reject: int = 0
    """Answer this status (e.g. 486, 488) instead of 200; 0: accept."""
    omit_sdp_fields: bool = False
    """Answer SDP without the GB28181 ``y=`` and ``f=`` lines (the SSRC on the wire stays the offer's)."""
    answer_transport: str = ""
    """Answer (and use) this transport instead of the offer's: 'udp', 'tcp-passive' or 'tcp-active' (named after
    the platform's role, as ``MediaTransport``); '' follows the offer. Devices in the field do this."""

    def __post_init__(self) -> None:
        errors = [f"{name} = {getattr(self, name)!r}: expected a fraction from 0 to 1"
                  for name in ("loss", "reorder", "duplicate", "garbage") if not 0.0 <= getattr(self, name) <= 1.0]
        if not 0.0 <= self.answer_delay <= 3600:
            errors.append(f"answer_delay = {self.answer_delay!r}: expected 0-3600 seconds")
        if self.reject and not 300 <= self.reject <= 699:
            errors.append(f"reject = {self.reject!r}: expected 0 or a status from 300 to 699")
        if self.answer_transport not in ("", *(t.value for t in MediaTransport)):
            errors.append(f"answer_transport = {self.answer_transport!r}: expected '', 'udp', 'tcp-passive'"
                          " or 'tcp-active'")
        if errors:
            raise ValueError("; ".join(errors))

    @classmethod
    def from_config(cls, config: SimConfig) -> Misbehaviour:
        return cls(loss=config.loss, reorder=config.reorder, duplicate=config.duplicate, garbage=config.garbage,
                   wrong_ssrc=config.wrong_ssrc, change_ssrc=config.change_ssrc, no_media=config.no_media,
                   answer_delay=config.answer_delay, reject=config.reject)


def _offer_transport(offer: sdp.SessionDescription) -> MediaTransport:
    proto = offer.transport
    if proto is sdp.Transport.UDP:
        return MediaTransport.UDP
    if proto is not sdp.Transport.TCP:
        raise NotAcceptableHere(f"unsupported media transport {offer.primary.proto}")
    setup = offer.setup
    if setup is sdp.SetupRole.ACTIVE:
        return MediaTransport.TCP_ACTIVE
    if setup is sdp.SetupRole.HOLDCONN:
        raise NotAcceptableHere("a=setup:holdconn")
    return MediaTransport.TCP_PASSIVE  # passive, actpass (we choose to connect) or absent (GB default)


def _other_ssrc(ssrc: int, rng: random.Random) -> int:
    """Another GB-style SSRC: the same 6-digit prefix, other last 4 digits."""
    base = ssrc - ssrc % 10000
    return base + (ssrc % 10000 + 1 + rng.randrange(9998)) % 10000


def _uri_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


class _TcpMedia(asyncio.Protocol):
    """One media TCP connection (either direction): we only write; what the platform sends is ignored."""

    def __init__(self, session: MediaSession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.session._tcp_connected(self)

    def data_received(self, data: bytes) -> None:
        pass  # RTCP or keepalives from the platform: not simulated

    def connection_lost(self, exc: Exception | None) -> None:
        self.session._tcp_lost(self)


class MediaSession:
    """One INVITE and the stream it started (see the module docstring). Counters are plain attributes."""

    def __init__(self, media: DeviceMedia, server: SipServer, ev: RequestReceived, channel_id: str,
                 offer: sdp.SessionDescription, misbehave: Misbehaviour, rng: random.Random) -> None:
        self.media = media
        self.device = media.device
        self.server = server
        self.invite = ev.request
        self.peer = ev.peer
        self.call_id = ev.request.call_id
        self.channel_id = channel_id
        self.offer = offer
        self.misbehave = misbehave
        """Replace at any time: the stream applies the new value from its next burst."""
        self.rng = rng
        self.transport = (MediaTransport(misbehave.answer_transport) if misbehave.answer_transport
                          else _offer_transport(offer))
        self.mode = offer.play_mode or sdp.PlayMode.PLAY
        self.offer_ssrc = offer.ssrc
        """The offer's ``y=`` as an int; a random GB-style one if it has none (or one that is not decimal)."""
        if self.offer_ssrc is None:
            domain = "".join(ch for ch in self.device.config.domain if ch.isdigit()).ljust(8, "0")
            self.offer_ssrc = int(f"0{domain[3:8]}{rng.randrange(10000):04d}")
        self.answer_ssrc = _other_ssrc(self.offer_ssrc, rng) if misbehave.change_ssrc else self.offer_ssrc
        """The ``y=`` of our answer."""
        self.ssrc = _other_ssrc(self.answer_ssrc, rng) if misbehave.wrong_ssrc else self.answer_ssrc
        """The SSRC on the wire."""
        self.target: tuple[str, int] = (offer.media_ip or "", offer.media_port)
        """Where media goes (udp, tcp-passive), from the offer; for tcp-active, the address that connected."""
        if self.transport is not MediaTransport.TCP_ACTIVE:
            try:
                unusable = ipaddress.ip_address(self.target[0]).is_unspecified or not 0 < self.target[1] < 65536
            except ValueError:
                unusable = True
            if unusable:
                raise NotAcceptableHere(f"no usable media address in the offer: {self.target[0]}:{self.target[1]}")
        self.local_port = 0
        """Our media port (the one in the answer)."""
        self.state = SessionState.ANSWERING
        self.status = 0
        """The final status we answered the INVITE with (0: none yet)."""
        self.answer: sdp.SessionDescription | None = None
        self.dialog: Dialog | None = None
        self.end_reason = ""
        """``bye`` (the platform's), ``end_stream``, ``cancelled``, ``rejected``, ``no ack``, ``connect failed``,
        ``connection lost``, ``stopped`` (device stopped), ``error``."""
        self.bye_status: int | None = None
        """The answer to our own BYE (None: not sent, or no answer)."""
        # counters
        self.rtp_packets = 0
        """RTP packets the source produced for this session (before loss and duplication)."""
        self.packets_sent = 0
        """RTP packets written to the socket (duplicates included, garbage not)."""
        self.bytes_sent = 0
        """Bytes written: RTP packets, garbage, RFC 4571 prefixes."""
        self.video_frames_sent = 0
        self.audio_frames_sent = 0
        self.packets_lost = 0
        self.packets_duplicated = 0
        self.packets_reordered = 0
        self.garbage_sent = 0
        """Random datagrams (or RFC 4571 frames) sent."""
        self.send_errors = 0
        """Packets the socket refused (full buffer, unreachable) or bursts dropped on a stalled TCP connection."""
        self.late_resyncs = 0
        """Times the stream fell more than ``LATE_RESYNC`` behind and re-based its clock."""
        self.first_seq: int | None = None
        """RTP sequence number of the first packet produced (random; ``rtp_packets`` follow it)."""
        self.first_timestamp: int | None = None
        """RTP timestamp (and PS PTS) of the first frame (random)."""
        # times (loop time)
        loop = asyncio.get_running_loop()
        self.invited_at = loop.time()
        self.answered_at: float | None = None
        self.acked_at: float | None = None
        self.connected_at: float | None = None
        self.first_packet_at: float | None = None
        self.bye_received_at: float | None = None
        self.bye_sent_at: float | None = None
        self.ended_at: float | None = None

        self._to_tag = server.endpoint.new_tag()
        self._acked = asyncio.Event()
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._streaming = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._listener: asyncio.Server | None = None
        self._tcp: _TcpMedia | None = None
        self._held: bytes | None = None
        self.log = self.device.log.bind(call_id=self.call_id, channel_id=channel_id, transport=self.transport.value)

    def __repr__(self) -> str:
        return (f"<MediaSession {self.channel_id} {self.transport.value} {self.state.value} ssrc={self.ssrc} "
                f"packets={self.packets_sent}>")

    # ------------------------------------------------------------------------------------------ public API
    @property
    def ended(self) -> bool:
        return self.state is SessionState.ENDED

    async def wait_streaming(self, timeout: float | None = None) -> bool:
        """True once media flows (first burst sent; with ``no_media``, once connected and ACKed)."""
        return await self._wait(self._streaming, timeout)

    async def wait_ended(self, timeout: float | None = None) -> bool:
        return await self._wait(self._ended, timeout)

    async def end_stream(self, send_bye: bool = True) -> int | None:
        """Stop sending and (if the call was answered 200) send our own BYE, as a device whose stream ended does.

        Returns the BYE's final status (None if not sent or unanswered).
        """
        await self._stop("end_stream")
        if send_bye:
            await self._send_bye()
        return self.bye_status

    # ------------------------------------------------------------------------------------------ SIP events
    def start(self) -> None:
        self._task = self.device.spawn(self._run(), name=f"sim.{self.channel_id}.media")
        # A task cancelled before it first runs never executes its ``finally``: clean up from here too.
        self._task.add_done_callback(lambda _task: self._cleanup())

    def on_ack(self, req: SipRequest) -> None:
        if self.dialog is None or not self.dialog.matches(req):
            return
        if self.acked_at is None:
            self.acked_at = asyncio.get_running_loop().time()
        self._acked.set()

    def on_bye(self, server: SipServer, req: SipRequest) -> None:
        if self.dialog is None:
            raise CallDoesNotExist("no dialog yet")
        self.dialog.receive_request(req)  # 481 / 500 if it is not ours
        self.bye_received_at = asyncio.get_running_loop().time()
        server.respond(build_response(req, 200, headers=self.media.headers()))
        self.dialog.terminate()
        self.log.info("bye received", packets=self.packets_sent, frames=self.video_frames_sent)
        self._cancel("bye")

    def on_cancel(self, server: SipServer) -> None:
        if self.status:
            return  # answered already: the endpoint would not have told us
        self._final(server, 487)
        self.log.info("invite cancelled")
        self._cancel("cancelled")

    # ------------------------------------------------------------------------------------------ the task
    async def _run(self) -> None:
        try:
            await self._session()
        except asyncio.CancelledError:
            if not self.end_reason:
                self.end_reason = "stopped"  # device.stop(): a power cut answers nothing
            elif not self.status and self.end_reason == "end_stream":
                self._final(self.server, 480)  # ended before answering: Temporarily Unavailable
            raise
        except Exception as exc:
            self.end_reason = self.end_reason or "error"
            if not self.status:  # every INVITE gets a final answer
                status = exc.status if isinstance(exc, RemoteProtocolError) else 500
                self._final(self.server, status)
            if not isinstance(exc, RemoteProtocolError):
                raise
            self.log.info("invite refused", status=exc.status, reason=exc.reason)
        finally:
            self._cleanup()

    async def _session(self) -> None:
        mis = self.misbehave
        if mis.answer_delay:
            await asyncio.sleep(mis.answer_delay)
        if mis.reject:
            self._final(self.server, mis.reject)
            self.end_reason = "rejected"
            self.log.info("invite rejected", status=mis.reject)
            return
        source = await self.media.source()
        await self._open()
        self._answer(source)
        ack_timeout = 64 * self.device.config.t1
        if not await self._wait(self._acked, ack_timeout):
            self.log.warning("no ACK for our 200", timeout=ack_timeout)
            self.end_reason = "no ack"
            self.spawn_bye()
            return
        connect = self.transport is MediaTransport.TCP_ACTIVE or (
            self.transport is MediaTransport.TCP_PASSIVE and not mis.no_media)
        if connect:
            self.state = SessionState.CONNECTING
            if self.transport is MediaTransport.TCP_PASSIVE:
                await self._connect()
            if not await self._wait(self._connected, CONNECT_TIMEOUT):
                self.log.warning("media connection failed", target=self.target)
                self.end_reason = "connect failed"
                self.spawn_bye()
                return
        self.state = SessionState.STREAMING
        if mis.no_media:
            self._streaming.set()
            self.log.info("answered, sending no media (no_media)")
            await asyncio.Event().wait()  # until BYE, end_stream() or stop
        self.log.info("streaming", target=self.target, ssrc=self.ssrc, source=source.description)
        self.first_seq = self.rng.randrange(1 << 16)
        self.first_timestamp = self.rng.randrange(1 << 32)
        await self._stream(source.bursts(self.ssrc, seq=self.first_seq, pts_base=self.first_timestamp))

    async def _open(self) -> None:
        """Bind the media socket (udp: the sender; tcp-passive: the one we connect from; tcp-active: listen)."""
        host = self.media.bind_host()
        if self.transport is MediaTransport.TCP_ACTIVE:
            loop = asyncio.get_running_loop()
            self._listener = await loop.create_server(lambda: _TcpMedia(self), host, 0)
            self.local_port = self._listener.sockets[0].getsockname()[1]
            return
        family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
        if (family == socket.AF_INET6) != (":" in host):
            host = "::" if family == socket.AF_INET6 else "0.0.0.0"
        kind = socket.SOCK_DGRAM if self.transport is MediaTransport.UDP else socket.SOCK_STREAM
        sock = socket.socket(family, kind)
        try:
            sock.setblocking(False)
            if kind == socket.SOCK_DGRAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.bind((host, 0))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.local_port = sock.getsockname()[1]

    def _answer(self, source: ClipSource | CaptureSource) -> None:
        setup = None
        if self.transport is MediaTransport.TCP_PASSIVE:
            setup = sdp.SetupRole.ACTIVE
        elif self.transport is MediaTransport.TCP_ACTIVE:
            setup = sdp.SetupRole.PASSIVE
        start, end = self.offer.timing if self.mode is not sdp.PlayMode.PLAY else (0, 0)
        media_ip = local_ip_toward(self.target[0] or self.peer.addr[0], self.media.bind_host())
        self.answer = sdp.gb28181_answer(
            device_id=self.channel_id, media_ip=media_ip, port=self.local_port, ssrc=self.answer_ssrc,
            mode=self.mode, transport=sdp.Transport.UDP if self.transport is MediaTransport.UDP else sdp.Transport.TCP,
            setup=setup, start=start, end=end, media_info=media_info(self.device.config, source),
        )
        if self.misbehave.omit_sdp_fields:
            self.answer = dataclasses.replace(self.answer, y=None, f=None)
        resp = self._final(self.server, 200, bytes(self.answer))
        self.dialog = Dialog.from_uas(self.invite, resp)
        self.state = SessionState.WAITING_ACK
        self.log.info("invite answered", local_port=self.local_port, answer_ssrc=self.answer_ssrc,
                      offer_ssrc=self.offer_ssrc)

    def _final(self, server: SipServer, status: int, body: bytes = b"") -> SipResponse:
        headers = self.media.headers()
        if status < 300:
            headers.append(("Contact", str(self.device.sim.contact(self.channel_id))))
        resp = build_response(self.invite, status, to_tag=self._to_tag, headers=headers, body=body,
                              content_type=SDP_TYPE if body else None)
        self.status = status
        try:
            server.respond(resp)
        except LocalProtocolError as exc:  # the transaction is gone (the SIP server stopped)
            self.log.info("final answer not sent", status=status, error=exc.reason)
        self.answered_at = asyncio.get_running_loop().time()
        return resp

    async def _connect(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        sock, self._sock = self._sock, None
        try:
            await asyncio.wait_for(loop.sock_connect(sock, self.target), CONNECT_TIMEOUT)
            await loop.create_connection(lambda: _TcpMedia(self), sock=sock)
        except (OSError, TimeoutError) as exc:
            sock.close()
            self.log.warning("media connect failed", target=self.target, error=str(exc) or type(exc).__name__)

    def _tcp_connected(self, conn: _TcpMedia) -> None:
        if self._tcp is not None or self.ended:
            if conn.transport is not None:
                conn.transport.close()  # one media connection per session
            return
        self._tcp = conn
        if conn.transport is not None:
            peer = conn.transport.get_extra_info("peername")
            if peer:
                self.target = (peer[0], peer[1])
        self.connected_at = asyncio.get_running_loop().time()
        if self._listener is not None:
            self._listener.close()
        self._connected.set()

    def _tcp_lost(self, conn: _TcpMedia) -> None:
        if conn is not self._tcp or self.ended or self._task is None or self._task.done():
            return
        self.log.info("media connection closed by the platform")
        self._cancel("connection lost")
        self.spawn_bye()

    async def _stream(self, bursts: Iterator[Burst]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for burst in bursts:
            due = start + burst.at
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > LATE_RESYNC:
                start = now - burst.at
                self.late_resyncs += 1
            self._send_burst(burst)

    def _send_burst(self, burst: Burst) -> None:
        mis = self.misbehave
        rng = self.rng
        packets = burst.packets
        self.rtp_packets += len(packets)
        out: list[bytes] = []
        for pkt in packets:
            if mis.loss and rng.random() < mis.loss:
                self.packets_lost += 1
                continue
            if self._held is not None:
                out.append(pkt)
                out.append(self._held)
                self._held = None
                continue
            if mis.reorder and rng.random() < mis.reorder:
                self._held = pkt
                self.packets_reordered += 1
                continue
            out.append(pkt)
            if mis.duplicate and rng.random() < mis.duplicate:
                out.append(pkt)
                self.packets_duplicated += 1
        sent = len(out)
        if mis.garbage and rng.random() < mis.garbage:
            for _ in range(rng.randint(1, 3)):
                out.append(rng.randbytes(rng.randint(1, 1400)))
                self.garbage_sent += 1
        if out:
            self._write(out, sent)
        self.video_frames_sent += burst.video_frames
        self.audio_frames_sent += burst.audio_frames
        if self.first_packet_at is None:
            self.first_packet_at = asyncio.get_running_loop().time()
            self._streaming.set()

    def _write(self, out: list[bytes], rtp: int) -> None:
        """Write ``out`` (its first ``rtp`` items RTP packets, the rest garbage)."""
        if self.transport is MediaTransport.UDP:
            sock = self._sock
            assert sock is not None
            for i, pkt in enumerate(out):
                try:
                    sock.sendto(pkt, self.target)
                except OSError:  # BlockingIOError (buffer full), ECONNREFUSED from an earlier ICMP...
                    self.send_errors += 1
                    continue
                self.bytes_sent += len(pkt)
                if i < rtp:
                    self.packets_sent += 1
            return
        tcp = self._tcp
        if tcp is None or tcp.transport is None or tcp.transport.is_closing():
            self.send_errors += len(out)
            return
        if tcp.transport.get_write_buffer_size() > TCP_MAX_BUFFER:
            self.send_errors += len(out)
            return
        data = b"".join(rfc4571_frame(p) for p in out)
        tcp.transport.write(data)
        self.bytes_sent += len(data)
        self.packets_sent += rtp

    # ------------------------------------------------------------------------------------------ ending
    def _cancel(self, reason: str) -> None:
        if not self.end_reason:
            self.end_reason = reason
        if self._task is not None and not self._task.done():
            self._task.cancel()
        else:
            self._cleanup()

    async def _stop(self, reason: str) -> None:
        self._cancel(reason)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def spawn_bye(self) -> None:
        """Send our BYE in the background (the session's own task may be the one ending)."""
        if self.dialog is not None and self.status < 300 and self.bye_sent_at is None \
                and self.bye_received_at is None:
            self.device.spawn(self._send_bye(), name=f"sim.{self.channel_id}.bye")

    async def _send_bye(self) -> None:
        dialog = self.dialog
        if dialog is None or self.bye_received_at is not None or self.bye_sent_at is not None \
                or not 200 <= self.status < 300:
            return
        peer = self._bye_peer(dialog)
        via = Via(transport=peer.transport.value, host=_uri_host(self.media.bind_ip()), port=self.server.port,
                  params=(("rport", None), ("branch", self.server.endpoint.new_branch())))
        try:
            bye = dialog.create_request("BYE", via, headers=self.media.headers())
        except LocalProtocolError:
            return  # the dialog ended meanwhile
        dialog.terminate()
        self.bye_sent_at = asyncio.get_running_loop().time()
        self.log.info("sending bye", reason=self.end_reason)
        try:
            resp = await self.server.request(bye, peer)
        except SipTimeout:
            self.log.info("bye unanswered")
            return
        self.bye_status = resp.status

    def _bye_peer(self, dialog: Dialog) -> Peer:
        """Where in-dialog requests go: over the INVITE's connection (TCP), else to the remote target if it
        is an IP literal, else back to where the INVITE came from."""
        if self.peer.transport is not Transport.UDP:
            return self.peer
        try:
            uri = SipUri.parse(dialog.remote_target)
            ipaddress.ip_address(uri.host.strip("[]"))
        except (RemoteProtocolError, ValueError):
            return Peer(Transport.UDP, self.invite.top_via.response_address())
        return Peer(Transport.UDP, (uri.host.strip("[]"), uri.port or 5060))

    def _cleanup(self) -> None:
        if self.state is SessionState.ENDED:
            return
        self.state = SessionState.ENDED
        self.ended_at = asyncio.get_running_loop().time()
        if self._held is not None:
            self._held = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._tcp is not None and self._tcp.transport is not None:
            self._tcp.transport.close()
        self.media._ended(self)
        self._ended.set()
        self.log.info("media session ended", reason=self.end_reason, packets=self.packets_sent,
                      video_frames=self.video_frames_sent, audio_frames=self.audio_frames_sent,
                      bytes=self.bytes_sent, lost=self.packets_lost, duplicated=self.packets_duplicated,
                      reordered=self.packets_reordered, garbage=self.garbage_sent, errors=self.send_errors)

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class DeviceMedia:
    """The media side of one ``SimDevice`` (``device.media``): INVITE/ACK/BYE/CANCEL handling and its sessions."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.misbehave = Misbehaviour.from_config(device.config)
        """Misbehaviour of the sessions INVITEd from now on (a session copies it; see ``MediaSession.misbehave``)."""
        self.channel_misbehave: dict[str, Misbehaviour] = {}
        """Per-channel overrides of ``misbehave`` (channel ID → what its next sessions do)."""
        self.sessions: dict[str, MediaSession] = {}
        """Live sessions by Call-ID."""
        self.history: collections.deque[MediaSession] = collections.deque(maxlen=HISTORY)
        """Every session (live and ended), in INVITE order; the last ``HISTORY``."""
        self.invites = 0
        """INVITEs received (retransmissions excluded)."""
        self._changed = asyncio.Event()
        device.request_handlers.update(INVITE=self._on_invite, ACK=self._on_ack, BYE=self._on_bye)

    # ------------------------------------------------------------------------------------------ public API
    @property
    def active(self) -> list[MediaSession]:
        return list(self.sessions.values())

    def find(self, call_id: str) -> MediaSession | None:
        """The session of this Call-ID (live, or ended and still in the history)."""
        session = self.sessions.get(call_id)
        if session is None:
            session = next((s for s in reversed(self.history) if s.call_id == call_id), None)
        return session

    async def wait_session(self, count: int = 1, timeout: float | None = None) -> MediaSession | None:
        """The ``count``-th session of this device (from 1, in INVITE order) once it exists; None after
        ``timeout`` seconds or if it has left the history."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.invites < count:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return None
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return None
        index = count - 1 - (self.invites - len(self.history))
        return self.history[index] if index >= 0 else None

    async def end_all(self, send_bye: bool = True) -> None:
        """``end_stream`` on every live session."""
        await asyncio.gather(*(s.end_stream(send_bye) for s in list(self.sessions.values())))

    async def source(self) -> ClipSource | CaptureSource:
        """What the sessions of this device send: the configuration's clip or capture (each loaded once per
        process; ``source.ClipSource``/``CaptureSource`` objects are cheap views of it)."""
        return await make_source(self.device.config)

    @staticmethod
    def headers() -> list[tuple[str, str]]:
        return [("User-Agent", USER_AGENT)]

    def bind_host(self) -> str:
        return self.device.config.local_host

    def bind_ip(self) -> str:
        return self.device.sim.local_ip

    # ------------------------------------------------------------------------------------------ handlers
    def _on_invite(self, server: SipServer, ev: RequestReceived) -> None:
        req = ev.request
        if req.to.tag is not None:
            session = self.sessions.get(req.call_id)
            if session is None:
                raise CallDoesNotExist("re-INVITE outside a dialog")
            raise NotAcceptableHere("re-INVITE not simulated")
        channel = req.request_uri.user or req.to.uri.user or ""
        if channel != self.device.device_id and channel not in self.device.channel_ids:
            raise NotFound("no such channel")
        if req.content_type != SDP_TYPE:
            raise UnsupportedMediaType(f"expected application/sdp, got {req.content_type}")
        try:
            offer = sdp.parse(req.body)
        except sdp.SdpError as exc:
            raise NotAcceptableHere(str(exc)) from None
        rng = random.Random(self.device.sim.rng.getrandbits(64))
        misbehave = self.channel_misbehave.get(channel, self.misbehave)
        session = MediaSession(self, server, ev, channel, offer, misbehave, rng)  # 488: transport, address
        self.sessions[session.call_id] = session
        self.history.append(session)
        self.invites += 1
        session.start()
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_ack(self, server: SipServer, ev: RequestReceived) -> None:
        session = self.sessions.get(ev.request.call_id)
        if session is not None:
            session.on_ack(ev.request)

    def _on_bye(self, server: SipServer, ev: RequestReceived) -> None:
        session = self.sessions.get(ev.request.call_id)
        if session is None:
            raise CallDoesNotExist("no such call")
        session.on_bye(server, ev.request)

    def on_cancel(self, server: SipServer, ev: RequestCancelled) -> None:
        """The platform CANCELled a pending INVITE (the endpoint answered the CANCEL 200): 487 it."""
        session = self.sessions.get(ev.invite.call_id)
        if session is not None:
            session.on_cancel(server)
            return
        try:  # not ours after all (should not happen): still close the INVITE transaction
            server.respond(build_response(ev.invite, 487, to_tag=server.endpoint.new_tag()))
        except LocalProtocolError:
            pass

    def _ended(self, session: MediaSession) -> None:
        if self.sessions.get(session.call_id) is session:
            del self.sessions[session.call_id]



def media_info(config: SimConfig, source: ClipSource | CaptureSource) -> sdp.MediaInfo:
    """The answer's ``f=``: codec (2 H.264, 5 H.265), WxH, fps, VBR, kbps; then the audio: G.711 (A or U:
    codec 1, 64 kbps, 8 kHz), or for AAC, which has no ``f=`` codec code, only the sample rate (8 or 16 kHz)."""
    if isinstance(source, CaptureSource):
        return sdp.MediaInfo(video_codec="2")  # what the capture holds is not looked into
    spec = source.clip.spec
    audio = ("", "", "")
    if spec.audio in ("g711a", "g711u"):
        audio = ("1", "8", "1")
    elif spec.audio == "aac":
        audio = ("", "", "3" if spec.audio_rate == 16000 else "1")
    return sdp.MediaInfo("5" if spec.codec == "h265" else "2", f"{spec.width}x{spec.height}", str(spec.fps), "2",
                         str(round(source.clip.video_kbps)), *audio)


async def make_source(config: SimConfig) -> ClipSource | CaptureSource:
    """The source the configuration describes: a replayed capture, else the generated clip (encoded once)."""
    if config.replay:
        return await asyncio.to_thread(CaptureSource, config.replay, speed=config.replay_speed)
    spec = ClipSpec(codec=config.codec, width=config.width, height=config.height, fps=config.fps,
                    seconds=config.clip_seconds, audio=config.audio, audio_rate=config.audio_rate,
                    audio_frame_ms=config.audio_frame_ms)
    return ClipSource(await load_clip(spec), max_payload=config.rtp_payload)
