"""The web page: served through a real socket (shell public, data behind the token), and driven end to end in
headless Debian chromium with playwright: channel list, token form, WHEP playback of an H.264 and an H.265 channel
with frames decoded, resolution, codec and time to first frame."""

from __future__ import annotations

import asyncio
import fnmatch
import re
import tomllib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from gw_util import running_gateway
from site_util import simulated
from test_streams import config, started, wait_until

import gateway

pytestmark = pytest.mark.e2e

TOKEN = "w3b-page-token-for-tests"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
                 "--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
WEB = Path(gateway.__file__).parent / "web"


def token_config(tmp_path: Path, token: str = TOKEN):  # type: ignore[no-untyped-def]
    base = config(tmp_path)
    return replace(base, http=replace(base.http, token=token))


async def fetch(port: int, path: str, method: str = "GET",
                headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, f"http://127.0.0.1:{port}{path}",
                                                        headers=headers or {}) as resp:
        return resp.status, await resp.read(), resp.headers


# ---------------------------------------------------------------------------------------------- through a socket
async def test_page_and_assets_public_data_needs_token(tmp_path: Path) -> None:
    async with running_gateway(token_config(tmp_path)) as gw:
        port = gw.http.port
        status, body, headers = await fetch(port, "/")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        html = body.decode()
        assert "<video" in html and "gb28181-gateway" in html
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        # Everything the page links to is served from here, with its content type; nothing from elsewhere.
        linked = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert all(u.startswith(("/static/", "data:", "#")) for u in linked), linked  # "#": within the page
        types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
        for url in [u for u in linked if u.startswith("/static/")]:
            status, body, h = await fetch(port, url)
            assert status == 200 and h["Content-Type"] == types[Path(url).suffix], url
            assert body == (WEB / Path(url).name).read_bytes()
        # Revalidation: the ETag gives 304, so a browser never runs a stale script after an upgrade.
        status, _, h = await fetch(port, "/static/app.js")
        assert h["Cache-Control"] == "no-cache"
        status, body, _ = await fetch(port, "/static/app.js", headers={"If-None-Match": h["ETag"]})
        assert (status, body) == (304, b"")
        assert (await fetch(port, "/", "HEAD"))[0] == 200
        # Missing assets and anything outside web/ are JSON 404s; the public prefix leads nowhere else.
        for path in ("/static/nope.js", "/static/..%2fwebpage.py", "/static/", "/static/.hidden.js"):
            status, body, h = await fetch(port, path)
            assert status == 404 and h["Content-Type"].startswith("application/json"), path
            assert b'"status": 404' in body, path
        for path in ("/index.html", "/static/../webpage.py", "/static/../api/v1/devices",
                     "/static/..%2fapi%2fv1%2fdevices", "/static/%2e%2e/api/v1/devices",
                     "/static/%2e%2e%2fapi/v1/devices"):
            status, body, h = await fetch(port, path)
            assert status in (401, 404) and b"devices" not in body, (path, status, body)
        # The shell is public; the data it loads is not.
        status, body, h = await fetch(port, "/api/v1/devices")
        assert status == 401 and h["WWW-Authenticate"].startswith("Bearer")
        assert (await fetch(port, "/api/v1/devices", headers={"Authorization": f"Bearer {TOKEN}"}))[0] == 200
        assert (await fetch(port, "/whep/34020000001320000001/34020000001310001001", "POST"))[0] == 401


