"""``gb28181-gateway``: the daemon's entry point (config, logging, state directory, uvloop, signals).

Lifecycle (hypercorn ``worker_serve``, uvicorn ``Server.shutdown``):

1. Load and validate the configuration (the file, or the defaults, then the ``GB28181_*`` environment
   overrides); an error prints every problem to stderr and exits 2 (no traceback). ``--check-config`` stops
   here: ``configuration OK: <source>`` (``<file> + environment GB28181_...`` when variables apply) and exit 0.
2. Configure logging, resolve and create the state directory (mode 0750), log it.
3. On a uvloop loop: install SIGTERM/SIGINT handlers that set one ``asyncio.Event`` and a SIGHUP handler, start
   the :class:`Gateway`, tell systemd ``READY=1`` (``gateway.sdnotify``: status lines, watchdog).
4. SIGHUP reloads: the same file and environment are read again. Invalid: an error naming the keys, and the
   running configuration stays. Valid: the keys in ``config.RELOADABLE`` (``sip.password``,
   ``devices.passwords``, ``devices.allow``, ``devices.alarm_rate``, ``devices.alarm_retention``, ``log.level``)
   are applied (``Gateway.reload``), other changed keys are named in a warning (they need a restart), and one
   line lists what changed (never the values: some are secrets). systemd hears ``RELOADING=1`` before and
   ``READY=1`` after. A SIGHUP during startup is applied once the gateway has started; during shutdown it is
   ignored.
5. On the first SIGTERM/SIGINT, ``STOPPING=1``, then ``Gateway.stop()`` runs under ``daemon.graceful_timeout``.
   Clean stop: exit 0. Deadline passed: cancel the tasks left, log them, exit 1. A second signal during shutdown
   exits at once with 130.

Exit codes: 0 clean, 1 runtime failure (start failed, shutdown overran, state directory unusable), 2 bad
configuration or command line, 130 forced by a second signal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
import uvloop

from . import __version__
from .app import Gateway
from .config import (
    RELOADABLE,
    Config,
    ConfigError,
    describe_source,
    env_names,
    load_config,
    resolve_state_dir,
)
from .logs import LEVELS, configure_logging, set_level
from .sdnotify import Notifier

__all__ = ["main"]

log = structlog.get_logger("gateway.main")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_FORCED = 130

_CANCEL_GRACE = 1.0
"""Seconds the tasks left after an overrun shutdown get to finish cancelling before the process exits anyway."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gb28181-gateway",
        description="GB/T 28181 media gateway: SIP platform for cameras and NVRs, RTSP/WebRTC egress, cascade.",
        epilog="Environment: GB28181_<TABLE>_<KEY> overrides a configuration key (GB28181_SIP_PORT=5070 sets"
        " sip.port). Signals: SIGHUP reloads sip.password, devices.passwords, devices.allow,"
        " devices.alarm_rate, devices.alarm_retention and log.level;"
        " SIGTERM or SIGINT stops gracefully.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="TOML configuration file (default: built-in defaults, the same as conf/gateway.toml)",
    )
    parser.add_argument("--demo", action="store_true", help="add in-process simulated cameras")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration, print the result and exit"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon; returns the process exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed what it had to
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG

    if not args.check_config:
        # SIGHUP's default action kills; until our handler is installed, a reload has nothing to do: the
        # configuration is read below. (The handler replaces this; see _serve.)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    source = describe_source(args.config)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"gb28181-gateway: invalid configuration ({source}):", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"configuration OK: {source}")
        return EXIT_OK

    configure_logging(config.log.level, config.log.format)
    log.info("gateway starting", version=__version__, config_source=str(args.config or "built-in defaults"),
             environment=env_names(), demo=args.demo, pid=os.getpid())
    state_dir = resolve_state_dir(config).absolute()
    try:
        state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        log.error("cannot create state directory", path=str(state_dir), error=str(exc))
        return EXIT_FAILURE
    log.info("state directory", path=str(state_dir))

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_serve(config, demo=args.demo, path=args.config))
    except KeyboardInterrupt:  # SIGINT before our handler was installed
        log.warning("interrupted before startup completed", exit_code=EXIT_FORCED)
        return EXIT_FORCED


