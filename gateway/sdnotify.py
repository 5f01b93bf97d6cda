"""systemd's notify protocol (sd_notify(3)): READY, STOPPING, STATUS and WATCHDOG keepalives.

A no-op when ``NOTIFY_SOCKET`` is unset (not started by systemd with ``Type=notify``).
"""

from __future__ import annotations

import asyncio
import os
import socket

import structlog

log = structlog.get_logger("gateway.systemd")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
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

    async def watchdog(self) -> None:
        """Send WATCHDOG=1 at half of ``WatchdogSec`` while the event loop is alive and responsive."""
        if self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)
