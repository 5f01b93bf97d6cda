"""systemd's notify protocol (sd_notify(3)): READY, RELOADING, STOPPING, STATUS and WATCHDOG keepalives.

A no-op when ``NOTIFY_SOCKET`` is unset (not started by systemd with ``Type=notify``). What ``gateway.main``
sends, in order::

    STATUS=starting
    READY=1 + STATUS=<n> devices online of <m> registered, <k> streams
    WATCHDOG=1 every WatchdogSec/2, STATUS=... every STATUS_INTERVAL seconds       (Notifier.run)
    RELOADING=1 + MONOTONIC_USEC=<CLOCK_MONOTONIC µs> ... READY=1 + STATUS=...    (SIGHUP, around a reload)
    STOPPING=1 + STATUS=stopping                                                  (SIGTERM/SIGINT)

``RELOADING=1`` carries ``MONOTONIC_USEC=`` as systemd's ``Type=notify-reload`` protocol (systemd 253+)
requires; older systemd (``Type=notify`` with ``ExecReload=``) shows the unit as reloading until ``READY=1``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

__all__ = ["STATUS_INTERVAL", "Notifier"]

log = structlog.get_logger("gateway.systemd")

STATUS_INTERVAL = 10.0
"""Seconds between periodic ``STATUS=`` lines (``systemctl status`` shows the last one)."""


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        if path:
            # An abstract socket is written with a leading '@'.
            self._addr = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2  # ping at half the deadline

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def notify(self, message: str) -> None:
        if self._addr is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._addr)
        except OSError as exc:
            log.warning("sd_notify failed", error=str(exc))

    def reloading(self) -> None:
        """``RELOADING=1`` with the ``MONOTONIC_USEC=`` systemd's notify-reload protocol asks for."""
        # time.monotonic_ns() is CLOCK_MONOTONIC on Linux, the clock systemd compares with.
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}\nSTATUS=reloading configuration")

    async def run(self, status: Callable[[], str], status_interval: float = STATUS_INTERVAL) -> None:
        """While the event loop is alive and responsive: ``WATCHDOG=1`` at half of ``WatchdogSec`` (when systemd
        asked for a watchdog) and ``STATUS=<status()>`` every ``status_interval`` seconds."""
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        period = status_interval if self.watchdog_interval is None else min(status_interval, self.watchdog_interval)
        next_status = loop.time() + status_interval
        while True:
            lines = ["WATCHDOG=1"] if self.watchdog_interval is not None else []
            if loop.time() >= next_status - period / 2:  # timers may fire a little early
                next_status = loop.time() + status_interval
                try:
                    lines.append(f"STATUS={status()}")
                except Exception:  # a bug in status() must not stop the watchdog (systemd would kill us)
                    log.exception("status line failed")
            if lines:
                self.notify("\n".join(lines))
            await asyncio.sleep(period)