def test_web_files_are_package_data() -> None:
    """pyproject's package-data takes every file of gateway/web/ into the wheel."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["gateway"]
    files = [p.relative_to(WEB.parent).as_posix() for p in WEB.iterdir()]
    assert {"web/index.html", "web/app.js", "web/style.css"} <= set(files)
    assert all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files)


# ---------------------------------------------------------------------------------------------- in a browser
@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/test installs Debian's chromium)")
    playwright = pytest.importorskip("playwright.async_api")
    async with playwright.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def new_page(browser: Any, width: int = 375, height: int = 740) -> tuple[Any, list[str]]:
    """A phone-sized page; uncaught script errors are collected (the tests assert there are none)."""
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


async def assert_fits(page: Any, width: int) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth") <= width, "horizontal scrolling"


async def test_browser_token_form_channel_list_and_errors(tmp_path: Path, browser: Any) -> None:
    async with simulated(token_config(tmp_path)) as (gw, sim):
        base = f"http://127.0.0.1:{gw.http.port}/"
        dev_id = sim.devices[0].device_id
        page, errors = await new_page(browser)
        await page.goto(base)
        # 401 from the API: the page asks for the token and says why the list is empty.
        await page.wait_for_selector("#token-form:not([hidden])")
        await page.wait_for_selector("#list-status.bad")
        await page.fill("#token", "not-the-right-token")
        await page.click("#token-form button[type=submit]")
        await page.wait_for_selector("#token-msg:not([hidden])")
        assert "refused" in await page.text_content("#token-msg")
        await page.fill("#token", TOKEN)
        await page.click("#token-form button[type=submit]")
        await page.wait_for_selector(".channel[data-online=true]")
        assert await page.is_hidden("#token-form")
        channels = await page.eval_on_selector_all(
            ".channel", "els => els.map(e => [e.dataset.device, e.dataset.channel, e.dataset.online])")
        expected = sorted(gw.devices.get(dev_id).channels)  # type: ignore[union-attr]
        assert channels == [[dev_id, ch, "true"] for ch in expected]
        assert await page.get_attribute(f".device[data-device-id='{dev_id}'] .dot", "class") == "dot on"
        assert "1/1 devices, 2/2 channels online" in await page.text_content("#summary")
        await assert_fits(page, 375)
        await page.screenshot(path=str(tmp_path / "list-375.png"), full_page=True)
        # The token stays for the tab: a reload lists at once.
        await page.reload()
        await page.wait_for_selector(".channel[data-online=true]")
        assert await page.is_hidden("#token-form")
        # A refused stream is shown with the gateway's reason, never silently.
        await page.evaluate("([d, c]) => window.gbPlayer.play(d, c, 'nowhere')",
                            [dev_id, "34020000001310999999"])
        await page.wait_for_selector("#state[data-state=failed]")
        assert "404" in await page.text_content("#reason")
        # Forgetting the token asks again.
        await page.click("#forget")
        await page.wait_for_selector("#token-form:not([hidden])")
        assert await page.evaluate("sessionStorage.length") == 0
        # The token handed over in the URL fragment (never sent to the server) is taken and cleared.
        page2, errors2 = await new_page(browser)
        await page2.goto(base + "#token=" + TOKEN)
        await page2.wait_for_selector(".channel[data-online=true]")
        assert await page2.evaluate("location.hash") == ""
        assert errors == [] and errors2 == []


def _has_whep(gw: Any) -> bool:
    return any(r.resource is not None and r.resource.canonical.startswith("/whep")
               for r in gw.http.app.router.routes())


def _webrtc_config(cfg: Any) -> Any:
    """The gateway's WebRTC candidates on loopback, where the browser runs."""
    webrtc = getattr(cfg, "webrtc", None)
    if webrtc is None or not hasattr(webrtc, "ice_addresses"):
        return cfg
    return replace(cfg, webrtc=replace(webrtc, ice_addresses=type(webrtc.ice_addresses)(["127.0.0.1"])))


STATS_JS = """async () => {
    const pc = window.gbPlayer.pc;
    if (!pc) return null;
    const report = await pc.getStats();
    const out = {frames: 0, codec: null, audio: null, width: 0, height: 0};
    report.forEach(s => {
        if (s.type !== 'inbound-rtp') return;
        const codec = s.codecId && report.get(s.codecId) ? report.get(s.codecId).mimeType : null;
        if (s.kind === 'video') Object.assign(out, {frames: s.framesDecoded || 0, codec,
                                                    width: s.frameWidth || 0, height: s.frameHeight || 0});
        else out.audio = codec;
    });
    return out;
}"""


