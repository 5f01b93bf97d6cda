"""``gb28181-sim``: simulated GB/T 28181 cameras and NVRs registering to a platform (ours or anyone's).

Lifecycle: parse the flags into a ``SimConfig`` (a bad value prints the problem and exits 2), configure logging
like the gateway, run on uvloop: prepare the media (encode the clip once, or index the ``--replay`` capture; a
capture that cannot be read exits 2, a missing encoder 1), start the ``Simulator`` (devices register at
``--rate`` per second), log a status line every ``--status-interval`` seconds, and on SIGINT/SIGTERM (or after
``--duration``) unregister every device and exit 0. A second signal exits at once with 130.

Exit codes: 0 clean stop, 1 the SIP port could not be opened, a media encoder is missing (libx265 is optional in
PyAV builds) or every device was refused (403: wrong password, not allowed), 2 bad command line (an unreadable
``--replay`` file included), 130 forced by a second signal.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
from collections.abc import Sequence

import structlog
import uvloop

from .. import __version__
from ..logs import configure_logging
from .config import SimConfig
from .device import Simulator
from .media import make_source
from .source import load_capture

__all__ = ["main", "parse_server"]

log = structlog.get_logger("gateway.sim")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_FORCED = 130

_DEFAULTS = SimConfig()


def parse_server(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``HOST`` (port 5060) → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise argparse.ArgumentTypeError(f"bad server address {text!r}: expected [IPv6]:PORT")
        port_text = rest[1:] if rest else "5060"
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, "5060"  # a bare host name, IPv4 or IPv6 address
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise argparse.ArgumentTypeError(f"bad server address {text!r}: expected HOST:PORT")
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    d = _DEFAULTS
    parser = argparse.ArgumentParser(
        prog="gb28181-sim",
        description="Simulated GB/T 28181 cameras/NVRs: REGISTER with digest, keepalive, and answers to "
        "DeviceInfo, DeviceStatus and Catalog queries (multi-part catalogs, GB2312 Chinese names). "
        "All devices of one process share one local SIP port (UDP and TCP).",
        epilog="Media: INVITEs to a channel are answered 200 OK and PS over RTP is streamed as the offer asks "
        "(UDP, TCP with a=setup:passive (we connect) or active (we listen); RFC 4571 framing on TCP), with "
        "the offer's SSRC, until BYE. The video is a generated clip (moving pattern and a clock, --codec, "
        "--width/--height/--fps, keyframe every second) with audio (--audio: a tone with a beep every second "
        "in G.711A, G.711U or AAC-LC in ADTS, or none), encoded once per process and looped; or --replay loops a *.lenpfx.rtp capture. "
        "Subscriptions: SUBSCRIBE for Catalog, Alarm and MobilePosition is accepted (others 489); positions are "
        "reported every <Interval> seconds of the subscription (--position-form), alarms on --alarm-interval. "
        "PTZ and device control are answered; playback control (INFO) comes in a later release. "
        "Exit codes: 0 clean stop, 1 start failed (SIP port, media encoder) or every device refused, "
        "2 bad arguments, 130 forced by a second signal.",
    )
    parser.add_argument("--server", metavar="HOST:PORT", type=parse_server, default=d.server,
                        help="the platform's SIP address (default 127.0.0.1:5060)")
    parser.add_argument("--devices", metavar="N", type=int, default=d.devices, help="number of devices (default 1)")
    parser.add_argument("--channels", metavar="M", type=int, default=d.channels,
                        help=f"video channels per device (default {d.channels})")
    parser.add_argument("--codec", choices=("h264", "h265"), default=d.codec,
                        help=f"video codec of the generated streams (default {d.codec})")
    parser.add_argument("--width", metavar="W", type=int, default=d.width,
                        help=f"width of the generated video, even, up to 640 (default {d.width})")
    parser.add_argument("--height", metavar="H", type=int, default=d.height,
                        help=f"height of the generated video, even, up to 360 (default {d.height})")
    parser.add_argument("--fps", metavar="F", type=int, default=d.fps,
                        help=f"frame rate of the generated video (default {d.fps})")
    parser.add_argument("--audio", choices=("g711a", "g711u", "aac", "none"), default=d.audio,
                        help=f"audio codec of the generated streams (default {d.audio})")
    parser.add_argument("--audio-rate", metavar="HZ", type=int, choices=(8000, 16000), default=d.audio_rate,
                        help=f"audio sample rate: 8000 (G.711, AAC) or 16000 (AAC only) (default {d.audio_rate})")
    parser.add_argument("--replay", metavar="FILE.lenpfx.rtp", default=None,
                        help="stream this capture (2-byte length-prefixed RTP packets, looped) instead of the "
                        "generated clip")
    parser.add_argument("--replay-speed", metavar="X", type=float, default=d.replay_speed,
                        help="replay pace relative to the capture's timestamps (default 1)")
    parser.add_argument("--transport", choices=("udp", "tcp"), default=d.transport,
                        help="SIP transport toward the platform (default udp)")
    parser.add_argument("--password", default=d.password, help="digest password (default: the usual 12345678)")
    parser.add_argument("--platform-id", default=d.platform_id, help=f"platform ID (default {d.platform_id})")
    parser.add_argument("--domain", default=d.domain, help=f"platform SIP domain / realm (default {d.domain})")
    parser.add_argument("--first-id", default=d.first_id,
                        help=f"ID of the first device; the others increment its serial (default {d.first_id})")
    parser.add_argument("--keepalive", metavar="S", type=float, default=d.keepalive_interval,
                        help=f"seconds between keepalives (default {d.keepalive_interval:g})")
    parser.add_argument("--expires", metavar="S", type=int, default=d.expires,
                        help=f"registration Expires, refreshed at 2/3 (default {d.expires})")
    parser.add_argument("--catalog-per-message", metavar="K", type=int, default=d.catalog_per_message,
                        help=f"catalog items per Response MESSAGE (default {d.catalog_per_message})")
    parser.add_argument("--catalog-groups", action="store_true",
                        help="NVR catalog with a business group (215) and virtual organisations (216)")
    parser.add_argument("--position-form", choices=("single", "list"), default=d.position_form,
                        help="mobile position NOTIFYs under a MobilePosition subscription: one per channel "
                        f"(single, 2016) or one listing all channels (list, 2022) (default {d.position_form})")
    parser.add_argument("--alarm-interval", metavar="SECONDS", type=float, default=d.alarm_interval,
                        help="each device raises a video alarm (priority cycling 1-4) every SECONDS, as a NOTIFY "
                        "in its Alarm subscription when the platform subscribed, else a MESSAGE (default 0: off)")
    parser.add_argument("--rate", metavar="R", type=float, default=d.register_rate,
                        help=f"devices started (registering) per second (default {d.register_rate:g})")
    parser.add_argument("--local-host", metavar="IP", default=None,
                        help="local address to bind (default 127.0.0.1 for a loopback server, else 0.0.0.0)")
    parser.add_argument("--local-port", metavar="P", type=int, default=d.local_port,
                        help="local SIP port, UDP and TCP (default 0: any free port)")
    parser.add_argument("--duration", metavar="S", type=float, default=None,
                        help="stop (unregister and exit) after S seconds (default: run until SIGINT/SIGTERM)")
    parser.add_argument("--status-interval", metavar="S", type=float, default=10.0,
                        help="seconds between status log lines (default 10; 0 disables)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The ``SimConfig`` the flags describe; raises ``ValueError`` naming every bad value."""
    host = args.local_host
    if host is None:
        host = "127.0.0.1" if _is_loopback(args.server[0]) else "0.0.0.0"
    return SimConfig(
        server=args.server, platform_id=args.platform_id, domain=args.domain, password=args.password,
        transport=args.transport, devices=args.devices, channels=args.channels, first_id=args.first_id,
        catalog_per_message=args.catalog_per_message, catalog_groups=args.catalog_groups,
        keepalive_interval=args.keepalive, expires=args.expires, register_rate=args.rate, codec=args.codec,
        local_host=host, local_port=args.local_port,
        position_form=args.position_form, alarm_interval=args.alarm_interval,  # events
        width=args.width, height=args.height, fps=args.fps, audio=args.audio,  # media
        audio_rate=args.audio_rate, replay=args.replay, replay_speed=args.replay_speed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator; returns the process exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed what it had to
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        config = config_from_args(args)
        if args.duration is not None and not args.duration > 0:
            raise ValueError(f"duration = {args.duration!r}: expected a positive number of seconds")
        if args.status_interval < 0:
            raise ValueError(f"status-interval = {args.status_interval!r}: expected 0 or more seconds")
        if config.replay is not None:
            try:
                load_capture(config.replay)
            except OSError as exc:
                raise ValueError(f"replay = {config.replay!r}: {exc.strerror or exc}") from None
            except ValueError as exc:
                raise ValueError(f"replay: {exc}") from None
    except ValueError as exc:
        print(f"gb28181-sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_level, args.log_format)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_run(config, args.duration, args.status_interval))
    except KeyboardInterrupt:  # SIGINT before our handler was installed
        return EXIT_FORCED


async def _run(config: SimConfig, duration: float | None, status_interval: float) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.critical("second signal, exiting now", signal=sig.name, exit_code=EXIT_FORCED)
            sys.stdout.flush()
            os._exit(EXIT_FORCED)
        log.info("shutdown requested", signal=sig.name)
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        source = await make_source(config)  # encoded (or indexed) once, before any INVITE can arrive
    except RuntimeError as exc:
        log.error("media unavailable", error=str(exc))
        for sig in signals:
            loop.remove_signal_handler(sig)
        return EXIT_FAILURE
    log.info("media ready", source=source.description)
    sim = Simulator(config)
    try:
        try:
            await sim.start()
        except OSError as exc:
            log.error("simulator failed to start", error=str(exc), local_host=config.local_host,
                      local_port=config.local_port)
            await sim.stop(unregister=False)
            return EXIT_FAILURE
        if duration is not None:
            loop.call_later(duration, stop.set)
        status = asyncio.create_task(_status(sim, status_interval)) if status_interval > 0 else None
        await stop.wait()
        if status is not None:
            status.cancel()
        stats = sim.stats()
        await sim.stop()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    if stats["failed"] == stats["devices"]:
        log.error("every device was refused", exit_code=EXIT_FAILURE)
        return EXIT_FAILURE
    log.info("exiting", exit_code=EXIT_OK)
    return EXIT_OK


async def _status(sim: Simulator, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        log.info("simulator status", **sim.stats())


if __name__ == "__main__":
    sys.exit(main())
