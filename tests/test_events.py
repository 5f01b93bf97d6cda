"""sip/events.py: mobile positions (both forms), subscription query bodies, Event and Subscription-State."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip import manscdp
from sip.errors import InvalidBody, MalformedMessage
from sip.events import (
    EventError,
    EventHeader,
    MobilePosition,
    PositionForm,
    SubscriptionState,
    SubState,
    alarm_query,
    build_position_notify,
    format_subscription_state,
    parse_event_header,
    parse_position_query,
    parse_positions,
    parse_subscription_state,
    position_query,
)

DEVICE = "34020000001320000001"
CH1 = "34020000001310001001"
CH2 = "34020000001310001002"
T = "2026-11-23T14:34:25"


def fix(target: str = CH1, **kw: object) -> MobilePosition:
    base: dict[str, object] = dict(time=T, longitude=116.397428, latitude=39.90923)
    base.update(kw)
    return MobilePosition(target, **base)  # type: ignore[arg-type]


def decode(body: bytes) -> manscdp.ManscdpDocument:
    return manscdp.decode(body)


def single_body(fields: str, device: str = CH1, encoding: str = "GB2312") -> bytes:
    return (f'<?xml version="1.0" encoding="{encoding}"?>\r\n<Notify>\r\n<CmdType>MobilePosition</CmdType>\r\n'
            f"<SN>3</SN>\r\n<DeviceID>{device}</DeviceID>\r\n{fields}</Notify>\r\n").encode("gb18030")


def list_body(items: str, tag: str = "DeviceList", num: str = "1") -> bytes:
    return (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>MobilePosition</CmdType>\r\n'
            f"<SN>4</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<SumNum>{num}</SumNum>\r\n"
            f'<{tag} Num="{num}">\r\n{items}</{tag}>\r\n</Notify>\r\n').encode()


def item(target: str = CH1, rest: str = f"<Time>{T}</Time><Longitude>117.2</Longitude><Latitude>31.8</Latitude>"
         ) -> str:
    return f"<Item><DeviceID>{target}</DeviceID>{rest}</Item>\r\n"


# --------------------------------------------------------------------------------------------------- exact text
def test_single_notify_exact_text() -> None:
    body = build_position_notify(7, DEVICE, [fix(speed=12.5, direction=90, altitude=50.25)])
    assert body == (
        b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>MobilePosition</CmdType>\r\n<SN>7</SN>\r\n'
        b"<DeviceID>34020000001310001001</DeviceID>\r\n<Time>2026-11-23T14:34:25</Time>\r\n"
        b"<Longitude>116.397428</Longitude>\r\n<Latitude>39.90923</Latitude>\r\n<Speed>12.5</Speed>\r\n"
        b"<Direction>90</Direction>\r\n<Altitude>50.25</Altitude>\r\n</Notify>\r\n"
    )
    # Optional fields left out when None; the device_id argument is not written in the single form.
    assert b"<Speed>" not in build_position_notify(1, DEVICE, [fix()])
    assert DEVICE.encode() not in build_position_notify(1, DEVICE, [fix()])


def test_list_notify_exact_text() -> None:
    body = build_position_notify(8, DEVICE, [fix(CH1, speed=0.0), fix(CH2, longitude=-0.5, latitude=-0.0000001)],
                                 form=PositionForm.LIST, encoding="UTF-8")
    assert body == (
        b'<?xml version="1.0" encoding="UTF-8"?>\r\n<Notify>\r\n<CmdType>MobilePosition</CmdType>\r\n<SN>8</SN>\r\n'
        b"<DeviceID>34020000001320000001</DeviceID>\r\n<SumNum>2</SumNum>\r\n<DeviceList Num=\"2\">\r\n"
        b"<Item>\r\n<DeviceID>34020000001310001001</DeviceID>\r\n<Time>2026-11-23T14:34:25</Time>\r\n"
        b"<Longitude>116.397428</Longitude>\r\n<Latitude>39.90923</Latitude>\r\n<Speed>0</Speed>\r\n</Item>\r\n"
        b"<Item>\r\n<DeviceID>34020000001310001002</DeviceID>\r\n<Time>2026-11-23T14:34:25</Time>\r\n"
        b"<Longitude>-0.5</Longitude>\r\n<Latitude>0</Latitude>\r\n</Item>\r\n</DeviceList>\r\n</Notify>\r\n"
    )


def test_number_formatting_rounds_to_the_field_precision() -> None:
    body = build_position_notify(1, DEVICE, [fix(longitude=117.2, latitude=31.8000004, speed=3.14159,
                                                 direction=359.999, altitude=-12.0)])
    doc = decode(body)
    assert (doc.text("Longitude"), doc.text("Latitude")) == ("117.2", "31.8")
    assert (doc.text("Speed"), doc.text("Direction"), doc.text("Altitude")) == ("3.14", "360", "-12")


def test_query_bodies() -> None:
    assert position_query(5, DEVICE, 1) == (
        b'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>MobilePosition</CmdType>\r\n<SN>5</SN>\r\n'
        b"<DeviceID>34020000001320000001</DeviceID>\r\n<Interval>1</Interval>\r\n</Query>\r\n"
    )
    assert alarm_query(6, DEVICE, encoding="UTF-8") == (
        b'<?xml version="1.0" encoding="UTF-8"?>\r\n<Query>\r\n<CmdType>Alarm</CmdType>\r\n<SN>6</SN>\r\n'
        b"<DeviceID>34020000001320000001</DeviceID>\r\n<StartAlarmPriority>1</StartAlarmPriority>\r\n"
        b"<EndAlarmPriority>4</EndAlarmPriority>\r\n<AlarmMethod>0</AlarmMethod>\r\n</Query>\r\n"
    )
    doc = decode(alarm_query(6, DEVICE, start_priority=2, end_priority=2, alarm_method=5))
    assert (doc.text("StartAlarmPriority"), doc.text("EndAlarmPriority"), doc.text("AlarmMethod")) == ("2", "2", "5")


@pytest.mark.parametrize(("kw", "message"), [
    ({"start_priority": 5}, "start_priority must be 0..4, got 5"),
    ({"end_priority": -1}, "end_priority must be 0..4, got -1"),
    ({"start_priority": 3, "end_priority": 2}, "start_priority 3 is above end_priority 2"),
    ({"alarm_method": 8}, "alarm_method must be 0..7, got 8"),
    ({"alarm_method": True}, "alarm_method must be an int 0..7, got bool"),
])
def test_alarm_query_refusals(kw: dict[str, int], message: str) -> None:
    with pytest.raises(EventError) as exc:
        alarm_query(1, DEVICE, **kw)  # type: ignore[arg-type]
    assert exc.value.reason == message


def test_position_query_refusals() -> None:
    for interval, message in ((0, "interval must be 1..3600, got 0"), (3601, "interval must be 1..3600, got 3601"),
                              ("5", "interval must be an int 1..3600, got str")):
        with pytest.raises(EventError) as exc:
            position_query(1, DEVICE, interval)  # type: ignore[arg-type]
        assert exc.value.reason == message
    with pytest.raises(EventError, match="device_id must be a 20-digit ID, got 'abc'"):
        position_query(1, "abc", 5)


def test_parse_position_query() -> None:
    assert parse_position_query(decode(position_query(1, DEVICE, 30))) == 30
    absent = manscdp.encode("Query", "MobilePosition", 1, DEVICE)
    assert parse_position_query(decode(absent)) == 5
    empty = manscdp.encode("Query", "MobilePosition", 1, DEVICE, [("Interval", "")])
    assert parse_position_query(decode(empty)) == 5
    for bad in ("0", "3601", "abc", "-1", "1.5", "99999999999"):
        body = manscdp.encode("Query", "MobilePosition", 1, DEVICE, [("Interval", bad)])
        with pytest.raises(EventError) as exc:
            parse_position_query(decode(body))
        assert exc.value.reason == f"Interval must be 1..3600 seconds, got {bad!r}"
    with pytest.raises(EventError, match="expected CmdType MobilePosition, got 'Catalog'"):
        parse_position_query(decode(manscdp.encode("Query", "Catalog", 1, DEVICE)))


# --------------------------------------------------------------------------------------------------- parsing
def test_parse_single_gb2312_and_space_time() -> None:
    body = single_body("<Time>2026-11-23 14:34:25.123</Time>\r\n<Longitude>116.397428</Longitude>\r\n"
                       "<Latitude>-39.9</Latitude>\r\n<Speed></Speed>\r\n<Direction>270.5</Direction>\r\n")
    (p,) = parse_positions(decode(body))
    assert p == MobilePosition(CH1, "2026-11-23 14:34:25.123", 116.397428, -39.9, None, 270.5, None)


def test_parse_utf8_with_chinese_and_response_root() -> None:
    body = ('<?xml version="1.0" encoding="UTF-8"?><Response><CmdType>MobilePosition</CmdType><SN>1</SN>'
            f"<DeviceID>{CH1}</DeviceID><Name>北京</Name><Time>{T}</Time><Longitude>1</Longitude>"
            "<Latitude>2</Latitude></Response>").encode()
    doc = decode(body)
    assert doc.encoding == "UTF-8"
    assert parse_positions(doc) == [MobilePosition(CH1, T, 1.0, 2.0)]


@pytest.mark.parametrize("tag", ["DeviceList", "PositionList", "ItemList"])
def test_parse_list_variants_and_num_not_trusted(tag: str) -> None:
    body = list_body(item(CH1) + item(CH2), tag=tag, num="7")
    positions = parse_positions(decode(body))
    assert [p.target_id for p in positions] == [CH1, CH2]
    assert positions[0] == MobilePosition(CH1, T, 117.2, 31.8)


def test_list_with_exactly_max_items_and_one_more() -> None:
    assert len(parse_positions(decode(list_body(item() * 3)), max_items=3)) == 3
    with pytest.raises(EventError) as exc:
        parse_positions(decode(list_body(item() * 4)), max_items=3)
    assert exc.value.reason == "MobilePosition DeviceList has more than 3 items (4)"
    with pytest.raises(EventError, match="more than 1000 items"):
        parse_positions(decode(list_body(item() * 1001)))
    assert len(parse_positions(decode(list_body(item() * 1000)))) == 1000


@pytest.mark.parametrize(("items", "message"), [
    ("", "MobilePosition DeviceList has no Item"),
    (item("123"), "MobilePosition item 1: DeviceID is not a 20-digit ID: '123'"),
    (item(CH1) + item("3402000000131000100X"),
     "MobilePosition item 2: DeviceID is not a 20-digit ID: '3402000000131000100X'"),
    (item(CH1) + "<Item><Time>x</Time></Item>", "MobilePosition item 2 lacks <DeviceID>"),
    (item(rest="<Longitude>1</Longitude><Latitude>1</Latitude>"), "MobilePosition item 1 lacks <Time>"),
    (item(rest=f"<Time>{T}</Time><Latitude>1</Latitude>"), "MobilePosition item 1 lacks <Longitude>"),
    (item(rest=f"<Time>{T}</Time><Longitude>1</Longitude><Latitude></Latitude>"),
     "MobilePosition item 1 lacks <Latitude>"),
    (item(rest=f"<Time>{T}</Time><Longitude>1e2</Longitude><Latitude>1</Latitude>"),
     "MobilePosition item 1: Longitude is not a decimal number: '1e2'"),
    (item(rest=f"<Time>{T}</Time><Longitude>181</Longitude><Latitude>1</Latitude>"),
     "MobilePosition item 1: longitude must be -180..180, got 181"),
    (item(rest=f"<Time>{T}</Time><Longitude>1</Longitude><Latitude>1</Latitude><Speed>-1</Speed>"),
     "MobilePosition item 1: speed must be 0..10000, got -1"),
    (item(rest="<Time>2026-13-01T00:00:00</Time><Longitude>1</Longitude><Latitude>1</Latitude>"),
     "MobilePosition item 1: time is not a valid date and time: '2026-13-01T00:00:00'"),
    (item(rest="<Time>yesterday</Time><Longitude>1</Longitude><Latitude>1</Latitude>"),
     "MobilePosition item 1: time must be yyyy-MM-ddTHH:mm:ss[.fff], got 'yesterday'"),
])
def test_list_refusals(items: str, message: str) -> None:
    with pytest.raises(EventError) as exc:
        parse_positions(decode(list_body(items)))
    assert exc.value.reason == message
    assert isinstance(exc.value, MalformedMessage) and exc.value.status == 400


@pytest.mark.parametrize("number", ["1e2", "nan", "NaN", "inf", "-inf", "+1", "0x10", "1.", ".5", "1_000", "١",
                                    "1.2.3", "--1", " 1 2"])
def test_non_decimal_numbers_refused(number: str) -> None:
    body = single_body(f"<Time>{T}</Time><Longitude>{number}</Longitude><Latitude>1</Latitude>")
    with pytest.raises(EventError) as exc:
        parse_positions(decode(body))
    assert exc.value.reason == f"MobilePosition: Longitude is not a decimal number: {number.strip()!r}"


@pytest.mark.parametrize(("fields", "message"), [
    ("<Longitude>1</Longitude><Latitude>1</Latitude>", "MobilePosition lacks <Time>"),
    (f"<Time>{T}</Time><Latitude>1</Latitude>", "MobilePosition lacks <Longitude>"),
    (f"<Time>{T}</Time><Longitude>1</Longitude>", "MobilePosition lacks <Latitude>"),
    (f"<Time>{T}</Time><Longitude>1</Longitude><Latitude>90.5</Latitude>",
     "MobilePosition: latitude must be -90..90, got 90.5"),
    (f"<Time>{T}</Time><Longitude>1</Longitude><Latitude>1</Latitude><Direction>361</Direction>",
     "MobilePosition: direction must be 0..360, got 361"),
    (f"<Time>{T}</Time><Longitude>1</Longitude><Latitude>1</Latitude><Altitude>-20001</Altitude>",
     "MobilePosition: altitude must be -20000..100000, got -20001"),
    (f"<Time>{T}</Time><Longitude>1</Longitude><Latitude>1</Latitude><Speed>10000.5</Speed>",
     "MobilePosition: speed must be 0..10000, got 10000.5"),
    (f"<Time>{T}Z</Time><Longitude>1</Longitude><Latitude>1</Latitude>",
     f"MobilePosition: time must be yyyy-MM-ddTHH:mm:ss[.fff], got '{T}Z'"),
])
def test_single_refusals(fields: str, message: str) -> None:
    with pytest.raises(EventError) as exc:
        parse_positions(decode(single_body(fields)))
    assert exc.value.reason == message


def test_single_bad_device_id_and_wrong_document() -> None:
    body = single_body(f"<Time>{T}</Time><Longitude>1</Longitude><Latitude>1</Latitude>", device="abc")
    with pytest.raises(EventError, match="MobilePosition DeviceID is not a 20-digit ID: 'abc'"):
        parse_positions(decode(body))
    with pytest.raises(EventError, match="expected CmdType MobilePosition, got 'Alarm'"):
        parse_positions(decode(manscdp.encode("Notify", "Alarm", 1, CH1)))
    with pytest.raises(EventError, match=r"must be a <Notify> or <Response>, got <Query>"):
        parse_positions(decode(position_query(1, DEVICE, 5)))
    with pytest.raises(EventError, match="max_items must be 1..1000000, got 0"):
        parse_positions(decode(list_body(item())), max_items=0)


def test_empty_list_beside_a_single_fix_is_the_single_form() -> None:
    body = single_body(f'<Time>{T}</Time><Longitude>1</Longitude><Latitude>1</Latitude><DeviceList Num="0"/>')
    assert parse_positions(decode(body)) == [MobilePosition(CH1, T, 1.0, 1.0)]


def test_hostile_xml_is_refused_before_parsing() -> None:
    body = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Notify><CmdType>MobilePosition</CmdType>'
            b"<SN>1</SN><DeviceID>34020000001310001001</DeviceID><Time>&a;</Time></Notify>")
    with pytest.raises(InvalidBody, match="DTD not allowed"):
        parse_positions(manscdp.decode(body))


# --------------------------------------------------------------------------------------------------- construction
@pytest.mark.parametrize(("kw", "message"), [
    ({"longitude": math.nan}, "longitude must be a finite number, got nan"),
    ({"latitude": math.inf}, "latitude must be a finite number, got inf"),
    ({"speed": -math.inf}, "speed must be a finite number, got -inf"),
    ({"longitude": -180.000001}, "longitude must be -180..180, got -180"),
    ({"longitude": 10**400}, "longitude must be -180..180, got an int too large for a float"),
    ({"latitude": "39.9"}, "latitude must be a number, got str"),
    ({"direction": True}, "direction must be a number, got bool"),
    ({"altitude": 100000.5}, "altitude must be -20000..100000, got 100000"),
    ({"time": "2026-02-30T00:00:00"}, "time is not a valid date and time: '2026-02-30T00:00:00'"),
    ({"time": 0}, "time must be yyyy-MM-ddTHH:mm:ss[.fff], got int"),
])
def test_mobile_position_refusals(kw: dict[str, object], message: str) -> None:
    with pytest.raises(EventError) as exc:
        fix(**kw)
    assert exc.value.reason == message
    assert isinstance(exc.value, ValueError)


def test_mobile_position_bad_target() -> None:
    with pytest.raises(EventError, match="target_id must be a 20-digit ID, got '3402'"):
        MobilePosition("3402", T, 1.0, 1.0)
    assert MobilePosition(CH1, T, -180, 90, 0, 360, -20000).longitude == -180  # bounds are inclusive


def test_build_refusals() -> None:
    with pytest.raises(EventError, match="exactly one position, got 2"):
        build_position_notify(1, DEVICE, [fix(), fix()])
    with pytest.raises(EventError, match="exactly one position, got 0"):
        build_position_notify(1, DEVICE, [])
    with pytest.raises(EventError, match="the list form needs at least one position"):
        build_position_notify(1, DEVICE, [], form=PositionForm.LIST)
    with pytest.raises(EventError, match="device_id must be a 20-digit ID"):
        build_position_notify(1, "x", [fix()], form=PositionForm.LIST)
    with pytest.raises(EventError, match="form must be single or list, got 'both'"):
        build_position_notify(1, DEVICE, [fix()], form="both")  # type: ignore[arg-type]
    with pytest.raises(EventError, match="positions must be MobilePosition, got dict"):
        build_position_notify(1, DEVICE, [{}])  # type: ignore[list-item]
    # The form may be given by its value (configuration strings).
    assert b"<DeviceList" in build_position_notify(1, DEVICE, [fix()], form="list")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- round trips
ids = st.integers(0, 999).map(lambda n: f"34020000001310001{n:03d}")
times = st.builds(lambda y, mo, d, h, mi, s, sep, ms: f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{ms}",
                  st.integers(1970, 2099), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23),
                  st.integers(0, 59), st.integers(0, 59), st.sampled_from(["T", " "]),
                  st.sampled_from(["", ".1", ".123"]))


def scaled(lo: int, hi: int, places: int) -> st.SearchStrategy[float]:
    """Values the wire keeps exactly: integers of 10**-places."""
    return st.integers(lo * 10**places, hi * 10**places).map(lambda n: n / 10**places)


positions = st.builds(
    MobilePosition, ids, times, scaled(-180, 180, 6), scaled(-90, 90, 6),
    st.none() | scaled(0, 10000, 2), st.none() | scaled(0, 360, 2), st.none() | scaled(-20000, 100000, 2),
)
encodings = st.sampled_from(["GB2312", "GB18030", "UTF-8"])


@given(positions, st.integers(0, 2**31), encodings)
def test_single_round_trip(position: MobilePosition, sn: int, encoding: str) -> None:
    doc = decode(build_position_notify(sn, DEVICE, [position], encoding=encoding))
    assert (doc.sn, doc.encoding, doc.device_id) == (sn, encoding, position.target_id)
    assert parse_positions(doc) == [position]


@given(st.lists(positions, min_size=1, max_size=20), encodings)
def test_list_round_trip(fixes: list[MobilePosition], encoding: str) -> None:
    doc = decode(build_position_notify(9, DEVICE, fixes, form=PositionForm.LIST, encoding=encoding))
    assert doc.device_id == DEVICE and doc.text("SumNum") == str(len(fixes))
    assert parse_positions(doc) == fixes


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30))
def test_numbers_either_parse_or_raise_event_error(text: str) -> None:
    body = manscdp.encode("Notify", "MobilePosition", 1, CH1, [("Time", T), ("Longitude", text), ("Latitude", "1")])
    try:
        doc = decode(body)
    except InvalidBody:
        return
    try:
        (p,) = parse_positions(doc)
    except EventError:
        return
    assert -180 <= p.longitude <= 180


# --------------------------------------------------------------------------------------------------- headers
@pytest.mark.parametrize(("value", "expected"), [
    ("Catalog;id=5", EventHeader("catalog", "5")),
    ("Catalog", EventHeader("catalog", None)),
    ("  MobilePosition ; ID = 77 ; other=x", EventHeader("mobileposition", "77")),
    ("Alarm;foo;id=\"9\"", EventHeader("alarm", "9")),
    ("presence;id=", EventHeader("presence", None)),
])
def test_parse_event_header(value: str, expected: EventHeader) -> None:
    assert parse_event_header(value) == expected


def test_event_header_refusals_and_str() -> None:
    for value, message in ((None, "Event header missing or empty"), ("", "Event header missing or empty"),
                           ("  ", "Event header missing or empty"), (";id=1", "Event package is not a token: ''"),
                           ("Cat alog", "Event package is not a token: 'Cat alog'")):
        with pytest.raises(EventError) as exc:
            parse_event_header(value)
        assert exc.value.reason == message
    assert str(EventHeader("catalog", "5")) == "catalog;id=5"
    assert str(EventHeader("alarm")) == "alarm"


@pytest.mark.parametrize(("value", "expected"), [
    ("active;expires=3600", SubscriptionState(SubState.ACTIVE, 3600)),
    ("Active ; Expires=60", SubscriptionState(SubState.ACTIVE, 60)),
    ("pending", SubscriptionState(SubState.PENDING)),
    ("terminated;reason=timeout", SubscriptionState(SubState.TERMINATED, reason="timeout")),
    ("TERMINATED;Reason=Giveup;Retry-After=30;x-vendor=1", SubscriptionState(SubState.TERMINATED, None, "giveup", 30)),
    ("active;expires=0;expires=9", SubscriptionState(SubState.ACTIVE, 0)),
])
def test_parse_subscription_state(value: str, expected: SubscriptionState) -> None:
    assert parse_subscription_state(value) == expected


def test_subscription_state_absent_and_refusals() -> None:
    assert parse_subscription_state(None) is None
    for value, message in (("", "Subscription-State is empty"), (" ;expires=1", "Subscription-State is empty"),
                           ("bogus", "unknown Subscription-State 'bogus'"),
                           ("active;expires=abc", "Subscription-State expires is not a number of seconds: 'abc'"),
                           ("active;expires=-1", "Subscription-State expires is not a number of seconds: '-1'"),
                           ("terminated;retry-after=", "Subscription-State retry-after is not a number of seconds: ''"),
                           ("terminated;reason=a b", "Subscription-State reason is not a token: 'a b'")):
        with pytest.raises(EventError) as exc:
            parse_subscription_state(value)
        assert exc.value.reason == message


def test_format_subscription_state() -> None:
    assert format_subscription_state(SubscriptionState(SubState.ACTIVE, 3600)) == "active;expires=3600"
    assert format_subscription_state(SubscriptionState(SubState.TERMINATED, reason="timeout")) == \
        "terminated;reason=timeout"
    assert format_subscription_state(SubscriptionState(SubState.PENDING)) == "pending"
    full = SubscriptionState(SubState.TERMINATED, 0, "giveup", 30)
    assert format_subscription_state(full) == "terminated;reason=giveup;expires=0;retry-after=30"
    assert parse_subscription_state(format_subscription_state(full)) == full
    with pytest.raises(EventError, match="expires must be 0..4294967295, got -1"):
        SubscriptionState(SubState.ACTIVE, -1)
    with pytest.raises(EventError, match="state must be a SubState, got str"):
        SubscriptionState("active")  # type: ignore[arg-type]
    with pytest.raises(EventError, match="reason must be a token, got 'no way'"):
        SubscriptionState(SubState.TERMINATED, reason="no way")
