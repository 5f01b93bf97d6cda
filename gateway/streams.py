"""Live stream sessions: one per (device, channel, sub-stream), started on the first consumer, stopped after linger.

Theory of operation
-------------------
``StreamManager.open(device, channel)`` returns a ``Subscription`` to the channel's access units. The first
consumer creates a ``StreamSession``, which:

1. allocates an RTP port (``gateway.ports.PortPool``, the one pool) and an SSRC (``SsrcAllocator``, the GB28181
   rule), and starts receiving before it asks (UDP, single-port UDP, TCP passive) so no packet is missed;
2. sends ``INVITE`` with a GB28181 SDP offer (``media.sdp.gb28181_offer``: our media IP on the route toward the
   device, ``y=`` SSRC, ``Subject: {channel}:{ssrc},{platform}:0``, the sub-stream attribute in the device's
   dialect); no final answer within ``media.invite_timeout`` → ``CANCEL`` and a ``503``-style error; a refusal
   surfaces with the device's status code;
3. on ``200 OK`` builds the dialog, sends ``ACK`` (again for each retransmitted 2xx), takes the device's ``y=``
   (it may differ from ours) and, for TCP active, connects to the port in the answer;
4. hands every access unit to its ``FanOut`` (GOP cache, bounded per-consumer queues). If no frame arrives within
   ``media.no_media_timeout`` the session fails with the receiver's diagnosis (no packets, packets from another
   address, another SSRC, undecodable payload), and every consumer is told why.

When the last consumer leaves, the session lingers ``media.linger`` seconds, then sends ``BYE``. A ``BYE`` from
the device ends the session (answered ``200``). Ports and SSRCs go back to their pools when the session ends.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from media import sdp
from media.frames import AccessUnit, Codec
from sip import manscdp
from sip.dialog import Dialog
from sip.endpoint import RequestReceived, ResponseReceived, SipEvent
from sip.errors import CallDoesNotExist
from sip.message import NameAddr, SipRequest, SipResponse, SipUri, build_request, build_response

from . import metrics
from .config import Config
from .devices import Device, DeviceRegistry
from .fanout import FanOut, Subscription
from .ingest import (
    RtpReceiver,
    SinglePortUdpIngest,
    TcpActiveIngest,
    TcpPassiveIngest,
    UdpIngest,
)
from .netutil import local_ip_toward
from .ports import PortPool, SsrcAllocator
from .sip_router import MANSCDP, SipRouter
from .sip_transport import SipServer, SipTimeout

log = structlog.get_logger("gateway.streams")

KEYFRAME_REQUEST_INTERVAL = 2.0
#: How long ``StreamSession.wait_described`` waits for the parameter sets and a keyframe, then (counted from the
#: first frame: audio arrives with the first frames) for a first audio unit.
PARAMS_WAIT = 2.0
AUDIO_WAIT = 0.3


class StreamError(Exception):
    """A stream could not start or ended abnormally. ``status`` is the device's SIP status where there was one,
    ``http_status`` what a viewer-facing API should answer (404 unknown/offline, 503 no answer, 502 failure)."""

    def __init__(self, reason: str, *, status: int | None = None, http_status: int = 502) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.http_status = http_status


class StreamState(enum.Enum):
    INVITING = "inviting"
    WAITING_MEDIA = "waiting_media"
    PLAYING = "playing"
    LINGERING = "lingering"
    STOPPED = "stopped"
    FAILED = "failed"


SUBSTREAMS = {"main": 0, "sub": 1, "0": 0, "1": 1}
"""The ``stream`` values every consumer (RTSP ``?stream=``, WHEP ``?stream=``, REST) accepts, case-insensitively."""


def parse_substream(value: str) -> int:
    """0 (main) or 1 (sub) for a ``stream`` value; ``ValueError`` with the reason consumers answer."""
    found = SUBSTREAMS.get(value.lower())
    if found is None:
        raise ValueError(f"stream must be main or sub (or 0/1), not {value[:20]!r}")
    return found


@dataclass(frozen=True, slots=True)
class StreamKey:
    device_id: str
    channel_id: str
    substream: int = 0

    def __str__(self) -> str:
        return f"{self.device_id}/{self.channel_id}{'?stream=sub' if self.substream else ''}"


class StreamSession:
    """One camera stream shared by every consumer of it."""

    def __init__(self, manager: StreamManager, key: StreamKey, device: Device) -> None:
        self.manager = manager
        self.key = key
        self.device = device
        self.state = StreamState.INVITING
        self.error: StreamError | None = None
        self.fanout = FanOut(request_keyframe=self.request_keyframe, clock=manager.loop.time, name=str(key))
        self._keyframe_asked_at = -1e9
        self.consumers = 0
        self.ssrc: int | None = None
        self.port: int | None = None
        self.transport = manager.config.media.transport
        self.dialog: Dialog | None = None
        self.invite: SipRequest | None = None
        self.receiver: RtpReceiver | None = None
        self._ingest: Any = None
        self._ack: SipRequest | None = None
        self._answer: sdp.SessionDescription | None = None
        self._started = manager.loop.time()
        self.first_frame_at: float | None = None
        self.last_frame_at: float | None = None
        #: The first audio unit received (its codec, and for AAC the ADTS header an SDP needs); None: none yet.
        self.first_audio: AccessUnit | None = None
        self.ready = manager.loop.create_future()  # resolves at the first frame, or fails
        self._linger: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------------------------------------ start
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"stream {self.key}")

    async def _run(self) -> None:
        try:
            await self._invite()
            await self._watch_media()
        except StreamError as exc:
            await self._fail(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: end the session cleanly, tell consumers, log the traceback
            log.exception("stream session crashed", stream=str(self.key))
            await self._fail(StreamError(f"internal error: {exc}"))

    async def _invite(self) -> None:
        mgr = self.manager
        media = mgr.config.media
        sip = mgr.config.sip
        dev = self.device
        if dev.peer is None or not dev.rec.online:
            raise StreamError(f"device {dev.device_id} is offline", http_status=404)
        server = mgr.server
        device_host = dev.peer.addr[0]
        media_ip = media.media_ip or local_ip_toward(device_host, sip.listen)
        ssrc_int, ssrc_text = mgr.ssrcs.allocate()
        self.ssrc = ssrc_int
        self.receiver = RtpReceiver(expected_ssrc=ssrc_int, expected_host=device_host,
                                    on_access_unit=self._on_access_unit)
        transport = sdp.Transport.UDP
        setup: sdp.SetupRole | None = None
        if self.transport == "udp-single":
            self.port = media.rtp_port_min
            mgr.single_port().register(ssrc_int, self.receiver, device_host)
        else:
            self.port = mgr.ports.allocate()
            if self.transport == "udp":
                self._ingest = UdpIngest(self.port, self.receiver)
                await self._ingest.start()
            elif self.transport == "tcp-passive":
                transport, setup = sdp.Transport.TCP, sdp.SetupRole.PASSIVE
                self._ingest = TcpPassiveIngest(self.port, self.receiver, device_host)
                await self._ingest.start()
            else:
                transport, setup = sdp.Transport.TCP, sdp.SetupRole.ACTIVE
        offer = sdp.gb28181_offer(
            platform_id=sip.platform_id, media_ip=media_ip, port=self.port, ssrc=ssrc_text,
            transport=transport, setup=setup, substream=self.key.substream if self.key.substream else None,
            dialect=sdp.SubstreamDialect(media.dialect_for(dev.device_id)),
        )
        invite = self._build_invite(server, media_ip, ssrc_text, offer.to_bytes())
        self.invite = invite
        log.info("stream inviting", stream=str(self.key), device_id=dev.device_id, channel_id=self.key.channel_id,
                 call_id=invite.call_id, transport=self.transport, port=self.port, ssrc=ssrc_text)
        key, fut = server.start_request(invite, dev.peer)
        try:
            response = await asyncio.wait_for(asyncio.shield(fut), media.invite_timeout)
        except TimeoutError:
            server.cancel(key)
            try:
                response = await asyncio.wait_for(fut, 64 * sip.t1)
            except (TimeoutError, SipTimeout):
                response = None
            if response is None or response.status >= 300:
                raise StreamError(f"device did not answer INVITE within {media.invite_timeout:g} s",
                                  http_status=503) from None
        except SipTimeout:
            raise StreamError("device did not answer INVITE", http_status=503) from None
        assert response is not None  # the fallback above raised when it got none
        if response.status >= 300:
            raise StreamError(f"device refused INVITE: {response.status} {response.reason}",
                              status=response.status, http_status=404 if response.status == 404 else 502)
        await self._accepted(invite, response)

    def _build_invite(self, server: SipServer, media_ip: str, ssrc: str, body: bytes) -> SipRequest:
        mgr = self.manager
        sip = mgr.config.sip
        dev = self.device
        assert dev.peer is not None
        host, port = dev.peer.addr
        via = mgr.registry.via_toward(dev)
        local = via.host
        return build_request(
            "INVITE", SipUri(host=host, port=port, user=self.key.channel_id),
            via=via,
            from_=NameAddr(SipUri(host=sip.domain, user=sip.platform_id),
                           params=(("tag", server.endpoint.new_tag()),)),
            to=NameAddr(SipUri(host=sip.domain, user=self.key.channel_id)),
            call_id=server.endpoint.new_call_id(), cseq=1, body=body, content_type="APPLICATION/SDP",
            headers=[
                ("Contact", f"<sip:{sip.platform_id}@{local}:{server.port}>"),
                ("Subject", f"{self.key.channel_id}:{ssrc},{sip.platform_id}:0"),
                ("User-Agent", "gb28181-gateway"),
            ],
        )

    async def _accepted(self, invite: SipRequest, response: SipResponse) -> None:
        mgr = self.manager
        dialog = Dialog.from_uac(invite, response)
        self.dialog = dialog
        mgr.by_call_id[invite.call_id] = self
        try:
            await self._apply_answer(response)
        finally:
            # After the listener of a switched transport is up: a device connecting right after our ACK must
            # find it (and a 2xx is ACKed whatever happened).
            self._send_ack(response)
        if self.transport == "tcp-active":
            answer = self._answer
            if answer is None or not answer.media_port:
                raise StreamError("device answer has no media port for TCP active")
            host = answer.media_ip or (self.device.peer.addr[0] if self.device.peer else "127.0.0.1")
            assert self.receiver is not None
            self._ingest = TcpActiveIngest(host, answer.media_port, self.receiver)
            await self._ingest.start()
        self.state = StreamState.WAITING_MEDIA

    async def _apply_answer(self, response: SipResponse) -> None:
        """Take the device's SDP answer: its SSRC, its addresses, its transport."""
        mgr = self.manager
        try:
            answer = sdp.parse(response.body) if response.body else None
        except sdp.SdpError as exc:
            answer = None
            log.warning("stream answer SDP unreadable", stream=str(self.key), error=str(exc))
        if answer is not None and answer.ssrc is not None and answer.ssrc != self.ssrc:
            log.info("device answered another SSRC", stream=str(self.key), offered=self.ssrc, answered=answer.ssrc)
            assert self.receiver is not None
            self.receiver.expect_ssrc(answer.ssrc)
            if self.transport == "udp-single":
                mgr.single_port().register(answer.ssrc, self.receiver, self.device.peer.addr[0]
                                           if self.device.peer else "")
        if answer is not None and answer.media_ip and self.receiver is not None and self.device.peer is not None:
            # Behind NAT the SDP address and the SIP source differ: media may come from either.
            self.receiver.expect_host({answer.media_ip, self.device.peer.addr[0]})
        if answer is not None and self.transport != "udp-single":
            answered = _answered_transport(answer, self.transport)
            if answered != self.transport:
                # Devices in the field answer UDP to a TCP offer and the reverse: follow the answer.
                log.info("device answered another transport", stream=str(self.key), offered=self.transport,
                         answered=answered)
                await self._switch_transport(answered)
        self._answer = answer

    async def _switch_transport(self, transport: str) -> None:
        """Receive on ``transport`` instead of what we offered (same port, a fresh receiver)."""
        old = self.receiver
        assert old is not None and self.port is not None
        if self._ingest is not None:
            await self._ingest.stop()  # closes the old receiver
            self._ingest = None
        self.receiver = RtpReceiver(expected_ssrc=old.expected_ssrc, expected_host=old.expected_hosts,
                                    on_access_unit=self._on_access_unit)
        self.transport = transport
        if transport == "udp":
            self._ingest = UdpIngest(self.port, self.receiver)
            await self._ingest.start()
        elif transport == "tcp-passive":
            self._ingest = TcpPassiveIngest(self.port, self.receiver, old.expected_hosts)
            await self._ingest.start()
        # tcp-active: connected below, to the port in the answer

    def _send_ack(self, response: SipResponse) -> None:
        assert self.dialog is not None and self.device.peer is not None
        server = self.manager.server
        if self._ack is None:
            self._ack = self.dialog.create_ack(response, self.manager.registry.via_toward(self.device))
        server.send_stateless(self._ack, self.device.peer)

    # ------------------------------------------------------------------------------------------ media
    def _on_access_unit(self, au: AccessUnit) -> None:
        now = self.manager.loop.time()
        if self.first_frame_at is None:
            self.first_frame_at = now
            metrics.STREAM_FIRST_FRAME_SECONDS.observe(now - self._started)
            self.manager.registry.note_stream_result(self.key.device_id, self.key.channel_id, None)
            if self.state is StreamState.WAITING_MEDIA:
                self.state = StreamState.PLAYING if self.consumers else StreamState.LINGERING
            log.info("stream first frame", stream=str(self.key), seconds=round(now - self._started, 3))
            if not self.ready.done():
                self.ready.set_result(None)
        self.last_frame_at = now
        if self.first_audio is None and au.codec.is_audio:
            self.first_audio = au
        self.fanout.publish(au)

    async def wait_described(self) -> AccessUnit | None:
        """Wait (at most ``PARAMS_WAIT``) until the GOP cache knows the video's parameter sets and holds a keyframe,
        then, while the stream is younger than ``AUDIO_WAIT`` after its first frame, for a first audio unit. What
        viewers describe (SDP) comes from here. Returns ``first_audio`` (None: the stream has no audio)."""
        loop = self.manager.loop
        cache = self.fanout.cache
        deadline = loop.time() + PARAMS_WAIT
        while not self.fanout.closed and loop.time() < deadline and (
                cache.video_codec is None or cache.sps is None or cache.pps is None or not cache.has_keyframe
                or (cache.video_codec is Codec.H265 and cache.vps is None)):
            await asyncio.sleep(0.05)
        deadline = (self.first_frame_at or loop.time()) + AUDIO_WAIT
        while self.first_audio is None and not self.fanout.closed and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return self.first_audio

    def request_keyframe(self) -> None:
        """Ask the camera for an I-frame (``DeviceControl`` ``IFameCmd``), at most once every 2 s."""
        now = self.manager.loop.time()
        if now - self._keyframe_asked_at < KEYFRAME_REQUEST_INTERVAL or self._stopping:
            return
        self._keyframe_asked_at = now
        task = asyncio.ensure_future(self._send_keyframe_request())
        self.manager._tasks.add(task)
        task.add_done_callback(self.manager._tasks.discard)

    async def _send_keyframe_request(self) -> None:
        mgr = self.manager
        # GB/T 28181-2016 spells it IFameCmd (sic); devices of both editions accept that spelling.
        body = manscdp.encode("Control", "DeviceControl", mgr.registry.next_sn(), self.key.channel_id,
                              [("IFameCmd", "Send")], encoding=self.device.rec.charset or "GB2312")
        try:
            request = mgr.registry.device_request(self.device, "MESSAGE", body, MANSCDP)
            assert self.device.peer is not None
            response = await mgr.server.request(request, self.device.peer)
            log.info("keyframe requested", stream=str(self.key), status=response.status)
        except Exception as exc:  # best effort: the next keyframe comes with the GOP anyway
            log.info("keyframe request failed", stream=str(self.key), error=str(exc))

    async def _watch_media(self) -> None:
        timeout = self.manager.config.media.no_media_timeout
        loop = self.manager.loop
        since = loop.time()
        while not self._stopping:
            await asyncio.sleep(min(0.5, timeout / 4))
            if self.first_frame_at is None and self.receiver is not None and loop.time() - since > 1.0:
                # Packets but no frame yet: the stream likely began mid-GOP; don't wait for the camera's GOP.
                if self.receiver.stats().packets > 0:
                    self.request_keyframe()
            last = self.last_frame_at or since
            if loop.time() - last > timeout:
                assert self.receiver is not None
                reason = self.receiver.diagnosis(loop.time(), window=timeout)
                what = reason.value if reason is not None else "no frames"
                if reason is not None:
                    metrics.INGEST_NO_MEDIA.labels(reason.value).inc()
                raise StreamError(f"no media for {timeout:g} s: {what}", http_status=504)

    # ------------------------------------------------------------------------------------------ consumers
    def join(self, name: str) -> Subscription:
        self.consumers += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self.state is StreamState.LINGERING:
            self.state = StreamState.PLAYING
        return self.fanout.subscribe(name)

    def leave(self, sub: Subscription) -> None:
        sub.close()
        self.consumers = max(0, self.consumers - 1)
        if self.consumers == 0 and not self._stopping:
            if self.state is StreamState.PLAYING:
                self.state = StreamState.LINGERING
            self._linger = self.manager.loop.call_later(
                self.manager.config.media.linger, lambda: asyncio.ensure_future(self.stop("linger expired")))

    # ------------------------------------------------------------------------------------------ end
    async def _fail(self, exc: StreamError) -> None:
        self.error = exc
        label = _failure_label(exc)
        metrics.STREAM_FAILURES.labels(label).inc()
        if label == "no_media":  # no packets, wrong source/SSRC, undecodable: the channel is not intact
            self.manager.registry.note_stream_result(self.key.device_id, self.key.channel_id, exc.reason)
        log.warning("stream failed", stream=str(self.key), reason=exc.reason, status=exc.status)
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()  # retrieved: consumers that never awaited it must not warn
        await self.stop(exc.reason, failed=True)

    async def stop(self, reason: str, *, failed: bool = False, send_bye: bool = True) -> None:
        if self._stopping:
            return
        self._stopping = True
        mgr = self.manager
        if self._linger is not None:
            self._linger.cancel()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self.state = StreamState.FAILED if failed else StreamState.STOPPED
        if send_bye and self.dialog is not None and self.device.peer is not None:
            server = mgr.server
            try:
                bye = self.dialog.create_request("BYE", mgr.registry.via_toward(self.device))
                # Bounded well inside daemon.graceful_timeout; the transaction keeps retransmitting anyway. A device
                # that has gone offline or unregistered gets its BYE without our waiting for an answer.
                wait = min(64 * mgr.config.sip.t1, 4.0) if self.device.rec.online else 0.2
                await asyncio.wait_for(server.request(bye, self.device.peer), wait)
            except Exception as exc:  # the device may be gone: the session ends anyway
                log.info("stream BYE not answered", stream=str(self.key), error=str(exc))
        if self.dialog is not None:
            self.dialog.terminate()
        if self._ingest is not None:
            await self._ingest.stop()
        if self.transport == "udp-single" and self.ssrc is not None and mgr._single is not None:
            mgr._single.unregister(self.ssrc)
        if self.port is not None and self.transport != "udp-single":
            mgr.ports.release(self.port)
        if self.ssrc is not None:
            mgr.ssrcs.release(self.ssrc)
        self.fanout.close(reason)
        if not self.ready.done():
            self.ready.set_exception(self.error or StreamError(reason))
            self.ready.exception()
        mgr._forget(self)
        log.info("stream stopped", stream=str(self.key), reason=reason,
                 call_id=self.invite.call_id if self.invite else None)


