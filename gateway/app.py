"""The gateway as one object: builds the components, starts them in order and stops them in reverse.

``gateway.main`` owns the process (config file, logging, signals, the event loop); :class:`Gateway` owns what
runs inside it. Every long-lived part (SIP server, device registry, RTP ingest, RTSP, HTTP, simulators) is a
*component* with ``async start()`` and ``async stop()``, listed in :meth:`Gateway._components` in start order.
``start()`` starts them one by one; if one fails, those already started are stopped (reverse order) and the error
propagates. ``stop()`` stops started components in reverse order, logs and survives a failing ``stop()``, and may
be called more than once. The deadline on ``stop()`` (``daemon.graceful_timeout``) is enforced by the caller.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Protocol

import structlog

from . import __version__
from .alarms import AlarmService
from .api import HttpApi
from .config import Config, resolve_state_dir
from .devices import DeviceRegistry
from .rtsp_server import RtspServer
from .sim import SimConfig, Simulator
from .sim.config import channel_id, device_ids
from .sip_router import SipRouter
from .sip_transport import SipServer
from .store import Store
from .streams import StreamManager

__all__ = ["Component", "Gateway"]

log = structlog.get_logger("gateway.app")


class Component(Protocol):
    """A long-lived part of the gateway."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


STORE_FILE = "gateway.sqlite3"
DEMO_MEDIA = (("h264", "g711a", 8000), ("h265", "g711a", 8000), ("h264", "aac", 16000))
"""(video, audio, audio sample rate) of each demo device, in device-ID order; a device's channels all send it."""
DEMO_DEVICES = len(DEMO_MEDIA)
DEMO_CHANNELS = 2


class _StoreComponent:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def start(self) -> None:
        self.store.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        await self.store.open()

    async def stop(self) -> None:
        await self.store.close()


class _Call:
    """A component that only calls ``fn`` at start."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    async def start(self) -> None:
        self.fn()

    async def stop(self) -> None:
        pass


class _DemoDevices:
    """``--demo``: simulated cameras in this process, registering to our own SIP port like real ones, answering
    INVITE with a generated clip (moving pattern, clock, a tone beeping every second). One ``Simulator`` per device
    (each with its own SIP port, as separate cameras have), so that each sends its own media (``DEMO_MEDIA``):
    device 1 H.264 + G.711A, device 2 H.265 + G.711A (H.264, with a warning, if PyAV lacks libx265), device 3
    H.264 + AAC-LC 16 kHz; ``DEMO_CHANNELS`` channels each. Their RTSP URLs, with each one's codecs, are logged at
    start. Their SIP traffic is counted in the gateway's SIP metrics too (they share the process).
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.sims: list[Simulator] = []

    async def start(self) -> None:
        import av  # only the demo needs to know what PyAV can encode

        config = self.gateway.config
        assert self.gateway.sip is not None
        listen = config.sip.listen
        host = "127.0.0.1" if listen in ("0.0.0.0", "::") else listen
        ids = device_ids(SimConfig().first_id, DEMO_DEVICES)
        try:
            for device_id, (video, audio, rate) in zip(ids, DEMO_MEDIA, strict=True):
                if video == "h265" and "libx265" not in av.codecs_available:
                    log.warning("PyAV has no libx265 encoder: the H.265 demo camera sends H.264", device=device_id)
                    video = "h264"
                sim = Simulator(SimConfig(
                    server=(host, self.gateway.sip.port), platform_id=config.sip.platform_id,
                    domain=config.sip.domain, password=config.sip.password, devices=1, first_id=device_id,
                    channels=DEMO_CHANNELS, keepalive_interval=min(60.0, config.devices.keepalive_interval),
                    local_host=host, codec=video, audio=audio, audio_rate=rate,
                ))
                self.sims.append(sim)  # before start(): stop() also closes one that failed half-way
                await sim.start()
        except BaseException:
            await self.stop()
            raise

    def announce(self) -> None:
        """Log every demo channel's RTSP URL (once the RTSP server listens, so the port is the real one)."""
        rtsp = self.gateway.rtsp
        host = "127.0.0.1" if rtsp.config.listen in ("0.0.0.0", "::") else rtsp.config.listen
        cameras = [{"url": f"rtsp://{host}:{rtsp.port}/{d.device_id}/{channel_id(d.device_id, i)}",
                    "video": sim.config.codec, "audio": sim.config.audio}
                   for sim in self.sims for d in sim.devices for i in range(DEMO_CHANNELS)]
        log.info("demo devices started", devices=[d.device_id for sim in self.sims for d in sim.devices],
                 rtsp=cameras)
        log.info("watch a demo camera: ffplay -rtsp_transport tcp " + cameras[0]["url"])

    async def stop(self) -> None:
        sims, self.sims = self.sims, []
        for sim in reversed(sims):
            await sim.stop()