async def _serve(config: Config, *, demo: bool, path: Path | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    notifier = Notifier()
    notifier.notify("STATUS=starting")
    gateway: Gateway | None = None
    reload_pending = False

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.critical("second signal during shutdown, exiting now", signal=sig.name, exit_code=EXIT_FORCED)
            _flush()
            os._exit(EXIT_FORCED)
        log.info("shutdown requested", signal=sig.name)
        stop.set()

    def on_hup() -> None:
        nonlocal reload_pending
        if stop.is_set():
            log.info("reload ignored: shutting down", signal="SIGHUP")
        elif gateway is None or not gateway.ready:
            log.info("reload deferred until the gateway has started", signal="SIGHUP")
            reload_pending = True
        else:
            _reload(gateway, path, notifier)

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        gateway = gw = Gateway(config, demo=demo)
        try:
            await gw.start()
        except Exception:
            log.exception("gateway failed to start")
            return EXIT_FAILURE
        notifier.notify(f"READY=1\nSTATUS={_status(gw)}")
        keeper = asyncio.create_task(notifier.run(lambda: _status(gw)), name="sd_notify")
        if reload_pending and not stop.is_set():
            _reload(gw, path, notifier)
        await stop.wait()
        notifier.notify("STOPPING=1\nSTATUS=stopping")
        keeper.cancel()
        return await _shutdown(gw, config.daemon.graceful_timeout)
    finally:
        for sig in (*signals, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _status(gateway: Gateway) -> str:
    """The ``STATUS=`` line systemd shows: devices online, registered, streams (all cheap to read)."""
    registered, online = gateway.devices.counts
    streams = len(gateway.streams.sessions)
    return f"{online} devices online of {registered} registered, {streams} streams"


_ERROR_KEY = re.compile(r"([a-z]+\.[a-z0-9_]+|GB28181_[A-Z0-9_]+)[ =:]")
"""The key (or the unknown ``GB28181_*`` variable) a configuration error starts with."""


def _reload(gateway: Gateway, path: Path | None, notifier: Notifier) -> bool:
    """SIGHUP: read the configuration again and apply what can change while running (see the module docstring).

    Returns whether it was applied. Logs values never, only key names: some keys are secrets.
    """
    notifier.reloading()
    source = describe_source(path)
    try:
        try:
            new = load_config(path)
            old = gateway.config
            changed = old.changed_keys(new)
            gateway.reload(new)
        except ConfigError as exc:
            keys = sorted({m[1] for error in exc.errors if (m := _ERROR_KEY.match(error))})
            log.error("reload failed: invalid configuration, still running with the previous one",
                      config_source=source, keys=keys, errors=list(exc.errors))
            return False
        applied = [key for key in changed if key in RELOADABLE]
        restart = [key for key in changed if key not in RELOADABLE]
        # The reload line is written at the more verbose of the two levels, then the new level applies.
        set_level(min(old.log.level, new.log.level, key=LEVELS.__getitem__))
        if restart:
            log.warning("configuration changes need a restart to apply", keys=restart, config_source=source)
        log.info("configuration reloaded", config_source=source, changed=applied, restart_needed=restart)
        set_level(new.log.level)
        return True
    finally:
        notifier.notify(f"READY=1\nSTATUS={_status(gateway)}")


async def _shutdown(gateway: Gateway, timeout: float) -> int:
    # asyncio.wait rather than wait_for: on timeout wait_for waits for the cancelled stop() to finish, which
    # never happens if something in it swallows CancelledError; here the cancel grace below is bounded too.
    stopping = asyncio.create_task(gateway.stop(), name="gateway.stop")
    done, _ = await asyncio.wait({stopping}, timeout=timeout)
    if done:
        if stopping.exception() is not None:
            log.error("gateway stop failed", exc_info=stopping.exception(), exit_code=EXIT_FAILURE)
            return EXIT_FAILURE
        log.info("exiting", exit_code=EXIT_OK)
        return EXIT_OK

    current = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    log.error(
        "graceful shutdown timed out, cancelling what is left",
        graceful_timeout=timeout,
        tasks=sorted(task.get_name() for task in left),
    )
    for task in left:
        task.cancel()
    _, pending = await asyncio.wait(left, timeout=_CANCEL_GRACE)
    if pending:
        log.critical(
            "tasks ignored cancellation, exiting anyway",
            tasks=sorted(task.get_name() for task in pending),
            exit_code=EXIT_FAILURE,
        )
        _flush()
        os._exit(EXIT_FAILURE)  # asyncio.Runner.close() would wait for them forever
    log.info("exiting", exit_code=EXIT_FAILURE)
    return EXIT_FAILURE


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    sys.exit(main())
