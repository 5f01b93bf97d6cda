"""Request validation for the HTTP handlers: the JSON error type and the checks every route shares.

``gateway.api`` (the application and most routes) and ``gateway.control`` (the device control routes it adds)
both use these; this module imports neither, so each imports it at module top. ``ApiError`` is answered by the
API's error middleware as ``{"error": {"status": ..., "reason": ...}}`` (``error_response``). Reasons are exact
and name the field, so tests and clients can match them.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

__all__ = ["ApiError", "check_id", "error_response", "fields", "json_object"]

_ID = re.compile(r"[0-9]{20}")


class ApiError(Exception):
    """Answer the request with ``status`` and a JSON ``reason``."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def error_response(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON error answer: ``{"error": {"status": status, "reason": reason}}``."""
    return web.json_response({"error": {"status": status, "reason": reason}}, status=status, headers=headers)


def check_id(value: str, what: str) -> str:
    """``value`` if it is a GB/T 28181 ID (20 digits), else 400 naming ``what``."""
    if not _ID.fullmatch(value):
        raise ApiError(400, f"{what} must be 20 digits, not {value[:40]!r}")
    return value


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (``{}`` without a body); 400 if it is not JSON or not an object.
    A body beyond the application's ``client_max_size`` raises aiohttp's 413 unchanged."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise
    except ValueError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    return body


def fields(body: dict[str, Any], spec: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """``body`` checked against ``spec`` (field → type): unknown fields and wrong types are 400 naming them."""
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}: expected {', '.join(sorted(spec))}")
    for name, value in body.items():
        expected = spec[name]
        # bool is an int in Python; JSON true is never an integer here.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            raise ApiError(400, f"field {name!r} must be {names}, not {type(value).__name__}")
    return body