class Gateway:
    """The running gateway: ``await start()``, then ``await stop()`` (under the caller's deadline)."""

    def __init__(self, config: Config, *, demo: bool = False) -> None:
        self.config = config
        self.demo = demo
        self._started: list[tuple[str, Component]] = []
        self._ready = False
        self.router = SipRouter(max_body_size=config.sip.max_message_size)
        self.store = Store(resolve_state_dir(config) / STORE_FILE, alarm_retention=config.devices.alarm_retention)
        self.devices = DeviceRegistry(config, self.router, self.store)
        self.alarms = AlarmService(config, self.router, self.devices, self.store)
        self.streams = StreamManager(config, self.devices, self.router)
        self.rtsp = RtspServer(config.rtsp, self.streams)
        self.http = HttpApi(config.http, self)
        self.sip: SipServer | None = None

    @property
    def ready(self) -> bool:
        """True once every component has started, until ``stop()`` begins (for ``/readyz`` and READY=1)."""
        return self._ready

    def reload(self, config: Config) -> None:
        """Take the reloadable keys of ``config`` (``gateway.config.RELOADABLE``: ``sip.password``,
        ``devices.passwords``, ``devices.allow``, ``devices.alarm_rate``, ``devices.alarm_retention``,
        ``log.level``); every other key keeps its running value.

        Raises ``ConfigError``, changing nothing, if those values do not fit the running configuration. The
        caller (``gateway.main``, on SIGHUP) logs what changed and what needs a restart, and sets the log level.
        In ``--demo`` the simulated cameras keep the password they started with.
        """
        self.config = self.config.with_reloadable(config)
        self.devices.reconfigure(self.config)
        self.alarms.reconfigure(self.config)

    def _components(self) -> list[tuple[str, Component]]:
        """Every component, in start order; they stop in reverse.

        Planned order: SIP server, device registry, stream manager and RTP ingest, RTSP, HTTP API, and in demo
        mode the simulators right after SIP (they register to it; they stop after the streams BYE them).
        """
        self.sip = SipServer(self.config.sip, self.router)
        self.devices.attach(self.sip)
        self.alarms.attach(self.sip)
        self.streams.attach(self.sip)
        # The registry restores its state before the SIP port opens, so no device meets an empty registry.
        components: list[tuple[str, Component]] = [
            ("store", _StoreComponent(self.store)),
            ("devices", self.devices),
            ("alarms", self.alarms),
            ("sip", self.sip),
            # Subscriptions end (Expires: 0) while SIP still runs, and after the demo cameras started.
            ("subscriptions", self.devices.subscriptions),
            # Streams stop before SIP does, so that their BYEs still go out.
            ("streams", self.streams),
            # RTSP stops before the streams do: its viewers leave first.
            ("rtsp", self.rtsp),
            # HTTP last: /readyz answers 200 only once everything else runs; it stops first.
            ("http", self.http),
        ]
        if self.demo:
            # The demo cameras start after SIP and stop after the streams (which BYE them while they still
            # answer); their URLs are logged once RTSP listens.
            demo = _DemoDevices(self)
            components.insert(4, ("demo", demo))
            components.append(("demo-urls", _Call(demo.announce)))
        return components

    async def start(self) -> None:
        """Start every component in order; on failure stop those already started and re-raise."""
        for name, component in self._components():
            log.debug("component starting", component=name)
            try:
                await component.start()
            except BaseException:
                log.error("component failed to start", component=name)
                await self.stop()
                raise
            self._started.append((name, component))
        # The restored registry is long-lived: keep the cyclic GC from rescanning it on every full collection.
        gc.collect()
        gc.freeze()
        self._ready = True
        log.info(
            "gateway started",
            version=__version__,
            demo=self.demo,
            components=[name for name, _ in self._started],
            config=self.config.summary(),
        )

    async def stop(self) -> None:
        """Stop started components in reverse order. A failing ``stop()`` is logged and the rest still stop."""
        self._ready = False
        while self._started:
            name, component = self._started.pop()
            log.debug("component stopping", component=name)
            try:
                await component.stop()
            except Exception:
                log.exception("component failed to stop", component=name)
        log.info("gateway stopped")
