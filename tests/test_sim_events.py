"""The simulator's subscriptions (gateway/sim/events.py) against the platform stand-in of test_sim.py, extended to
SUBSCRIBE (in and out of dialog, with sip.dialog) and to record NOTIFYs and event MESSAGEs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from test_sim import DOMAIN, FIRST, PLATFORM_ID, MakeSim, Platform, Seen, sim_config, until

from gateway.config import SipConfig
from gateway.sim import SimConfig, Simulator
from gateway.sim.cli import _parser, config_from_args
from gateway.sim.events import ALARM_DESCRIPTION
from gateway.sip_router import SipRouter
from gateway.sip_transport import SipServer
from sip import manscdp
from sip.dialog import Dialog
from sip.digest import NonceManager
from sip.endpoint import RequestReceived
from sip.events import (
    PositionForm,
    SubState,
    alarm_query,
    parse_event_header,
    parse_positions,
    parse_subscription_state,
    position_query,
)
from sip.message import NameAddr, SipRequest, SipResponse, SipUri, Via, build_request, build_response

pytestmark = pytest.mark.e2e

MANSCDP = "Application/MANSCDP+xml"


@dataclass
class EventPlatform(Platform):
    notifies: list[Seen] = field(default_factory=list)
    """NOTIFY requests received (in or out of dialog)."""
    messages: list[tuple[Seen, manscdp.ManscdpDocument]] = field(default_factory=list)
    """``<Notify>`` Alarm / MobilePosition MESSAGEs received."""
    notify_status: int = 200

    async def start(self) -> None:
        router = SipRouter()
        router.on_method("REGISTER", self._on_register)
        router.on_manscdp("Notify", "Keepalive", self._on_keepalive)
        for cmd in ("Catalog", "DeviceInfo", "DeviceStatus"):
            router.on_manscdp("Response", cmd, self._on_response)
        router.on_method("NOTIFY", self._on_notify)
        for cmd in ("Alarm", "MobilePosition", "Catalog"):
            router.on_manscdp("Notify", cmd, self._on_event_message)
        self.nonces = NonceManager(b"stand-in nonce secret 0123456789", 300.0)
        self.server = SipServer(SipConfig(port=0, t1=0.1, source_rate_limit=0), router)
        await self.server.start()

    def _on_notify(self, server: SipServer, ev: RequestReceived) -> None:
        self.notifies.append(Seen(ev.request, ev.peer, self._now(), self.notify_status))
        server.respond(build_response(ev.request, self.notify_status, to_tag="p"))

    def _on_event_message(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self.messages.append((Seen(ev.request, ev.peer, self._now(), 200), doc))
        server.respond(build_response(ev.request, 200, to_tag="p"))

    def via(self) -> Via:
        assert self.server is not None
        return Via(transport="UDP", host="127.0.0.1", port=self.port,
                   params=(("rport", None), ("branch", self.server.endpoint.new_branch())))

    async def subscribe(self, device_id: str, event: str, body: bytes = b"", *, expires: int = 60,
                        dialog: Dialog | None = None) -> tuple[SipRequest, SipResponse]:
        """SUBSCRIBE (out of dialog, or refreshing ``dialog``); the request and the device's final response."""
        assert self.server is not None
        peer = self.registered[device_id]
        headers = [("Event", event), ("Expires", str(expires)), ("Contact", f"<sip:{PLATFORM_ID}@127.0.0.1:{self.port}>")]
        if dialog is None:
            req = build_request(
                "SUBSCRIBE", SipUri(host=peer.addr[0], port=peer.addr[1], user=device_id), via=self.via(),
                from_=NameAddr(SipUri(host=DOMAIN, user=PLATFORM_ID), params=(("tag", self.server.endpoint.new_tag()),)),
                to=NameAddr(SipUri(host=DOMAIN, user=device_id)), call_id=self.server.endpoint.new_call_id(), cseq=1,
                headers=headers, body=body, content_type=MANSCDP if body else None,
            )
        else:
            req = dialog.create_request("SUBSCRIBE", self.via(), headers, body, MANSCDP if body else None)
        return req, await self.server.request(req, peer)

    def notifies_in(self, dialog: Dialog) -> list[SipRequest]:
        return [seen.request for seen in self.notifies if dialog.matches(seen.request)]