async def frames_until(page: Any, minimum: int, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = await page.evaluate(STATS_JS)
        if stats and stats["frames"] >= minimum:
            return stats  # type: ignore[no-any-return]
        state = await page.get_attribute("#state", "data-state")
        reason = await page.text_content("#reason")
        assert loop.time() < deadline, f"{minimum} frames not decoded in time: {stats}, {state}: {reason}"
        assert state != "failed", f"playback failed: {reason}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_browser_plays_channel_over_whep(tmp_path: Path, browser: Any, codec: str) -> None:
    if codec == "h265" and "libx265" not in av.codecs_available:
        pytest.skip("PyAV has no libx265: the simulator cannot send H.265")
    async with running_gateway(_webrtc_config(config(tmp_path))) as gw:
        if not _has_whep(gw):
            pytest.skip("WHEP endpoint not present yet")
        sim = await started(gw, codec=codec)
        try:
            dev_id = sim.devices[0].device_id
            channel = sorted(gw.devices.get(dev_id).channels)[0]  # type: ignore[union-attr]
            page, errors = await new_page(browser)
            await page.goto(f"http://127.0.0.1:{gw.http.port}/")
            button = f".channel[data-device='{dev_id}'][data-channel='{channel}']"
            await page.wait_for_selector(button + "[data-online=true]")
            await page.click(button)
            await page.wait_for_selector("#state[data-state=playing]", timeout=20000)
            ttff_ms = await page.evaluate("window.gbPlayer.firstFrameMs")
            first = await frames_until(page, 50, timeout=20)
            await asyncio.sleep(1.5)
            later = await page.evaluate(STATS_JS)
            assert later["frames"] > first["frames"] + 10, f"video froze: {first} then {later}"
            assert await page.get_attribute("#state", "data-state") == "playing"
            # What the page shows: the decoded resolution, the codec from getStats, the time to first frame.
            size = await page.evaluate("[document.getElementById('video').videoWidth,"
                                       " document.getElementById('video').videoHeight]")
            assert size[0] > 0 and size[1] > 0
            assert await page.text_content("#resolution") == f"{size[0]}×{size[1]}"
            assert later["codec"], later
            assert (await page.text_content("#codec")).split()[0] == later["codec"].split("/")[1]
            assert await page.text_content("#ttff") == f"{ttff_ms} ms"
            await assert_fits(page, 375)
            await page.screenshot(path=str(tmp_path / f"playing-{codec}.png"))
            print(f"\n{codec}: time to first frame {ttff_ms} ms, {later['frames']} frames decoded,"
                  f" {size[0]}x{size[1]} {later['codec']} audio {later['audio']}")
            # Stop: the page DELETEs its WHEP session, the gateway's stream loses its viewer and ends.
            await page.click("#stop")
            await page.wait_for_selector("#state[data-state=stopped]")
            await wait_until(lambda: gw.streams.sessions == {}, timeout=10)
            # Leaving the page while playing ends the session too (pagehide → DELETE with keepalive); this time
            # the sub-stream.
            if codec == "h264":
                await page.check("#substream")
            await page.click(button)
            await page.wait_for_selector("#state[data-state=playing]", timeout=20000)
            assert [k.substream for k in gw.streams.sessions] == [1 if codec == "h264" else 0]
            await page.goto("about:blank")
            await wait_until(lambda: gw.streams.sessions == {}, timeout=10)
            assert errors == []
        finally:
            await sim.stop()


# ---------------------------------------------------------------------------------------------- alarms, PTZ, position
def page_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The token; alarms not rate-limited (the tests raise a few at once); positions only when the simulator is
    told to send them (no MobilePosition subscription)."""
    base = token_config(tmp_path)
    return replace(base, devices=replace(base.devices, alarm_rate=1000.0, position_subscribe_expires=0))


async def alarm_rows(page: Any) -> list[dict[str, Any]]:
    return await page.eval_on_selector_all(  # type: ignore[no-any-return]
        "#alarm-list .alarm", "els => els.map(e => ({id: +e.dataset.id, cls: e.className,"
        " desc: e.querySelector('.desc').textContent, prio: e.querySelector('.prio').textContent,"
        " method: e.querySelector('.method').textContent, src: e.querySelector('.src').textContent}))")


async def test_browser_alarms_live_and_after_a_drop(tmp_path: Path, browser: Any) -> None:
    async with simulated(page_config(tmp_path)) as (gw, sim):
        dev = sim.devices[0]
        # One alarm from before the page opened: listed from GET /api/v1/alarms.
        await dev.raise_alarm(3, 2, "<b>门磁</b> opened")
        page, errors = await new_page(browser, height=480)  # the alarm panel below the fold
        await page.goto(f"http://127.0.0.1:{gw.http.port}/#token={TOKEN}")
        await page.wait_for_selector("#alarm-status[data-state=live]", timeout=15000)
        await wait_until(lambda: gw.alarms.subscribers == 1, 10)
        rows = await alarm_rows(page)
        assert len(rows) == 1 and rows[0]["desc"] == "<b>门磁</b> opened", rows  # text, never HTML
        assert rows[0]["prio"] == "P3" and rows[0]["method"] == "device" and "prio-3" in rows[0]["cls"]
        assert await page.locator("#alarm-list b").count() == 0
        # Live: a priority 1 video alarm appears within seconds, on top, highlighted.
        await dev.raise_alarm(1, 5, "周界入侵", alarm_type=2)
        await page.wait_for_selector("#alarm-list .alarm.prio-1.new", timeout=10000)
        rows = await alarm_rows(page)
        assert [r["desc"] for r in rows] == ["周界入侵", "<b>门磁</b> opened"]
        assert rows[0]["prio"] == "P1" and rows[0]["method"] == "video"
        assert rows[0]["src"] == f"{dev.device_id}/{dev.channel_ids[0]}"
        assert await page.eval_on_selector(
            "#alarm-list .alarm.prio-1 .prio", "e => getComputedStyle(e).backgroundColor") == "rgb(207, 34, 46)"
        # The panel is below the fold on a phone: the header counts the alarm not seen yet.
        assert await page.text_content("#alarm-unseen") == "1"
        assert await page.is_visible("#alarm-unseen")
        # The link is cut and stays down (offline) while two alarms are raised: after it comes back the page
        # reconnects with Last-Event-ID and the gateway replays both, each once.
        await page.context.set_offline(True)
        await page.evaluate("window.gbAlarms.drop()")  # the gateway notices at its next write
        await page.wait_for_selector("#alarm-status[data-state=reconnecting]")
        connects = await page.evaluate("window.gbAlarms.connects")
        await dev.raise_alarm(2, 6, "硬盘故障 disk fault")
        await dev.raise_alarm(1, 1, "phone alarm")
        await asyncio.sleep(2.5)  # a reconnect attempt fails meanwhile
        assert len(await alarm_rows(page)) == 2
        await page.context.set_offline(False)
        await page.locator("#alarm-list .alarm").nth(3).wait_for(timeout=20000)
        await page.wait_for_selector("#alarm-status[data-state=live]", timeout=10000)
        assert await page.evaluate("window.gbAlarms.connects") > connects
        rows = await alarm_rows(page)
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)) == 4 and ids == sorted(ids, reverse=True), rows
        assert [r["desc"] for r in rows] == ["phone alarm", "硬盘故障 disk fault", "周界入侵", "<b>门磁</b> opened"]
        assert [r["method"] for r in rows] == ["phone", "fault", "video", "device"]
        assert await page.evaluate("window.gbAlarms.lastId") == ids[0]
        # Still live after the reconnect, and nothing twice.
        await dev.raise_alarm(4, 7, "after the reconnect")
        await page.locator("#alarm-list .alarm").nth(4).wait_for(timeout=10000)
        await asyncio.sleep(0.5)
        rows = await alarm_rows(page)
        assert [r["desc"] for r in rows][0] == "after the reconnect" and len(rows) == 5
        assert await page.text_content("#alarm-unseen") == "4"
        # Going to the panel marks them seen.
        await page.click("#alarms-link")
        await page.wait_for_selector("#alarm-unseen", state="hidden")
        await assert_fits(page, 375)
        assert errors == []


async def test_browser_alarm_gap_notice(tmp_path: Path, browser: Any) -> None:
    """More than the replay limit missed: the gateway's ``event: gap`` is shown as a notice, the list reloaded."""
    from gateway import alarms as alarm_mod

    async with simulated(page_config(tmp_path)) as (gw, sim):
        dev = sim.devices[0]
        page, errors = await new_page(browser)
        await page.goto(f"http://127.0.0.1:{gw.http.port}/#token={TOKEN}")
        await page.wait_for_selector("#alarm-status[data-state=live]", timeout=15000)
        await page.context.set_offline(True)
        await page.evaluate("window.gbAlarms.drop()")
        await page.wait_for_selector("#alarm-status[data-state=reconnecting]")
        limit = alarm_mod.REPLAY_LIMIT
        try:
            alarm_mod.REPLAY_LIMIT = 2  # instead of raising over 1000 alarms
            for n in range(5):
                await dev.raise_alarm(2, 2, f"missed {n}")
            await page.context.set_offline(False)
            await page.wait_for_selector("#alarm-gap:not([hidden])", timeout=20000)
        finally:
            alarm_mod.REPLAY_LIMIT = limit
        assert await page.text_content("#alarm-gap-text") == "3 alarms not shown (missed while disconnected)."
        # The list reload brings the newest 50 back: all five, once each.
        await page.locator("#alarm-list .alarm").nth(4).wait_for(timeout=10000)
        rows = await alarm_rows(page)
        assert [r["desc"] for r in rows] == [f"missed {n}" for n in (4, 3, 2, 1, 0)]
        await page.click("#alarm-gap-close")
        assert await page.is_hidden("#alarm-gap")
        assert errors == []


async def test_browser_ptz_pad_and_position(tmp_path: Path, browser: Any) -> None:
    from sip.ptz import PtzCommand

    async with simulated(page_config(tmp_path)) as (gw, sim):
        dev = sim.devices[0]
        channel = dev.channel_ids[0]
        page, errors = await new_page(browser)
        await page.goto(f"http://127.0.0.1:{gw.http.port}/#token={TOKEN}")
        button = f".channel[data-device='{dev.device_id}'][data-channel='{channel}']"
        await page.wait_for_selector(button + "[data-online=true]")
        assert await page.is_hidden("#ptz")  # nothing chosen yet
        assert await page.locator(".channel .pos").count() == 0
        await page.click(button)  # no WHEP here: playback fails, the camera can still be steered
        await page.wait_for_selector("#ptz:not([hidden])")
        for label in ("Tilt up", "Tilt down", "Pan left", "Pan right", "Zoom in", "Zoom out", "Go to preset"):
            assert await page.locator(f"#ptz [aria-label='{label}']").count() == 1, label
        assert await page.input_value("#ptz-speed") == "128"
        # Press and hold "right": a move right at the slider's speed; release: a stop.
        log = dev.control.ptz_log
        before = len(log)
        await page.hover("#ptz [aria-label='Pan right']")
        await page.mouse.down()
        await wait_until(lambda: len(log) >= before + 1, 10)
        assert log[before] == PtzCommand.move(1, 0, 0, pan_speed=128, tilt_speed=128).encode()
        await asyncio.sleep(0.3)
        assert len(log) == before + 1  # moving while held
        await page.mouse.up()
        await wait_until(lambda: len(log) >= before + 2, 10)
        assert log[before + 1] == PtzCommand.stop().encode() == "A50F0100000000B5"
        # Slower, up; leaving the button stops too.
        await page.evaluate("""() => { const s = document.getElementById('ptz-speed');
            s.value = '64'; s.dispatchEvent(new Event('input', {bubbles: true})); }""")
        assert await page.text_content("#ptz-speed-value") == "64"
        await page.hover("#ptz [aria-label='Tilt up']")
        await page.mouse.down()
        await wait_until(lambda: len(log) >= before + 3, 10)
        await page.mouse.move(2, 2)
        await wait_until(lambda: len(log) >= before + 4, 10)
        await page.mouse.up()
        assert log[before + 2:] == [PtzCommand.move(0, 1, 0, pan_speed=64, tilt_speed=64).encode(), "A50F0100000000B5"]
        # Zoom in: the zoom speed is the slider's, scaled to 0..15.
        await page.hover("#ptz [aria-label='Zoom in']")
        await page.mouse.down()
        await page.mouse.up()
        await wait_until(lambda: len(log) >= before + 6, 10)
        assert log[before + 4:] == [PtzCommand.move(zoom=1, pan_speed=64, tilt_speed=64, zoom_speed=4).encode(),
                                    "A50F0100000000B5"]
        # Preset 7.
        await page.fill("#ptz-preset", "7")
        await page.click("#ptz-preset-go")
        await wait_until(lambda: len(log) >= before + 7, 10)
        assert log[-1] == PtzCommand.preset_call(7).encode()
        await page.wait_for_selector("#ptz-msg:not([hidden])")
        assert "preset 7" in await page.text_content("#ptz-msg")
        # Position: the device reports one per channel; the list shows it once refreshed.
        assert await dev.send_positions() is not None
        fixes = {p.target_id: p for p in dev.positions_sent}
        await wait_until(lambda: all(gw.devices.subscriptions.position(dev.device_id, c) is not None
                                     for c in dev.channel_ids), 10)
        await page.click("#refresh")
        await page.wait_for_selector(f"{button} .pos")
        for c in dev.channel_ids:
            pos = page.locator(f".channel[data-channel='{c}'] .pos")
            lat, lon = (float(x) for x in (await pos.text_content()).split(", "))
            assert abs(lat - fixes[c].latitude) < 6e-6 and abs(lon - fixes[c].longitude) < 6e-6
            assert fixes[c].time in await pos.get_attribute("title")
        await assert_fits(page, 375)
        # A screenshot with alarms and the pad.
        await dev.raise_alarm(1, 5, "周界入侵", alarm_type=2)
        await dev.raise_alarm(3, 6, "视频丢失 video lost")
        await page.locator("#alarm-list .alarm").nth(1).wait_for(timeout=10000)
        await assert_fits(page, 375)
        await page.screenshot(path=str(tmp_path / "alarms-ptz-375.png"), full_page=True)
        # The device gone: its refusal is shown with the gateway's reason.
        await dev.stop(unregister=True)
        gw_dev = gw.devices.get(dev.device_id)
        await wait_until(lambda: gw_dev is not None and not gw_dev.rec.online, 10)
        await page.hover("#ptz [aria-label='Pan left']")
        await page.mouse.down()
        await page.mouse.up()
        await page.wait_for_selector("#ptz-msg.bad")
        msg = await page.text_content("#ptz-msg")
        assert "409" in msg and "offline" in msg, msg
        assert errors == []
