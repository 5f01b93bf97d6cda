"""Small network helpers for the gateway layer."""

from __future__ import annotations

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
