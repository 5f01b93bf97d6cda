"""Subscription events (GB/T 28181-2016 §9.11, 附录 A.2.5; RFC 6665): mobile positions, alarm and position
queries, the ``Event`` and ``Subscription-State`` headers. Pure functions, no I/O.

Theory of operation
-------------------
A platform subscribes to a device's events with ``SUBSCRIBE`` (``Event: Catalog``, ``Alarm``,
``MobilePosition``; ``presence`` in some fields) whose MANSCDP body is the query the subscription stands for::

    Event: Alarm           <Query><CmdType>Alarm</CmdType>          alarm_query(sn, id, start_priority=..)
                           <StartAlarmPriority>,<EndAlarmPriority>,<AlarmMethod>
    Event: MobilePosition  <Query><CmdType>MobilePosition</CmdType>  position_query(sn, id, interval)
                           <Interval>5</Interval>                    parse_position_query(doc) -> 5

The device answers ``200`` (a dialog: ``sip.dialog``) and reports in ``NOTIFY``s inside that dialog, each with
``Event`` (``parse_event_header``: the package lower-cased and its ``id`` parameter) and ``Subscription-State``
(``parse_subscription_state``/``format_subscription_state``: ``active;expires=3600``,
``terminated;reason=timeout``; RFC 6665 §8.2.3, parameters case-insensitive, unknown ones ignored; GB devices
often leave the header out, which parses as ``None``).

A mobile position NOTIFY comes in two forms (``PositionForm``), told apart by whether a list with ``Item``s is
present::

    SINGLE (2016, A.2.5.6)                     LIST (2022)
    <Notify>                                   <Notify>
    <CmdType>MobilePosition</CmdType>          <CmdType>MobilePosition</CmdType>
    <SN>7</SN>                                 <SN>7</SN>
    <DeviceID>{target}</DeviceID>              <DeviceID>{device}</DeviceID>
    <Time>2026-11-23T14:34:25</Time>           <SumNum>2</SumNum>
    <Longitude>116.397428</Longitude>          <DeviceList Num="2">
    <Latitude>39.90923</Latitude>              <Item><DeviceID>{target}</DeviceID><Time>..</Time>
    <Speed>0</Speed>                                 <Longitude>..</Longitude><Latitude>..</Latitude>
    <Direction>90</Direction>                        [<Speed>,<Direction>,<Altitude>]</Item>
    <Altitude>50</Altitude>                    ...</DeviceList>
    </Notify>                                  </Notify>

``parse_positions`` reads either (the list may also be called ``PositionList`` or ``ItemList``; ``Num`` and
``SumNum`` are not trusted: the items are counted, at most ``max_items``). Each fix becomes a ``MobilePosition``
whose ``__post_init__`` checks every field: a 20-digit target ID, a ``yyyy-MM-ddTHH:mm:ss[.fff]`` time (a space
for the ``T`` accepted, kept as sent), finite numbers in range (longitude -180..180, latitude -90..90, speed
0..10000 km/h, direction 0..360 degrees, altitude -20000..100000 m). Numbers on the wire must be plain decimals
(``-?[0-9]+(\\.[0-9]+)?``): ``1e2``, ``nan``, ``inf``, ``+1`` and ``0x10``, all of which ``float()`` takes, are
refused. Empty optional elements mean ``None``.

``build_position_notify`` writes either form through ``sip.manscdp.encode`` (declaration, CRLF, the charset
asked): longitude and latitude with up to 6 decimals, speed, direction and altitude with up to 2, trailing zeros
dropped (``116.4``, ``0``). In the SINGLE form the root ``DeviceID`` is the one position's target.

Every refusal is an ``EventError`` (a ``MalformedMessage``, status 400, and a ``ValueError``) with an exact
message naming the field and, in a list, the item (from 1). Hostile XML never gets here: ``manscdp.decode``
refuses it first (``InvalidBody``).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sip import manscdp
from sip.errors import MalformedMessage
from sip.manscdp import Element, Field, ManscdpDocument
from sip.ptz import check_int

__all__ = [
    "DEFAULT_INTERVAL",
    "LIST_TAGS",
    "MAX_ITEMS",
    "EventError",
    "EventHeader",
    "MobilePosition",
    "PositionForm",
    "SubState",
    "SubscriptionState",
    "alarm_query",
    "build_position_notify",
    "format_subscription_state",
    "parse_event_header",
    "parse_position_query",
    "parse_positions",
    "parse_subscription_state",
    "position_query",
]

DEFAULT_INTERVAL = 5  # seconds between position reports when the query has no <Interval>
MAX_INTERVAL = 3600
MAX_ITEMS = 1000
LIST_TAGS = ("DeviceList", "PositionList", "ItemList")  # names of the LIST form's list element, in the field


class EventError(MalformedMessage, ValueError):
    """A subscription event body or header of the wrong shape, or a bad argument (status 400)."""


class PositionForm(enum.Enum):
    SINGLE = "single"  # one fix per NOTIFY, its target as the root DeviceID (2016)
    LIST = "list"  # any number of fixes in a DeviceList (2022)


class SubState(enum.Enum):
    ACTIVE = "active"
    PENDING = "pending"
    TERMINATED = "terminated"


# --- validation helpers ----------------------------------------------------------------------------

_ID = re.compile(r"[0-9]{20}")
_DECIMAL = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,20})?")  # devices print doubles: 116.39742812345678
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,6})?")
_DIGITS = re.compile(r"[0-9]{1,10}")
_TOKEN = re.compile(r"[A-Za-z0-9!%'*+\-._`~]+")  # RFC 3261 token (an event package, a reason, an id)

# name, lower bound, upper bound, decimals written
_RANGES: dict[str, tuple[float, float, int]] = {
    "longitude": (-180.0, 180.0, 6),
    "latitude": (-90.0, 90.0, 6),
    "speed": (0.0, 10000.0, 2),
    "direction": (0.0, 360.0, 2),
    "altitude": (-20000.0, 100000.0, 2),
}


def _shown(value: object) -> str:
    return repr(value[:40]) if isinstance(value, str) else type(value).__name__


def _check_id(name: str, value: object) -> str:
    if not isinstance(value, str) or _ID.fullmatch(value) is None:
        raise EventError(f"{name} must be a 20-digit ID, got {_shown(value)}")
    return value


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError(f"{name} must be a number, got {type(value).__name__}")
    lo, hi, _ = _RANGES[name]
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        raise EventError(f"{name} must be {lo:g}..{hi:g}, got an int too large for a float") from None
    if not math.isfinite(number):
        raise EventError(f"{name} must be a finite number, got {number}")
    if not lo <= number <= hi:
        raise EventError(f"{name} must be {lo:g}..{hi:g}, got {number:g}")


def _check_time(value: object) -> str:
    if not isinstance(value, str) or (found := _TIME.fullmatch(value)) is None:
        raise EventError(f"time must be yyyy-MM-ddTHH:mm:ss[.fff], got {_shown(value)}")
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise EventError(f"time is not a valid date and time: {value!r}") from None
    return value


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    return check_int(name, value, lo, hi, EventError)


def _format(name: str, value: float) -> str:
    """``value`` with up to the field's decimals, trailing zeros dropped, never ``-0``."""
    text = f"{value:.{_RANGES[name][2]}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


