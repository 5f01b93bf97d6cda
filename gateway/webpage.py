"""The web page: a plain HTML/JS player served by the HTTP server at ``/`` with its assets under ``/static/``.

Theory of operation
-------------------
``gateway/web/`` holds the whole page (``index.html``, ``app.js``, ``style.css``: no build step, nothing from
another origin). :func:`add_routes` reads those files once (``importlib.resources``, so an installed wheel serves
the same files as a checkout) and answers ``GET /`` with ``index.html`` and ``GET /static/<name>`` with the file
of that name: only the files read at start, never a path from the request, so nothing else on disk can be
reached. An unknown name is a JSON ``404`` like every other error of the HTTP server.

The page lists devices and their channels (``GET /api/v1/devices``, ``GET /api/v1/channels?kind=channel``) and
plays a channel over WebRTC with WHEP (``POST /whep/<device_id>/<channel_id>[?stream=sub]`` with the SDP offer;
``DELETE`` of the session's ``Location`` when stopped or when the page goes away). It shows the live state, the
resolution and the codec (from ``getStats()``), and every error with the gateway's JSON reason. It also shows each
channel's last position (``position`` of the channel JSON), a PTZ pad for the channel being played
(``POST /api/v1/channels/<device_id>/<channel_id>/ptz``: ``move`` while a button is held, ``stop`` on release,
``preset_call``) and an alarm panel: ``GET /api/v1/alarms``, then ``GET /api/v1/alarms/stream`` read with
``fetch()`` (an ``EventSource`` cannot send the bearer token) and parsed in the page, reconnecting with
``Last-Event-ID`` after a drop.

Authentication: the page itself (``/`` and ``/static/*``) is public, the data is not. A browser cannot send a
bearer token on a top-level navigation, and the shell holds no data and no secret: it is the same for everyone.
With ``http.token`` set every request the page makes (``/api/v1/*``, ``/whep/*``) carries
``Authorization: Bearer <token>``; when the gateway answers ``401`` the page asks for the token, keeps it in the
tab's ``sessionStorage`` (gone when the tab closes) and retries. ``http://host:8080/#token=...`` hands the token
over in the URL fragment, which browsers never send to the server; the page stores it and removes it from the
address bar. Never ``?token=``: query strings end up in logs and ``Referer`` headers.

Responses carry a strict ``Content-Security-Policy`` (scripts, styles and connections to this origin only) and
``Cache-Control: no-cache`` with an ``ETag``, so a browser revalidates (``304``) and never runs a stale script
after an upgrade.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

__all__ = ["STATIC_PREFIX", "add_routes", "is_public"]

STATIC_PREFIX = "/static/"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                               " connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'self';"
                               " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def is_public(path: str) -> bool:
    """Whether ``path`` is part of the page shell, served without the bearer token (see the module docstring)."""
    return path == "/" or path.startswith(STATIC_PREFIX)


def _load() -> dict[str, _Asset]:
    assets: dict[str, _Asset] = {}
    for entry in resources.files(__package__ or "gateway").joinpath("web").iterdir():
        name = entry.name
        suffix = name[name.rfind("."):] if "." in name else ""
        if not entry.is_file() or not _NAME.fullmatch(name) or suffix not in _CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        assets[name] = _Asset(body, _CONTENT_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    if "index.html" not in assets:
        raise RuntimeError("gateway/web/index.html is missing from the installed package")
    return assets


def _respond(request: web.Request, asset: _Asset) -> web.Response:
    headers = {**_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


def add_routes(app: web.Application) -> None:
    """Serve the page: ``GET /`` (``index.html``) and ``GET /static/{name}`` (the other files of ``web/``)."""
    assets = _load()

    async def index(request: web.Request) -> web.Response:
        return _respond(request, assets["index.html"])

    async def static(request: web.Request) -> web.Response:
        asset = assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound(reason="no such file in /static/")
        return _respond(request, asset)

    app.router.add_get("/", index)
    app.router.add_get(STATIC_PREFIX + "{name}", static)