@pytest.fixture
async def platform() -> AsyncIterator[EventPlatform]:
    p = EventPlatform()
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def make_sim(platform: EventPlatform) -> AsyncIterator[MakeSim]:
    sims: list[Simulator] = []

    async def make(**kw: object) -> Simulator:
        sim = Simulator(sim_config(platform, **kw))
        await sim.start()
        sims.append(sim)
        assert await sim.wait_registered(timeout=10)
        return sim

    yield make
    for sim in sims:
        await sim.stop()


async def subscribed(platform: EventPlatform, event: str, body: bytes = b"", expires: int = 60) -> Dialog:
    req, resp = await platform.subscribe(FIRST, event, body, expires=expires)
    assert resp.status == 200, resp.status
    return Dialog.from_uac(req, resp)


def state(req: SipRequest) -> tuple[SubState, int | None, str | None]:
    parsed = parse_subscription_state(req.headers.get("Subscription-State"))
    assert parsed is not None
    return parsed.state, parsed.expires, parsed.reason


# --------------------------------------------------------------------------------------------------- SUBSCRIBE
async def test_alarm_subscribe_refresh_and_unknown_dialog(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    dev = sim.device(FIRST)
    req, resp = await platform.subscribe(FIRST, "Alarm;id=3", alarm_query(3, FIRST), expires=60)
    assert resp.status == 200 and resp.expires == 60 and resp.to.tag
    assert resp.contacts[0].uri.user == FIRST and resp.contacts[0].uri.port == sim.port
    assert dev.subscribes["alarm"] == 1 and dev.refreshes["alarm"] == 0
    sub = dev.subscriptions["alarm"]
    assert sub.expires == 60 and sub.event == "Alarm;id=3" and sub.dialog.call_id == req.call_id
    loop = asyncio.get_running_loop()
    assert 59 < sub.until - loop.time() <= 60
    dialog = Dialog.from_uac(req, resp)
    _, again = await platform.subscribe(FIRST, "Alarm;id=3", alarm_query(3, FIRST), expires=120, dialog=dialog)
    assert again.status == 200 and again.expires == 120
    assert dev.refreshes["alarm"] == 1 and dev.subscribes["alarm"] == 1 and dev.subscriptions["alarm"] is sub
    assert sub.expires == 120
    # The same dialog IDs with another remote tag: not ours.
    stranger = Dialog(call_id=dialog.call_id, local=dialog.local, remote=dialog.remote.with_tag("other"),
                      remote_target=dialog.remote_target, local_cseq=10)
    _, lost = await platform.subscribe(FIRST, "Alarm", expires=60, dialog=stranger)
    assert lost.status == 481
    # The catalog compat counters are untouched.
    assert dev.catalog_subscribes == 0 and dev.catalog_subscribed_until is None


async def test_catalog_subscribe_keeps_the_old_counters(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    dev = sim.device(FIRST)
    dialog = await subscribed(platform, "Catalog;id=5", manscdp.encode("Query", "Catalog", 5, FIRST), expires=30)
    assert (dev.catalog_subscribes, dev.catalog_refreshes, dev.catalog_subscribe_expires) == (1, 0, 30)
    assert dev.catalog_subscribed_until is not None
    _, resp = await platform.subscribe(FIRST, "Catalog;id=5", expires=40, dialog=dialog)
    assert resp.status == 200
    assert (dev.catalog_subscribes, dev.catalog_refreshes, dev.catalog_subscribe_expires) == (1, 1, 40)
    assert dev.subscribes["catalog"] == 1 and dev.refreshes["catalog"] == 1
    dev.subscribe_status = 403
    _, refused = await platform.subscribe(FIRST, "Catalog", expires=40)
    assert refused.status == 403


@pytest.mark.parametrize("event", ["presence", "Catalog2", None])
async def test_unknown_event_is_489(platform: EventPlatform, make_sim: MakeSim, event: str | None) -> None:
    sim = await make_sim()
    assert platform.server is not None
    peer = platform.registered[FIRST]
    headers = [("Expires", "60")] + ([("Event", event)] if event is not None else [])
    req = build_request(
        "SUBSCRIBE", SipUri(host=peer.addr[0], port=peer.addr[1], user=FIRST), via=platform.via(),
        from_=NameAddr(SipUri(host=DOMAIN, user=PLATFORM_ID), params=(("tag", "t"),)),
        to=NameAddr(SipUri(host=DOMAIN, user=FIRST)), call_id="c-489", cseq=1, headers=headers)
    resp = await platform.server.request(req, peer)
    assert resp.status == 489
    assert sim.device(FIRST).subscriptions == {}


async def test_refusal_hook(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    dev = sim.device(FIRST)
    dev.refuse_events["mobileposition"] = 489
    _, resp = await platform.subscribe(FIRST, "MobilePosition", position_query(1, FIRST, 1))
    assert resp.status == 489
    assert "mobileposition" not in dev.subscriptions and dev.subscribes["mobileposition"] == 0
    dev.refuse_events["alarm"] = 403
    assert (await platform.subscribe(FIRST, "Alarm"))[1].status == 403
    del dev.refuse_events["mobileposition"]
    assert (await platform.subscribe(FIRST, "MobilePosition", position_query(1, FIRST, 60)))[1].status == 200


async def test_bad_position_query_is_400(platform: EventPlatform, make_sim: MakeSim) -> None:
    await make_sim()
    body = manscdp.encode("Query", "MobilePosition", 1, FIRST, [("Interval", "0")])
    assert (await platform.subscribe(FIRST, "MobilePosition", body))[1].status == 400


# --------------------------------------------------------------------------------------------------- positions
@pytest.mark.parametrize("form", ["single", "list"])
async def test_position_notifies_in_dialog(platform: EventPlatform, make_sim: MakeSim, form: str) -> None:
    sim = await make_sim(channels=2, position_form=form, charset="UTF-8")
    dev = sim.device(FIRST)
    dialog = await subscribed(platform, "MobilePosition;id=7", position_query(7, FIRST, 1), expires=60)
    per_report = 2 if form == "single" else 1
    await until(lambda: len(platform.notifies_in(dialog)) >= 2 * per_report, 5)  # at once, then after 1 s
    notifies = platform.notifies_in(dialog)
    for n in notifies:
        assert n.call_id == dialog.call_id
        assert n.from_.tag == dialog.remote_tag and n.to.tag == dialog.local_tag  # tags swapped
        assert n.headers.get("Event") == "MobilePosition;id=7"
        assert parse_event_header(n.headers.get("Event")).package == "mobileposition"
        st, expires, _ = state(n)
        assert st is SubState.ACTIVE and expires is not None and 55 <= expires <= 60
        assert n.content_type == MANSCDP.lower()
    cseqs = [n.cseq.number for n in notifies]
    assert cseqs == sorted(cseqs) and len(set(cseqs)) == len(cseqs)
    docs = [manscdp.decode(n.body) for n in notifies]
    assert all(d.encoding == "UTF-8" for d in docs)
    first = [p for d in docs[:per_report] for p in parse_positions(d)]
    assert sorted(p.target_id for p in first) == dev.channel_ids
    if form == "list":
        assert docs[0].device_id == FIRST and docs[0].find("DeviceList") is not None
    else:
        assert [d.device_id for d in docs[:2]] == dev.channel_ids
    by_channel = {p.target_id: p for p in first}
    p0, p1 = by_channel[dev.channel_ids[0]], by_channel[dev.channel_ids[1]]
    assert p0.longitude == pytest.approx(117.2, abs=1e-3) and p0.latitude == pytest.approx(31.8, abs=1e-3)
    assert p1.longitude == pytest.approx(p0.longitude + 0.01)
    assert p0.speed is not None and p0.direction is not None and p0.altitude is not None
    second = [p for d in docs[per_report:2 * per_report] for p in parse_positions(d)]
    moved = {p.target_id: p for p in second}[dev.channel_ids[0]]
    assert moved.longitude > p0.longitude and moved.latitude > p0.latitude  # the track advances
    assert dev.positions_sent[:2] == first if form == "list" else sorted(dev.positions_sent[:2],
                                                                          key=lambda p: p.target_id) == sorted(
        first, key=lambda p: p.target_id)


async def test_send_positions_on_demand_and_without_subscription(platform: EventPlatform,
                                                                 make_sim: MakeSim) -> None:
    sim = await make_sim(channels=3)
    dev = sim.device(FIRST)
    resp = await dev.send_positions(form="list")  # not subscribed: a MESSAGE
    assert resp is not None and resp.status == 200
    (seen, doc), = platform.messages
    assert seen.request.method == "MESSAGE" and len(parse_positions(doc)) == 3
    assert platform.notifies == []
    dialog = await subscribed(platform, "MobilePosition", position_query(1, FIRST, 3600))
    await until(lambda: len(platform.notifies_in(dialog)) == 3)  # the report at subscription, single form
    resp = await dev.send_positions()
    assert resp is not None and resp.status == 200
    assert len(platform.notifies_in(dialog)) == 6
    assert len(dev.positions_sent) == 9


async def test_notify_terminated_from_the_device(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim(channels=1)
    dev = sim.device(FIRST)
    dialog = await subscribed(platform, "MobilePosition", position_query(1, FIRST, 1))
    await until(lambda: len(platform.notifies_in(dialog)) >= 1)
    resp = await dev.notify_terminated("MobilePosition", "noresource")
    assert resp is not None and resp.status == 200
    last = platform.notifies_in(dialog)[-1]
    assert state(last) == (SubState.TERMINATED, None, "noresource") and last.body == b""
    assert "mobileposition" not in dev.subscriptions
    count = len(platform.notifies_in(dialog))
    await asyncio.sleep(1.3)
    assert len(platform.notifies_in(dialog)) == count  # no more reports
    assert await dev.notify_terminated("MobilePosition") is None  # nothing left to end
    # The platform subscribes again.
    await subscribed(platform, "MobilePosition", position_query(2, FIRST, 60))
    assert dev.subscribes["mobileposition"] == 2


async def test_481_to_a_notify_drops_the_subscription(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim(channels=1)
    dev = sim.device(FIRST)
    dialog = await subscribed(platform, "MobilePosition", position_query(1, FIRST, 3600))
    await until(lambda: len(platform.notifies_in(dialog)) == 1)
    platform.notify_status = 481
    resp = await dev.send_positions()
    assert resp is not None and resp.status == 481
    assert "mobileposition" not in dev.subscriptions


# --------------------------------------------------------------------------------------------------- ending
async def test_expires_0_answers_200_then_terminated(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    dev = sim.device(FIRST)
    dialog = await subscribed(platform, "Alarm;id=1", alarm_query(1, FIRST))
    _, resp = await platform.subscribe(FIRST, "Alarm;id=1", expires=0, dialog=dialog)
    assert resp.status == 200 and resp.expires == 0
    await until(lambda: len(platform.notifies_in(dialog)) == 1)
    (notify,) = platform.notifies_in(dialog)
    assert state(notify) == (SubState.TERMINATED, None, "timeout")
    assert notify.headers.get("Event") == "Alarm;id=1"
    assert "alarm" not in dev.subscriptions
    assert (dev.subscribes["alarm"], dev.refreshes["alarm"], dev.unsubscribes["alarm"]) == (1, 1, 1)
    # Alarms now go out of dialog again.
    assert (await dev.raise_alarm(1, 5, "after")).status == 200  # type: ignore[union-attr]
    assert platform.messages[-1][1].cmd_type == "Alarm"


async def test_unanswered_terminating_notify_is_harmless(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    dev = sim.device(FIRST)
    dialog = await subscribed(platform, "Catalog")
    platform.notify_status = 500
    _, resp = await platform.subscribe(FIRST, "Catalog", expires=0, dialog=dialog)
    assert resp.status == 200
    await until(lambda: len(platform.notifies_in(dialog)) == 1)
    assert dev.subscriptions == {} and dev.catalog_subscribed_until is None
    assert dev.registered


async def test_expiry_without_refresh_sends_terminated(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    dev = sim.device(FIRST)
    loop = asyncio.get_running_loop()
    started = loop.time()
    dialog = await subscribed(platform, "Alarm", alarm_query(1, FIRST), expires=1)
    await until(lambda: len(platform.notifies_in(dialog)) == 1, 5)
    assert 0.9 < loop.time() - started < 3
    assert state(platform.notifies_in(dialog)[0]) == (SubState.TERMINATED, None, "timeout")
    assert "alarm" not in dev.subscriptions and dev.unsubscribes["alarm"] == 0


async def test_reboot_forgets_subscriptions(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    dev = sim.device(FIRST)
    dialog = await subscribed(platform, "Alarm")
    await dev.stop(unregister=False)
    dev.start()
    assert await dev.wait_registered(5)
    assert dev.subscriptions == {}
    _, resp = await platform.subscribe(FIRST, "Alarm", dialog=dialog)
    assert resp.status == 481


# --------------------------------------------------------------------------------------------------- reports
async def test_alarm_auto_form(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    dev = sim.device(FIRST)
    assert (await dev.raise_alarm(2, 5, "no subscription")).status == 200  # type: ignore[union-attr]
    assert [s.request.method for s, _ in platform.messages] == ["MESSAGE"] and platform.notifies == []
    dialog = await subscribed(platform, "Alarm;id=9", alarm_query(9, FIRST))
    assert (await dev.raise_alarm(2, 5, "subscribed")).status == 200  # type: ignore[union-attr]
    (notify,) = platform.notifies_in(dialog)
    assert notify.headers.get("Event") == "Alarm;id=9" and state(notify)[0] is SubState.ACTIVE
    doc = manscdp.decode(notify.body)
    assert (doc.cmd_type, doc.text("AlarmDescription")) == ("Alarm", "subscribed")
    assert (await dev.raise_alarm(2, 5, "message", form="MESSAGE")).status == 200  # type: ignore[union-attr]
    assert len(platform.messages) == 2 and len(platform.notifies) == 1
    assert (await dev.raise_alarm(2, 5, "notify", form="NOTIFY")).status == 200  # type: ignore[union-attr]
    assert len(platform.notifies_in(dialog)) == 2
    assert dev.alarms_raised == 4
    with pytest.raises(ValueError, match="form must be auto"):
        await dev.raise_alarm(2, 5, form="SMS")


async def test_catalog_notify_in_dialog_and_message_form(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    dev = sim.device(FIRST)
    ch0 = dev.channel_ids[0]
    assert (await dev.notify_catalog(ch0, "OFF")).status == 200  # type: ignore[union-attr]
    out = platform.notifies[-1].request
    assert out.headers.get("Event") == "Catalog" and out.to.tag is None  # out of dialog
    dialog = await subscribed(platform, "Catalog;id=5")
    assert (await dev.notify_catalog(ch0, "ON")).status == 200  # type: ignore[union-attr]
    (inside,) = platform.notifies_in(dialog)
    assert inside.headers.get("Event") == "Catalog;id=5"
    assert manscdp.decode(inside.body).items("DeviceList")[0]["Event"] == "ON"
    assert (await dev.notify_catalog(ch0, "VLOST", form="MESSAGE")).status == 200  # type: ignore[union-attr]
    assert platform.messages[-1][0].request.method == "MESSAGE"


async def test_scheduled_alarms(platform: EventPlatform, make_sim: MakeSim) -> None:
    sim = await make_sim(alarm_interval=0.3, charset="GB2312")
    await until(lambda: len(platform.messages) >= 4, 5)
    docs = [doc for _, doc in platform.messages[:4]]
    assert [d.text("AlarmPriority") for d in docs] == ["1", "2", "3", "4"]
    assert {(d.text("AlarmMethod"), d.text("Info/AlarmType"), d.text("AlarmDescription")) for d in docs} == {
        ("5", "2", ALARM_DESCRIPTION)}
    assert sim.device(FIRST).alarms_raised >= 4
    # Under an Alarm subscription they go in its dialog.
    dialog = await subscribed(platform, "Alarm")
    await until(lambda: len(platform.notifies_in(dialog)) >= 2, 5)


# --------------------------------------------------------------------------------------------------- config, CLI
def test_config_and_cli() -> None:
    with pytest.raises(ValueError, match="position_form = 'both'"):
        SimConfig(position_form="both")
    with pytest.raises(ValueError, match="alarm_interval = -1"):
        SimConfig(alarm_interval=-1)
    with pytest.raises(ValueError, match="alarm_interval = nan"):
        SimConfig(alarm_interval=float("nan"))
    assert SimConfig().position_form == "single" and SimConfig().alarm_interval == 0.0
    args = _parser().parse_args(["--position-form", "list", "--alarm-interval", "2.5"])
    config = config_from_args(args)
    assert (config.position_form, config.alarm_interval) == ("list", 2.5)
    assert PositionForm(config.position_form) is PositionForm.LIST
    with pytest.raises(SystemExit):
        _parser().parse_args(["--position-form", "both"])