# --- mobile positions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MobilePosition:
    """One position fix of a channel or device (A.2.5.6); every field checked on construction."""

    target_id: str  # 20-digit ID of the channel/device the fix belongs to
    time: str  # as sent: yyyy-MM-ddTHH:mm:ss with optional .fff (or a space instead of T)
    longitude: float  # -180..180
    latitude: float  # -90..90
    speed: float | None = None  # km/h, 0..10000
    direction: float | None = None  # degrees clockwise from north, 0..360
    altitude: float | None = None  # metres, -20000..100000

    def __post_init__(self) -> None:
        _check_id("target_id", self.target_id)
        _check_time(self.time)
        _check_number("longitude", self.longitude)
        _check_number("latitude", self.latitude)
        for name in ("speed", "direction", "altitude"):
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value)

    def fields(self) -> list[Field]:
        """Time, Longitude, Latitude and the optional Speed, Direction, Altitude (without DeviceID)."""
        out: list[Field] = [
            ("Time", self.time),
            ("Longitude", _format("longitude", self.longitude)),
            ("Latitude", _format("latitude", self.latitude)),
        ]
        for tag in ("Speed", "Direction", "Altitude"):
            value = getattr(self, tag.lower())
            if value is not None:
                out.append((tag, _format(tag.lower(), value)))
        return out


