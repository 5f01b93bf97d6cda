"""Small network helpers for the gateway layer."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket


@functools.lru_cache(maxsize=4096)
def local_ip_toward(host: str, listen: str) -> str:
    """Our address as seen by ``host``: ``listen`` when bound to one address, else the route's source address.

    A connected UDP socket asks the kernel for the route without sending anything.
    """
    if not ipaddress.ip_address(listen).is_unspecified:
        return listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((host, 9))
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1" if family == socket.AF_INET else "::1"


def grow_receive_buffer(transport: asyncio.BaseTransport, size: int) -> None:
    """Best effort: a burst (a keyframe, a registration storm) should overflow our counted queues, not the
    kernel's silent one. SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by net.core.rmem_max."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            return
        except OSError:
            continue
