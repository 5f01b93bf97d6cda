"""The HTTP server end to end: REST API, /metrics, probes and auth through a real socket, against a gateway with
simulated devices."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gw_util import running_gateway
from test_streams import config, started, wait_until

from gateway.config import ConfigError, HttpConfig

pytestmark = pytest.mark.e2e

TOKEN = "t0ken-for-the-api-tests"
METRICS_TOKEN = "another-token-for-metrics"


class Http:
    """A thin client: ``await http.get(path)`` → (status, JSON or text, headers)."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session = aiohttp.ClientSession()

    async def request(self, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        async with self.session.request(method, self.base + path, json=json, data=data,
                                        headers={**self.headers, **(headers or {})},
                                        timeout=aiohttp.ClientTimeout(total=30)) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json(), resp.headers
            return resp.status, await resp.text(), resp.headers

    async def get(self, path: str, **kw: Any) -> tuple[int, Any, Any]:
        return await self.request("GET", path, **kw)

    async def close(self) -> None:
        await self.session.close()


async def scrape_until(http: Http, name: str, value: float, timeout: float = 5.0) -> str:
    """Scrape /metrics until ``name`` shows ``value`` (registry gauges are recomputed once a watch period)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, text, _ = await http.get("/metrics")
        assert status == 200
        if metric(text, name) == value:
            return str(text)
        assert loop.time() < deadline, f"{name} never became {value}: {metric(text, name)}"
        await asyncio.sleep(0.1)


def metric(text: str, name: str, labels: str = "") -> float | None:
    """The value of ``name{labels}`` in a Prometheus exposition (None if absent)."""
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(?:\{\})?") + r" (\S+)$"
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else None


async def test_probes_openapi_and_json_errors(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        http = Http(gw.http.port)
        try:
            assert (await http.get("/healthz"))[:2] == (200, {"status": "ok", "version": gw_version()})
            assert (await http.get("/readyz"))[:2] == (200, {"ready": True})
            status, doc, _ = await http.get("/openapi.json")
            assert status == 200 and doc["openapi"].startswith("3.")
            # Every route is documented, every documented path is routed.
            routed = {re.sub(r"\{[^}]+\}", "{}", r.resource.canonical)  # type: ignore[union-attr]
                      for r in gw.http.app.router.routes() if r.method != "HEAD"}
            documented = {re.sub(r"\{[^}]+\}", "{}", p) for p in doc["paths"]}
            assert routed == documented
            status, body, _ = await http.get("/api/v1/nope")
            assert status == 404 and body["error"]["status"] == 404
            status, body, headers = await http.request("PATCH", "/api/v1/devices")
            assert status == 405 and "GET" in headers.get("Allow", "")
            status, body, _ = await http.get("/api/v1/devices/123")
            assert status == 400 and "20 digits" in body["error"]["reason"]
            status, body, _ = await http.get("/api/v1/devices/34020000001320000099")
            assert status == 404 and "unknown device" in body["error"]["reason"]
            status, body, _ = await http.get("/api/v1/devices?limit=0")
            assert status == 400
        finally:
            await http.close()
        gw._ready = False  # as while stopping
        http = Http(gw.http.port)
        try:
            assert (await http.get("/readyz"))[0] == 503
        finally:
            await http.close()


def gw_version() -> str:
    from gateway import __version__
    return __version__


async def test_devices_channels_queries_and_catalog(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw, channels=3)
        http = Http(gw.http.port)
        try:
            dev_id = sim.devices[0].device_id
            status, body, _ = await http.get("/api/v1/devices")
            assert status == 200 and body["total"] == 1
            (dev,) = body["devices"]
            assert dev["device_id"] == dev_id and dev["online"] and dev["registered"]
            assert dev["channels"] == 3 and dev["catalog_complete"] and "password" not in dev
            assert (await http.get("/api/v1/devices?online=false"))[1]["total"] == 0
            status, body, _ = await http.get(f"/api/v1/devices/{dev_id}/channels")
            assert status == 200 and body["total"] == 3
            assert all(c["online"] and c["intact"] for c in body["channels"])
            status, body, _ = await http.get(f"/api/v1/channels?device_id={dev_id}&kind=channel&limit=2")
            assert (status, body["total"], len(body["channels"])) == (200, 3, 2)
            assert (await http.get("/api/v1/channels?kind=nope"))[0] == 400
            status, body, _ = await http.get(f"/api/v1/devices/{dev_id}/info")
            assert status == 200 and body["cmd_type"] == "DeviceInfo" and body["fields"].get("Manufacturer")
            status, body, _ = await http.get(f"/api/v1/devices/{dev_id}/status")
            assert status == 200 and body["fields"].get("Online") in ("ONLINE", "OFFLINE")
            status, body, _ = await http.request("POST", f"/api/v1/devices/{dev_id}/catalog")
            assert status == 200 and body["items"] == 3 and body["complete"] is True
            # Offline: queries answer 409 with the reason.
            await sim.devices[0].stop(unregister=True)
            await wait_until(lambda: not gw.devices.get(dev_id).rec.online, 5)  # type: ignore[union-attr]
            status, body, _ = await http.get(f"/api/v1/devices/{dev_id}/info")
            assert status == 409 and "offline" in body["error"]["reason"]
        finally:
            await http.close()
            await sim.stop()


async def test_provisioned_device_password_disable_and_delete(tmp_path: Path) -> None:
    from gateway.sim import SimConfig, Simulator

    async with running_gateway(config(tmp_path)) as gw:
        http = Http(gw.http.port)
        dev_id = "34020000001320000042"
        try:
            # Bad input first.
            for body, reason in (([1], "JSON object"), ({"pasword": "x"}, "unknown field"),
                                 ({"enabled": "yes"}, "must be bool"), ({"password": "a\r\nb"}, "line breaks")):
                status, answer, _ = await http.request("PUT", f"/api/v1/devices/{dev_id}", json=body)
                assert status == 400 and reason in answer["error"]["reason"], answer
            status, answer, _ = await http.request("PUT", f"/api/v1/devices/{dev_id}", data=b"{not json",
                                                   headers={"Content-Type": "application/json"})
            assert status == 400 and "not valid JSON" in answer["error"]["reason"]
            status, answer, _ = await http.request("PUT", f"/api/v1/devices/{dev_id}",
                                                   json={"name": "x" * (2 * 1024 * 1024)})
            assert status == 413 and "max_body_size" in answer["error"]["reason"]
            status, answer, _ = await http.request("PUT", f"/api/v1/devices/{dev_id}",
                                                   json={"password": "own-Secret-9", "name": "gate camera"})
            assert status == 201 and answer["own_password"] is True and answer["provisioned"] is True
            assert "own-Secret-9" not in str(answer)
            assert (await http.request("PUT", f"/api/v1/devices/{dev_id}", json={"name": "gate"}))[0] == 200
            # The configured password no longer works for it; its own does.
            base = {"server": ("127.0.0.1", gw.sip.port), "devices": 1, "channels": 1, "first_id": dev_id,
                    "keepalive_interval": 1, "t1": 0.1}
            wrong = Simulator(SimConfig(**base))  # type: ignore[arg-type]
            await wrong.start()
            assert not await wrong.devices[0].wait_registered(1.5)
            await wrong.stop()
            right = Simulator(SimConfig(**base, password="own-Secret-9"))  # type: ignore[arg-type]
            await right.start()
            assert await right.devices[0].wait_registered(5)
            await wait_until(lambda: gw.devices.get(dev_id).rec.online, 5)  # type: ignore[union-attr]
            # Disabled: the registration is dropped and new REGISTERs are refused.
            status, answer, _ = await http.request("PUT", f"/api/v1/devices/{dev_id}", json={"enabled": False})
            assert status == 200 and answer["enabled"] is False and answer["online"] is False
            right.devices[0].reregister()
            await asyncio.sleep(1.0)
            assert not gw.devices.get(dev_id).rec.online  # type: ignore[union-attr]
            await right.stop()
            # Survives in SQLite: the row carries the provisioning.
            await gw.store.flush()
            import sqlite3
            with sqlite3.connect(gw.store.path) as db:
                row = db.execute("SELECT provisioned, enabled, password, name FROM devices WHERE device_id = ?",
                                 (dev_id,)).fetchone()
            assert row == (1, 0, "own-Secret-9", "gate")
            assert (await http.request("DELETE", f"/api/v1/devices/{dev_id}"))[0] == 204
            assert (await http.get(f"/api/v1/devices/{dev_id}"))[0] == 404
            assert (await http.request("DELETE", f"/api/v1/devices/{dev_id}"))[0] == 404
        finally:
            await http.close()


async def test_streams_start_list_stop(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw)
        http = Http(gw.http.port)
        try:
            dev_id = sim.devices[0].device_id
            channel = next(iter(gw.devices.get(dev_id).channels))  # type: ignore[union-attr]
            for body, code in (({"device_id": dev_id}, 400), ({"channel_id": "1"}, 400),
                               ({"channel_id": channel, "stream": "third"}, 400),
                               ({"device_id": dev_id, "channel_id": "34020000001310009999"}, 404)):
                assert (await http.request("POST", "/api/v1/streams", json=body))[0] == code, body
            status, body, _ = await http.request("POST", "/api/v1/streams",
                                                 json={"device_id": dev_id, "channel_id": channel})
            assert status == 201 and body["state"] == "playing" and body["held_by_api"] is True
            assert body["video_codec"] == "h264" and body["call_id"]
            status, body, _ = await http.get("/api/v1/streams")
            assert status == 200 and body["total"] == 1
            media = sim.device(channel).media  # type: ignore[union-attr]
            assert len(media.sessions) == 1
            status, _, _ = await http.request("DELETE", f"/api/v1/streams/{dev_id}/{channel}")
            assert status == 204
            await wait_until(lambda: not media.sessions, 5)  # the camera got BYE
            assert (await http.get("/api/v1/streams"))[1]["total"] == 0
            assert (await http.request("DELETE", f"/api/v1/streams/{dev_id}/{channel}"))[0] == 404
        finally:
            await http.close()
            await sim.stop()


async def test_metrics_follow_devices_and_streams(tmp_path: Path) -> None:
    from gateway.sim.media import Misbehaviour

    async with running_gateway(config(tmp_path, no_media_timeout=1)) as gw:
        sims = [await started(gw, first_id=f"3402000000132000000{i}") for i in (1, 2)]
        http = Http(gw.http.port)
        try:
            await wait_until(lambda: len(gw.devices.devices) == 2, 5)
            text = await scrape_until(http, "gb28181_devices_online", 2)
            assert (await http.get("/metrics"))[2]["Content-Type"].startswith("text/plain")
            assert metric(text, "gb28181_devices_online_ratio") == 1.0
            assert metric(text, "gb28181_channels_online_ratio") == 1.0
            assert metric(text, "gb28181_channels_intact_ratio") == 1.0
            for s in sims:
                assert metric(text, "gb28181_device_up", f'device_id="{s.devices[0].device_id}"') == 1
                age = metric(text, "gb28181_device_keepalive_age_seconds",
                             f'device_id="{s.devices[0].device_id}"')
                assert age is not None and 0 <= age < 5
            assert (metric(text, "gb28181_registrations_total", 'result="ok"') or 0) >= 2
            assert "gb28181_build_info{" in text
            # A stream that gets no media counts against the intact rate.
            dev = sims[0].devices[0]
            channel = next(iter(gw.devices.get(dev.device_id).channels))  # type: ignore[union-attr]
            sims[0].device(channel).media.misbehave = Misbehaviour(no_media=True)  # type: ignore[union-attr]
            status, _, _ = await http.request("POST", "/api/v1/streams",
                                              json={"device_id": dev.device_id, "channel_id": channel})
            assert status == 504
            text = (await http.get("/metrics"))[1]
            assert metric(text, "gb28181_channels_intact_ratio") == 0.75  # 3 of 4 channels
            assert (metric(text, "gb28181_stream_failures_total", 'reason="no_media"') or 0) >= 1
            sims[0].device(channel).media.misbehave = Misbehaviour()  # type: ignore[union-attr]
            status, _, _ = await http.request("POST", "/api/v1/streams",
                                              json={"device_id": dev.device_id, "channel_id": channel})
            assert status == 201
            text = (await http.get("/metrics"))[1]
            assert metric(text, "gb28181_channels_intact_ratio") == 1.0
            assert metric(text, "gb28181_streams_active") == 1
            await asyncio.sleep(2.2)  # two metrics periods of the receiver
            text = (await http.get("/metrics"))[1]
            assert (metric(text, "gb28181_ingest_bitrate_bits_per_second") or 0) > 10_000
            (stream,) = (await http.get("/api/v1/streams"))[1]["streams"]
            assert stream["bitrate_kbps"] > 10
            # One of two devices stops: the online rate goes from 1.0 to 0.5.
            await sims[1].stop()
            await wait_until(lambda: sum(d.rec.online for d in gw.devices.devices.values()) == 1, 5)
            text = await scrape_until(http, "gb28181_devices_online_ratio", 0.5)
            assert metric(text, "gb28181_channels_online_ratio") == 0.5
            # Unregistered: no per-device series left for it.
            assert metric(text, "gb28181_device_up", f'device_id="{sims[1].devices[0].device_id}"') is None
        finally:
            await http.close()
            await sims[0].stop()


async def test_bearer_tokens(tmp_path: Path) -> None:
    cfg = replace(config(tmp_path), http=HttpConfig(port=0, token=TOKEN, metrics_token=METRICS_TOKEN))
    async with running_gateway(cfg) as gw:
        anonymous = Http(gw.http.port)
        wrong = Http(gw.http.port, "not-the-right-token-at-all")
        right = Http(gw.http.port, TOKEN)
        scraper = Http(gw.http.port, METRICS_TOKEN)
        try:
            for client in (anonymous, wrong):
                status, body, headers = await client.get("/api/v1/devices")
                assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
                assert body["error"]["reason"] == "missing or wrong bearer token"
                assert (await client.get("/metrics"))[0] == 401
                assert (await client.get("/healthz"))[0] == 200
                assert (await client.get("/readyz"))[0] == 200
            assert (await right.get("/api/v1/devices"))[0] == 200
            assert (await right.get("/metrics"))[0] == 401  # /metrics has its own token
            assert (await scraper.get("/metrics"))[0] == 200
            assert (await scraper.get("/api/v1/devices"))[0] == 401
        finally:
            for c in (anonymous, wrong, right, scraper):
                await c.close()


def test_http_token_required_beyond_loopback() -> None:
    with pytest.raises(ConfigError, match="http.token"):
        HttpConfig(listen="0.0.0.0")
    with pytest.raises(ConfigError, match="http.token"):
        HttpConfig(token="short")
    assert HttpConfig(listen="0.0.0.0", token=TOKEN).token == TOKEN