def _number(where: str, tag: str, node: Element, required: bool) -> float | None:
    found = node.child(tag)
    text = found.text.strip() if found is not None else ""
    if not text:
        if required:
            raise EventError(f"{where} lacks <{tag}>")
        return None
    if _DECIMAL.fullmatch(text) is None:
        raise EventError(f"{where}: {tag} is not a decimal number: {text[:40]!r}")
    return float(text)


def _position(where: str, target_id: str, node: Element) -> MobilePosition:
    """The fix in ``node`` (the root of a SINGLE body, or an Item); ``where`` prefixes every message."""
    found = node.child("Time")
    time = found.text.strip() if found is not None else ""
    if not time:
        raise EventError(f"{where} lacks <Time>")
    longitude = _number(where, "Longitude", node, True)
    latitude = _number(where, "Latitude", node, True)
    assert longitude is not None and latitude is not None
    speed = _number(where, "Speed", node, False)
    direction = _number(where, "Direction", node, False)
    altitude = _number(where, "Altitude", node, False)
    try:
        return MobilePosition(target_id, time, longitude, latitude, speed, direction, altitude)
    except EventError as exc:
        raise EventError(f"{where}: {exc.reason}") from None


def _position_list(doc: ManscdpDocument) -> tuple[str, Element] | None:
    for tag in LIST_TAGS:
        found = doc.find(tag)
        if found is not None:
            return tag, found
    return None


def parse_positions(doc: ManscdpDocument, *, max_items: int = MAX_ITEMS) -> list[MobilePosition]:
    """The fixes of a ``<Notify>`` (or ``<Response>``) ``<CmdType>MobilePosition``, in document order.

    One fix in the SINGLE form, one per ``Item`` in the LIST form (see the module docstring).
    """
    _check_int("max_items", max_items, 1, 1_000_000)
    if doc.root not in ("Notify", "Response"):
        raise EventError(f"MobilePosition must be a <Notify> or <Response>, got <{doc.root}>")
    if doc.cmd_type.lower() != "mobileposition":
        raise EventError(f"expected CmdType MobilePosition, got {doc.cmd_type[:40]!r}")
    listed = _position_list(doc)
    if listed is not None:
        tag, found = listed
        items = found.findall("Item")
        if items:
            if len(items) > max_items:
                raise EventError(f"MobilePosition {tag} has more than {max_items} items ({len(items)})")
            positions: list[MobilePosition] = []
            for index, item in enumerate(items, 1):
                where = f"MobilePosition item {index}"
                ident = item.child("DeviceID")
                target = ident.text.strip() if ident is not None else ""
                if not target:
                    raise EventError(f"{where} lacks <DeviceID>")
                if _ID.fullmatch(target) is None:
                    raise EventError(f"{where}: DeviceID is not a 20-digit ID: {target[:40]!r}")
                positions.append(_position(where, target, item))
            return positions
        if doc.find("Longitude") is None:
            raise EventError(f"MobilePosition {tag} has no Item")
    if _ID.fullmatch(doc.device_id) is None:
        raise EventError(f"MobilePosition DeviceID is not a 20-digit ID: {doc.device_id[:40]!r}")
    return [_position("MobilePosition", doc.device_id, doc.tree)]