def _answered_transport(answer: sdp.SessionDescription, offered: str) -> str:
    """Our transport as the device's answer sets it (TCP roles: its ``a=setup`` is the opposite of ours)."""
    if answer.transport is sdp.Transport.UDP:
        return "udp"
    if answer.setup is sdp.SetupRole.ACTIVE:
        return "tcp-passive"  # the device connects: we listen
    if answer.setup is sdp.SetupRole.PASSIVE:
        return "tcp-active"  # the device listens: we connect
    return offered if offered.startswith("tcp") else "tcp-passive"


def _failure_label(exc: StreamError) -> str:
    if exc.http_status == 404:
        return "offline_or_refused"
    if exc.http_status == 503:
        return "no_answer"
    if exc.http_status == 504:
        return "no_media"
    return "refused" if exc.status else "other"


class StreamManager:
    """All live stream sessions; the entry point for every consumer (RTSP, WebRTC, cascade)."""

    def __init__(self, config: Config, registry: DeviceRegistry, router: SipRouter) -> None:
        self.config = config
        self.registry = registry
        self.sessions: dict[StreamKey, StreamSession] = {}
        self.by_call_id: dict[str, StreamSession] = {}
        media = config.media
        self.ports = PortPool(media.rtp_port_min + (1 if media.transport == "udp-single" else 0),
                              media.rtp_port_max)
        self.ssrcs = SsrcAllocator(config.sip.domain)
        self._server: SipServer | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._single: SinglePortUdpIngest | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        router.on_method("BYE", self._on_bye)
        router.on_event(self._on_event)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def server(self) -> SipServer:
        if self._server is None:
            raise StreamError("SIP server not running", http_status=503)
        return self._server

    def attach(self, server: SipServer) -> None:
        self._server = server

    def single_port(self) -> SinglePortUdpIngest:
        if self._single is None:
            raise StreamError("single-port RTP receiver not running", http_status=503)
        return self._single

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        metrics.DEVICE_SERIES.streams = self.metric_families
        if self.config.media.transport == "udp-single":
            self._single = SinglePortUdpIngest(self.config.media.rtp_port_min)
            await self._single.start()

    def metric_families(self) -> Iterator[Metric]:
        """Scrape-time series: the bit rate received over every live stream (last metrics period)."""
        total = sum(s.receiver.bitrate for s in self.sessions.values() if s.receiver is not None)
        yield GaugeMetricFamily("gb28181_ingest_bitrate_bits_per_second",
                                "RTP bit rate received from cameras over all live streams (about 1 s average)",
                                value=total)

    async def stop(self) -> None:
        if metrics.DEVICE_SERIES.streams == self.metric_families:
            metrics.DEVICE_SERIES.streams = None
        await asyncio.gather(*(s.stop("gateway stopping") for s in list(self.sessions.values())),
                             return_exceptions=True)
        if self._single is not None:
            await self._single.stop()

    # ------------------------------------------------------------------------------------------ lookups
    def resolve(self, device_id: str | None, channel_id: str) -> tuple[Device, str]:
        """The device and channel for ``device/channel`` or a bare channel ID (where unique)."""
        if device_id:
            dev = self.registry.get(device_id)
            if dev is None:
                raise StreamError(f"unknown device {device_id}", http_status=404)
            if channel_id not in dev.channels and channel_id != device_id:
                raise StreamError(f"unknown channel {device_id}/{channel_id}", http_status=404)
            return dev, channel_id
        owners = [d for d in self.registry.devices.values() if channel_id in d.channels]
        if not owners:
            raise StreamError(f"unknown channel {channel_id}", http_status=404)
        if len(owners) > 1:
            raise StreamError(f"channel {channel_id} exists on {len(owners)} devices: use device/channel",
                              http_status=404)
        return owners[0], channel_id

    # ------------------------------------------------------------------------------------------ consumers
    async def open(self, device_id: str | None, channel_id: str, *, substream: int = 0,
                   consumer: str = "consumer") -> tuple[StreamSession, Subscription]:
        """Join the channel's stream (starting it if needed) and wait for its first frame.

        Raises ``StreamError`` (unknown/offline → http_status 404, no answer → 503, no media → 504).
        The caller must ``session.leave(subscription)`` when done.
        """
        dev, channel = self.resolve(device_id, channel_id)
        if not dev.rec.online or dev.peer is None:
            raise StreamError(f"device {dev.device_id} is offline", http_status=404)
        key = StreamKey(dev.device_id, channel, substream)
        session = self.sessions.get(key)
        if session is None:
            session = StreamSession(self, key, dev)
            self.sessions[key] = session
            session.start()
            metrics.STREAMS_ACTIVE.set(len(self.sessions))
        sub = session.join(consumer)
        try:
            await asyncio.shield(session.ready)
        except BaseException:
            session.leave(sub)
            raise
        return session, sub

    def _forget(self, session: StreamSession) -> None:
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        if session.invite is not None:
            self.by_call_id.pop(session.invite.call_id, None)
        metrics.STREAMS_ACTIVE.set(len(self.sessions))

    # ------------------------------------------------------------------------------------------ SIP
    def _on_bye(self, server: SipServer, ev: RequestReceived) -> None:
        session = self.by_call_id.get(ev.request.call_id)
        if session is None or session.dialog is None or not session.dialog.matches(ev.request):
            raise CallDoesNotExist("Call/Transaction Does Not Exist")
        server.respond(build_response(ev.request, 200))
        log.info("device ended stream (BYE)", stream=str(session.key), call_id=ev.request.call_id)
        asyncio.ensure_future(session.stop("device sent BYE", failed=False, send_bye=False))

    def _on_event(self, server: SipServer, event: SipEvent) -> None:
        # A retransmitted 2xx to our INVITE (our ACK was lost): ACK it again.
        if isinstance(event, ResponseReceived) and event.key is None:
            resp = event.response
            if 200 <= resp.status < 300 and resp.cseq.method == "INVITE":
                session = self.by_call_id.get(resp.call_id)
                if session is not None and session.dialog is not None:
                    session._send_ack(resp)


__all__ = ["StreamError", "StreamKey", "StreamManager", "StreamSession", "StreamState"]