def build_position_notify(sn: int, device_id: str, positions: Sequence[MobilePosition], *,
                          form: PositionForm = PositionForm.SINGLE, encoding: str = "GB2312") -> bytes:
    """A ``<Notify><CmdType>MobilePosition`` body: SINGLE (exactly one fix; its ``target_id`` is the root
    DeviceID and ``device_id`` is not written) or LIST (one or more fixes under ``device_id``)."""
    try:
        form = PositionForm(form)
    except ValueError:
        raise EventError(f"form must be single or list, got {_shown(form)}") from None
    if isinstance(positions, str | bytes) or not isinstance(positions, Sequence):
        raise EventError(f"positions must be a sequence of MobilePosition, got {type(positions).__name__}")
    for position in positions:
        if not isinstance(position, MobilePosition):
            raise EventError(f"positions must be MobilePosition, got {type(position).__name__}")
    if form is PositionForm.SINGLE:
        if len(positions) != 1:
            raise EventError(f"the single form carries exactly one position, got {len(positions)}")
        (only,) = positions
        return manscdp.encode("Notify", "MobilePosition", sn, only.target_id, only.fields(), encoding)
    _check_id("device_id", device_id)
    if not positions:
        raise EventError("the list form needs at least one position")
    items = [manscdp.element("Item", [("DeviceID", p.target_id), *p.fields()]) for p in positions]
    fields: list[Field] = [("SumNum", len(items)), manscdp.element("DeviceList", items, Num=len(items))]
    return manscdp.encode("Notify", "MobilePosition", sn, device_id, fields, encoding)


# --- subscription queries (SUBSCRIBE bodies) ---------------------------------------------------------


def position_query(sn: int, device_id: str, interval: int, *, encoding: str = "GB2312") -> bytes:
    """``<Query><CmdType>MobilePosition`` with ``<Interval>`` (seconds between reports, 1..3600)."""
    _check_id("device_id", device_id)
    fields: list[Field] = [("Interval", _check_int("interval", interval, 1, MAX_INTERVAL))]
    return manscdp.encode("Query", "MobilePosition", sn, device_id, fields, encoding)


def parse_position_query(doc: ManscdpDocument) -> int:
    """The ``<Interval>`` of a MobilePosition query, seconds (1..3600); absent or empty: 5."""
    if doc.cmd_type.lower() != "mobileposition":
        raise EventError(f"expected CmdType MobilePosition, got {doc.cmd_type[:40]!r}")
    text = doc.text("Interval")
    if not text:
        return DEFAULT_INTERVAL
    if _DIGITS.fullmatch(text) is None or not 1 <= int(text) <= MAX_INTERVAL:
        raise EventError(f"Interval must be 1..{MAX_INTERVAL} seconds, got {text[:40]!r}")
    return int(text)


def alarm_query(sn: int, device_id: str, *, start_priority: int = 1, end_priority: int = 4,
                alarm_method: int = 0, encoding: str = "GB2312") -> bytes:
    """``<Query><CmdType>Alarm`` (A.2.4.5, the body of ``SUBSCRIBE Event: Alarm``): priorities 1..4
    (``start_priority <= end_priority``; 0 means all) and the alarm method 0..7 (0: all)."""
    _check_id("device_id", device_id)
    start = _check_int("start_priority", start_priority, 0, 4)
    end = _check_int("end_priority", end_priority, 0, 4)
    if start and end and start > end:
        raise EventError(f"start_priority {start} is above end_priority {end}")
    fields: list[Field] = [
        ("StartAlarmPriority", start),
        ("EndAlarmPriority", end),
        ("AlarmMethod", _check_int("alarm_method", alarm_method, 0, 7)),
    ]
    return manscdp.encode("Query", "Alarm", sn, device_id, fields, encoding)


# --- headers -----------------------------------------------------------------------------------------


def _params(text: str) -> list[tuple[str, str]]:
    """``;name=value`` pairs (names lower-cased, values stripped and unquoted); a bare name has value ""."""
    out: list[tuple[str, str]] = []
    for part in text.split(";"):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name:
            out.append((name, value))
    return out


@dataclass(frozen=True, slots=True)
class EventHeader:
    """An ``Event`` header (RFC 6665 §8.2.1): the package lower-cased and its ``id`` parameter."""

    package: str  # "catalog", "alarm", "mobileposition", "presence"...
    id: str | None = None

    def __str__(self) -> str:
        return self.package if self.id is None else f"{self.package};id={self.id}"


def parse_event_header(value: str | None) -> EventHeader:
    """``"Catalog;id=5"`` -> ``EventHeader("catalog", "5")``; other parameters are ignored."""
    if value is None or not value.strip():
        raise EventError("Event header missing or empty")
    package, _, rest = value.partition(";")
    package = package.strip()
    if _TOKEN.fullmatch(package) is None:
        raise EventError(f"Event package is not a token: {package[:40]!r}")
    ident: str | None = None
    for name, param in _params(rest):
        if name == "id":
            ident = param or None
            break
    return EventHeader(package.lower(), ident)


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A ``Subscription-State`` header (RFC 6665 §8.2.3); ``reason`` lower-cased (``timeout``, ``noresource``...)."""

    state: SubState
    expires: int | None = None
    reason: str | None = None
    retry_after: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, SubState):
            raise EventError(f"state must be a SubState, got {type(self.state).__name__}")
        for name in ("expires", "retry_after"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 0, 2**32 - 1)
        if self.reason is not None and (not isinstance(self.reason, str) or _TOKEN.fullmatch(self.reason) is None):
            raise EventError(f"reason must be a token, got {_shown(self.reason)}")


def _seconds(name: str, text: str) -> int:
    if _DIGITS.fullmatch(text) is None:
        raise EventError(f"Subscription-State {name} is not a number of seconds: {text[:40]!r}")
    return int(text)


def parse_subscription_state(value: str | None) -> SubscriptionState | None:
    """``"active;expires=3600"``, ``"Terminated; Reason=Timeout"``...; None when the header is absent."""
    if value is None:
        return None
    head, _, rest = value.partition(";")
    head = head.strip().lower()
    if not head:
        raise EventError("Subscription-State is empty")
    try:
        state = SubState(head)
    except ValueError:
        raise EventError(f"unknown Subscription-State {head[:40]!r}") from None
    expires: int | None = None
    reason: str | None = None
    retry_after: int | None = None
    for name, param in _params(rest):
        if name == "expires" and expires is None:
            expires = _seconds("expires", param)
        elif name == "retry-after" and retry_after is None:
            retry_after = _seconds("retry-after", param)
        elif name == "reason" and reason is None:
            if _TOKEN.fullmatch(param) is None:
                raise EventError(f"Subscription-State reason is not a token: {param[:40]!r}")
            reason = param.lower()
    return SubscriptionState(state, expires, reason, retry_after)


def format_subscription_state(state: SubscriptionState) -> str:
    """``"active;expires=3600"``, ``"terminated;reason=timeout"``, ``"terminated;reason=giveup;retry-after=30"``."""
    if not isinstance(state, SubscriptionState):
        raise EventError(f"state must be a SubscriptionState, got {type(state).__name__}")
    out = state.state.value
    if state.reason is not None:
        out += f";reason={state.reason}"
    if state.expires is not None:
        out += f";expires={state.expires}"
    if state.retry_after is not None:
        out += f";retry-after={state.retry_after}"
    return out
