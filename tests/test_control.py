"""Device control/config bodies and their answers (sip/control.py): exact XML, device answers, refusals."""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip import control, manscdp
from sip.control import (
    ConfigDownload,
    ConfigType,
    ControlError,
    ControlResponse,
    DragZoom,
    GuardAction,
    Preset,
    PresetList,
    RecordAction,
    Result,
)
from sip.errors import InvalidBody, LocalProtocolError
from sip.manscdp import BodyTooLarge
from sip.message import SipRequest, parse_message
from sip.ptz import PtzCommand, PtzError
from tests.vectors import load

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

IPC = "34020000001320000001"
NVR = "34020000001180000001"
CHANNEL = "34020000001310000001"
PLATFORM = "34020000002000000001"


def expected(root: str, cmd_type: str, sn: int, device_id: str, lines: list[str], encoding: str = "GB2312") -> bytes:
    """The body as devices expect it, written out independently of sip/manscdp.py (real gb2312 codec)."""
    codec = {"GB2312": "gb2312", "GB18030": "gb18030", "UTF-8": "utf-8"}[encoding]
    text = (f'<?xml version="1.0" encoding="{encoding}"?>\r\n<{root}>\r\n<CmdType>{cmd_type}</CmdType>\r\n'
            f"<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n")
    text += "".join(line + "\r\n" for line in lines) + f"</{root}>\r\n"
    return text.encode(codec)


def vector_body(name: str) -> bytes:
    msg = parse_message(load(f"sip/{name}.txt"))
    assert isinstance(msg, SipRequest) and msg.method == "MESSAGE"
    return msg.body


# --- DeviceControl: exact bytes -----------------------------------------------------------------------


def test_ptz_control_is_byte_for_byte_what_wvp_sends() -> None:
    body = control.ptz_control(17, CHANNEL, PtzCommand.move(pan=-1, pan_speed=0x50))
    assert body == (
        b'<?xml version="1.0" encoding="GB2312"?>\r\n'
        b"<Control>\r\n"
        b"<CmdType>DeviceControl</CmdType>\r\n"
        b"<SN>17</SN>\r\n"
        b"<DeviceID>34020000001310000001</DeviceID>\r\n"
        b"<PTZCmd>A50F010250000007</PTZCmd>\r\n"  # left 0x02 speed 0x50: 0xB5 + 0x02 + 0x50 = 0x107 -> 0x07
        b"<Info>\r\n"
        b"<ControlPriority>5</ControlPriority>\r\n"
        b"</Info>\r\n"
        b"</Control>\r\n"
    )


def test_ptz_control_options() -> None:
    stop = PtzCommand.stop()
    assert control.ptz_control(1, CHANNEL, stop, priority=None) == expected(
        "Control", "DeviceControl", 1, CHANNEL, ["<PTZCmd>A50F0100000000B5</PTZCmd>"])
    assert control.ptz_control(2, CHANNEL, stop, priority=1, encoding="UTF-8") == expected(
        "Control", "DeviceControl", 2, CHANNEL,
        ["<PTZCmd>A50F0100000000B5</PTZCmd>", "<Info>", "<ControlPriority>1</ControlPriority>", "</Info>"], "UTF-8")
    # hex relayed from an upper platform is checked and written upper case
    assert control.ptz_control(3, CHANNEL, " a50f01820003003a ") == control.ptz_control(
        3, CHANNEL, PtzCommand.preset_call(3))
    with pytest.raises(PtzError, match="^PTZCmd checksum is 3B, expected 3A$"):
        control.ptz_control(3, CHANNEL, "A50F01820003003B")


SIMPLE_CONTROLS: list[tuple[Callable[[str], bytes], list[str]]] = [
    (lambda enc: control.teleboot(5, IPC, encoding=enc), ["<TeleBoot>Boot</TeleBoot>"]),
    (lambda enc: control.record_control(5, IPC, RecordAction.RECORD, encoding=enc), ["<RecordCmd>Record</RecordCmd>"]),
    (lambda enc: control.record_control(5, IPC, "StopRecord", encoding=enc), ["<RecordCmd>StopRecord</RecordCmd>"]),
    (lambda enc: control.guard_control(5, IPC, GuardAction.SET, encoding=enc), ["<GuardCmd>SetGuard</GuardCmd>"]),
    (lambda enc: control.guard_control(5, IPC, "ResetGuard", encoding=enc), ["<GuardCmd>ResetGuard</GuardCmd>"]),
    (lambda enc: control.alarm_reset(5, IPC, encoding=enc), ["<AlarmCmd>ResetAlarm</AlarmCmd>"]),
    (lambda enc: control.alarm_reset(5, IPC, alarm_method="25", encoding=enc),
     ["<AlarmCmd>ResetAlarm</AlarmCmd>", "<Info>", "<AlarmMethod>25</AlarmMethod>", "</Info>"]),
    (lambda enc: control.alarm_reset(5, IPC, alarm_method=2, alarm_type=1, encoding=enc),
     ["<AlarmCmd>ResetAlarm</AlarmCmd>", "<Info>", "<AlarmMethod>2</AlarmMethod>", "<AlarmType>1</AlarmType>",
      "</Info>"]),
    (lambda enc: control.iframe_request(5, IPC, encoding=enc), ["<IFameCmd>Send</IFameCmd>"]),
    (lambda enc: control.iframe_request(5, IPC, spelling_2016=False, encoding=enc), ["<IFrameCmd>Send</IFrameCmd>"]),
    (lambda enc: control.home_position(5, IPC, True, reset_time=30, preset_index=1, encoding=enc),
     ["<HomePosition>", "<Enabled>1</Enabled>", "<ResetTime>30</ResetTime>", "<PresetIndex>1</PresetIndex>",
      "</HomePosition>"]),
    (lambda enc: control.home_position(5, IPC, True, reset_time=1, preset_index=0, encoding=enc),
     ["<HomePosition>", "<Enabled>1</Enabled>", "<ResetTime>1</ResetTime>", "<PresetIndex>0</PresetIndex>",
      "</HomePosition>"]),
    (lambda enc: control.home_position(5, IPC, False, encoding=enc),
     ["<HomePosition>", "<Enabled>0</Enabled>", "</HomePosition>"]),
    (lambda enc: control.drag_zoom(5, IPC, DragZoom(1920, 1080, 960, 540, 400, 300), zoom_in=True, encoding=enc),
     ["<DragZoomIn>", "<Length>1920</Length>", "<Width>1080</Width>", "<MidPointX>960</MidPointX>",
      "<MidPointY>540</MidPointY>", "<LengthX>400</LengthX>", "<LengthY>300</LengthY>", "</DragZoomIn>"]),
    (lambda enc: control.drag_zoom(5, IPC, DragZoom(704, 576, 0, 576, 704, 0), zoom_in=False, encoding=enc),
     ["<DragZoomOut>", "<Length>704</Length>", "<Width>576</Width>", "<MidPointX>0</MidPointX>",
      "<MidPointY>576</MidPointY>", "<LengthX>704</LengthX>", "<LengthY>0</LengthY>", "</DragZoomOut>"]),
]


@pytest.mark.parametrize("encoding", ["GB2312", "UTF-8", "GB18030"])
@pytest.mark.parametrize(("build", "lines"), SIMPLE_CONTROLS, ids=[lines[0] for _, lines in SIMPLE_CONTROLS])
def test_device_control_exact_bytes(build: Callable[[str], bytes], lines: list[str], encoding: str) -> None:
    body = build(encoding)
    assert body == expected("Control", "DeviceControl", 5, IPC, lines, encoding)
    doc = manscdp.decode(body)
    assert (doc.root, doc.cmd_type, doc.sn, doc.device_id, doc.encoding) == (
        "Control", "DeviceControl", 5, IPC, encoding)


def test_iframe_request_is_what_streams_sends() -> None:
    # gateway/streams.py builds its keyframe request by hand; the builder gives the same bytes.
    assert control.iframe_request(9, CHANNEL, encoding="UTF-8") == manscdp.encode(
        "Control", "DeviceControl", 9, CHANNEL, [("IFameCmd", "Send")], encoding="UTF-8")


# --- DeviceConfig and queries: exact bytes --------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["GB2312", "UTF-8"])
def test_device_config_basic_param_with_a_chinese_name(encoding: str) -> None:
    body = control.device_config_basic(21, IPC, name="东门球机", expiration=3600, heartbeat_interval=60,
                                       heartbeat_count=3, encoding=encoding)
    assert body == expected("Control", "DeviceConfig", 21, IPC, [
        "<BasicParam>", "<Name>东门球机</Name>", "<Expiration>3600</Expiration>",
        "<HeartBeatInterval>60</HeartBeatInterval>", "<HeartBeatCount>3</HeartBeatCount>", "</BasicParam>",
    ], encoding)
    name = "东门球机".encode("gb2312" if encoding == "GB2312" else "utf-8")
    assert b"<Name>" + name + b"</Name>" in body
    assert manscdp.decode(body).text("BasicParam/Name") == "东门球机"


def test_device_config_basic_param_single_fields() -> None:
    assert control.device_config_basic(1, IPC, heartbeat_interval=30) == expected(
        "Control", "DeviceConfig", 1, IPC, ["<BasicParam>", "<HeartBeatInterval>30</HeartBeatInterval>",
                                            "</BasicParam>"])
    assert control.device_config_basic(2, IPC, name="A&B <1>") == expected(
        "Control", "DeviceConfig", 2, IPC, ["<BasicParam>", "<Name>A&amp;B &lt;1&gt;</Name>", "</BasicParam>"])


@pytest.mark.parametrize("encoding", ["GB2312", "UTF-8"])
def test_config_download_query(encoding: str) -> None:
    assert control.config_download_query(4, IPC, ConfigType.BASIC_PARAM, encoding=encoding) == expected(
        "Query", "ConfigDownload", 4, IPC, ["<ConfigType>BasicParam</ConfigType>"], encoding)
    both = control.config_download_query(5, IPC, ConfigType.BASIC_PARAM, "VideoParamOpt", encoding=encoding)
    assert both == expected("Query", "ConfigDownload", 5, IPC, ["<ConfigType>BasicParam/VideoParamOpt</ConfigType>"],
                            encoding)


@pytest.mark.parametrize("encoding", ["GB2312", "UTF-8"])
def test_preset_query(encoding: str) -> None:
    assert control.preset_query(6, CHANNEL, encoding=encoding) == expected("Query", "PresetQuery", 6, CHANNEL, [],
                                                                           encoding)


def test_builders_follow_devices_query_shape() -> None:
    # gateway/devices.py: manscdp.encode("Query", cmd_type, sn, device_id, encoding=...)
    assert control.preset_query(7, IPC) == manscdp.encode("Query", "PresetQuery", 7, IPC, encoding="GB2312")


# --- builder refusals -----------------------------------------------------------------------------------

BAD_BUILDS: list[tuple[Callable[[], bytes], str]] = [
    (lambda: control.teleboot(1, ""), "device_id must be 1..32 ASCII letters or digits, got ''"),
    (lambda: control.teleboot(1, "3402 0001"), "device_id must be 1..32 ASCII letters or digits, got '3402 0001'"),
    (lambda: control.teleboot(1, "x" * 33), f"device_id must be 1..32 ASCII letters or digits, got {'x' * 33!r}"),
    (lambda: control.teleboot(1, "<a>"), "device_id must be 1..32 ASCII letters or digits, got '<a>'"),
    (lambda: control.teleboot(1, "３４０２"), "device_id must be 1..32 ASCII letters or digits, got '３４０２'"),
    (lambda: control.teleboot(1, 34020000001320000001),  # type: ignore[arg-type]
     "device_id must be 1..32 ASCII letters or digits, got int"),
    (lambda: control.ptz_control(1, IPC, PtzCommand.stop(), priority=0), "priority must be 1..5, got 0"),
    (lambda: control.ptz_control(1, IPC, PtzCommand.stop(), priority=6), "priority must be 1..5, got 6"),
    (lambda: control.ptz_control(1, IPC, 7), "cmd must be a PtzCommand or its hex, got int"),  # type: ignore[arg-type]
    (lambda: control.record_control(1, IPC, "record"), "RecordCmd must be one of Record, StopRecord, got 'record'"),
    (lambda: control.record_control(1, IPC, 1),  # type: ignore[arg-type]
     "RecordCmd must be one of Record, StopRecord, got int"),
    (lambda: control.guard_control(1, IPC, "Guard"), "GuardCmd must be one of SetGuard, ResetGuard, got 'Guard'"),
    (lambda: control.alarm_reset(1, IPC, alarm_method="8"), "alarm_method must be 1..8 digits 0-7, got '8'"),
    (lambda: control.alarm_reset(1, IPC, alarm_method=""), "alarm_method must be 1..8 digits 0-7, got ''"),
    (lambda: control.alarm_reset(1, IPC, alarm_method=-1), "alarm_method must be 1..8 digits 0-7, got '-1'"),
    (lambda: control.alarm_reset(1, IPC, alarm_method=True), "alarm_method must be a str or int, got bool"),
    (lambda: control.alarm_reset(1, IPC, alarm_type=1), "alarm_type needs alarm_method"),
    (lambda: control.alarm_reset(1, IPC, alarm_method=2, alarm_type=-1), "alarm_type must be 0..999, got -1"),
    (lambda: control.iframe_request(1, IPC, spelling_2016=1),  # type: ignore[arg-type]
     "spelling_2016 must be a bool, got int"),
    (lambda: control.home_position(1, IPC, 1), "enabled must be a bool, got int"),  # type: ignore[arg-type]
    (lambda: control.home_position(1, IPC, True, reset_time=30),
     "an enabled home position needs reset_time and preset_index"),
    (lambda: control.home_position(1, IPC, True, preset_index=1),
     "an enabled home position needs reset_time and preset_index"),
    (lambda: control.home_position(1, IPC, True, reset_time=0, preset_index=1),
     "reset_time must be 1..2147483647, got 0"),
    (lambda: control.home_position(1, IPC, True, reset_time=30, preset_index=256),
     "preset_index must be 0..255, got 256"),
    (lambda: control.home_position(1, IPC, False, preset_index=1),
     "reset_time and preset_index apply only to an enabled home position"),
    (lambda: control.drag_zoom(1, IPC, DragZoom(0, 1, 0, 0, 0, 0), zoom_in=True), "length must be 1..65535, got 0"),
    (lambda: control.drag_zoom(1, IPC, DragZoom(10, 70000, 0, 0, 0, 0), zoom_in=True),
     "width must be 1..65535, got 70000"),
    (lambda: control.drag_zoom(1, IPC, DragZoom(100, 50, 101, 0, 0, 0), zoom_in=True), "mid_x must be 0..100, got 101"),
    (lambda: control.drag_zoom(1, IPC, DragZoom(100, 50, 0, -1, 0, 0), zoom_in=True), "mid_y must be 0..50, got -1"),
    (lambda: control.drag_zoom(1, IPC, DragZoom(100, 50, 0, 0, 101, 0), zoom_in=True),
     "length_x must be 0..100, got 101"),
    (lambda: control.drag_zoom(1, IPC, DragZoom(100, 50, 0, 0, 0, 51), zoom_in=True), "length_y must be 0..50, got 51"),
    (lambda: control.drag_zoom(1, IPC, DragZoom(100, 50, 0, 0, 0, 1.5), zoom_in=True),  # type: ignore[arg-type]
     "length_y must be an int 0..50, got float"),
    (lambda: control.drag_zoom(1, IPC, (1, 1, 0, 0, 0, 0), zoom_in=True),  # type: ignore[arg-type]
     "box must be a DragZoom, got tuple"),
    (lambda: control.drag_zoom(1, IPC, DragZoom(1, 1, 0, 0, 0, 0), zoom_in=None),  # type: ignore[arg-type]
     "zoom_in must be a bool, got NoneType"),
    (lambda: control.device_config_basic(1, IPC),
     "BasicParam needs at least one of name, expiration, heartbeat_interval, heartbeat_count"),
    (lambda: control.device_config_basic(1, IPC, name=" "), "name must be a non-empty str"),
    (lambda: control.device_config_basic(1, IPC, name="长" * 65), "name must be at most 64 characters, got 65"),
    (lambda: control.device_config_basic(1, IPC, expiration=0), "expiration must be 1..2147483647, got 0"),
    (lambda: control.device_config_basic(1, IPC, heartbeat_interval=-5),
     "heartbeat_interval must be 1..2147483647, got -5"),
    (lambda: control.device_config_basic(1, IPC, heartbeat_count="3"),  # type: ignore[arg-type]
     "heartbeat_count must be an int 1..2147483647, got str"),
    (lambda: control.config_download_query(1, IPC), "ConfigDownload needs at least one ConfigType"),
    (lambda: control.config_download_query(1, IPC, "basicparam"),
     "ConfigType must be one of " + ", ".join(t.value for t in ConfigType) + ", got 'basicparam'"),
    (lambda: control.config_download_query(1, IPC, "BasicParam", ConfigType.BASIC_PARAM), "ConfigType repeated"),
]


@pytest.mark.parametrize(("build", "message"), BAD_BUILDS, ids=[m[:60] for _, m in BAD_BUILDS])
def test_builder_refuses_with_exact_message(build: Callable[[], bytes], message: str) -> None:
    with pytest.raises(ControlError) as info:
        build()
    assert str(info.value) == message
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidBody)


def test_name_with_a_character_xml_cannot_carry_is_refused_by_the_encoder() -> None:
    with pytest.raises(LocalProtocolError, match=r"^<Name> has a character XML cannot carry: U\+0001$"):
        control.device_config_basic(1, IPC, name="a\x01")


# --- device answers (tests/vectors/sip) -----------------------------------------------------------------


def test_preset_response_from_an_ipc_in_gb2312() -> None:
    body = vector_body("message_preset_response_gb2312")
    assert "大门口".encode("gb2312") in body
    assert "堃".encode("gbk") in body  # declared GB2312, sent GBK (as devices do): GB18030 decoding keeps it
    answer = control.parse_preset_response(body)
    assert answer == PresetList(sn=7, device_id=IPC, sum_num=3, num=3, presets=(
        Preset(1, "大门口"), Preset(2, "停车场入口"), Preset(10, "堃园东门")))


def test_preset_response_from_an_nvr_without_sumnum_and_names() -> None:
    answer = control.parse_preset_response(vector_body("message_preset_response_nvr"))
    assert answer == PresetList(sn=8, device_id=CHANNEL, sum_num=None, num=2, presets=(Preset(1, ""), Preset(2, "")))


def test_control_and_config_responses() -> None:
    ok = control.parse_control_response(vector_body("message_devicecontrol_response"))
    assert ok == ControlResponse("DeviceControl", 9, CHANNEL, Result.OK)
    assert ok.ok
    error = control.parse_control_response(vector_body("message_deviceconfig_response_error"))
    assert error == ControlResponse("DeviceConfig", 10, IPC, Result.ERROR)
    assert not error.ok


def test_config_download_response() -> None:
    answer = control.parse_config_download_response(vector_body("message_configdownload_response_gb2312"))
    assert (answer.sn, answer.device_id, answer.result) == (11, IPC, Result.OK)
    assert answer.basic_param == {
        "Name": "东门球机", "DeviceID": IPC, "SIPServerID": PLATFORM, "SIPServerIP": "192.168.1.10",
        "SIPServerPort": "5060", "DomainName": "3402000000", "Expiration": "3600", "Password": "12345678",
        "HeartBeatInterval": "60", "HeartBeatCount": "3",
    }
    assert dict(answer.sections["VideoParamOpt"]) == {"DownloadSpeed": "1/2/4", "Resolution": "6/5/4/3"}
    assert set(answer.sections) == {"BasicParam", "VideoParamOpt"}


def test_parsers_take_a_decoded_document_too() -> None:
    doc = manscdp.decode(vector_body("message_preset_response_gb2312"))
    assert control.parse_preset_response(doc) == control.parse_preset_response(
        vector_body("message_preset_response_gb2312"))


def response(cmd_type: str, lines: list[str], encoding: str = "UTF-8", device_id: str = IPC) -> bytes:
    return expected("Response", cmd_type, 3, device_id, lines, encoding)


def test_result_is_read_case_insensitively_and_config_download_tolerates_oddities() -> None:
    assert control.parse_control_response(response("DeviceControl", ["<Result> ok </Result>"])).result is Result.OK
    assert control.parse_control_response(response("devicecontrol", ["<Result>Error</Result>"])).result is Result.ERROR
    answer = control.parse_config_download_response(response("ConfigDownload", [
        "<Result></Result>", "<Vendor>x</Vendor>", "<BasicParam>", "<Name>a</Name>", "</BasicParam>",
        "<BasicParam>", "<Name>b</Name>", "</BasicParam>", "<SVACEncodeConfig>", "<ROIParam>", "<ROIFlag>1</ROIFlag>",
        "</ROIParam>", "</SVACEncodeConfig>"]))
    assert answer == ConfigDownload(3, IPC, None, {"BasicParam": {"Name": "a"},
                                                   "SVACEncodeConfig": {"ROIParam/ROIFlag": "1"}})
    assert control.parse_config_download_response(response("ConfigDownload", ["<Result>OK</Result>"])).basic_param == {}


def test_preset_response_edge_shapes() -> None:
    empty = control.parse_preset_response(response("PresetQuery", ["<SumNum>0</SumNum>"]))
    assert empty == PresetList(3, IPC, 0, None, ())
    zero = control.parse_preset_response(response("PresetQuery", ['<PresetList Num="0">', "</PresetList>"]))
    assert zero == PresetList(3, IPC, None, 0, ())
    # Num is reported as claimed, not enforced; an item's extra fields are ignored
    miscounted = control.parse_preset_response(response("PresetQuery", [
        '<PresetList Num="5">', "<Item>", "<PresetID> 4 </PresetID>", "<PresetName> A&amp;B </PresetName>",
        "<Extra>1</Extra>", "</Item>", "</PresetList>"]))
    assert miscounted == PresetList(3, IPC, None, 5, (Preset(4, "A&B"),))


# --- PresetQuery answers in parts ----------------------------------------------------------------------


def preset_part(ids: list[int], sum_num: int | None, *, sn: int = 3, device_id: str = IPC,
                name: str = "P{}") -> bytes:
    """One PresetQuery Response part carrying ``ids`` (Num = their count), written out by hand."""
    lines = [f"<SumNum>{sum_num}</SumNum>"] if sum_num is not None else []
    lines.append(f'<PresetList Num="{len(ids)}">')
    for i in ids:
        lines += ["<Item>", f"<PresetID>{i}</PresetID>", f"<PresetName>{name.format(i)}</PresetName>", "</Item>"]
    lines.append("</PresetList>")
    return expected("Response", "PresetQuery", sn, device_id, lines, "UTF-8")


def test_merge_preset_parts_out_of_order_and_repeated() -> None:
    first, second, third = preset_part([1, 2, 3], 7), preset_part([4, 5, 6], 7), preset_part([7], 7)
    merged = control.merge_preset_responses([third, first, third, second])
    assert merged == PresetList(3, IPC, 7, 7, tuple(Preset(i, f"P{i}") for i in range(1, 8)))
    assert merged.complete
    # Bytes, decoded documents and parsed lists mix; the merge of one part is that part (Num recounted).
    assert control.merge_preset_responses([manscdp.decode(first), control.parse_preset_response(second),
                                           third]) == merged
    assert control.merge_preset_responses([first]) == PresetList(3, IPC, 7, 3, (Preset(1, "P1"), Preset(2, "P2"),
                                                                                 Preset(3, "P3")))


def test_merge_preset_parts_incomplete_duplicates_and_counts() -> None:
    missing = control.merge_preset_responses([preset_part([1, 2], 5), preset_part([5], 5)])
    assert (missing.sum_num, missing.num, missing.complete) == (5, 3, False)
    assert [p.preset_id for p in missing.presets] == [1, 2, 5]
    # The same PresetID in two parts counts once, the first name wins: 3 distinct of SumNum 4 is not complete.
    dup = control.merge_preset_responses([preset_part([1, 2], 4), preset_part([2, 3], 4, name="Q{}")])
    assert dup.presets == (Preset(1, "P1"), Preset(2, "P2"), Preset(3, "Q3")) and not dup.complete
    # Parts disagreeing on SumNum: the largest is kept (not complete before it is reached).
    assert control.merge_preset_responses([preset_part([1], 1), preset_part([2], 3)]).sum_num == 3
    # No SumNum anywhere (an NVR): nothing to wait for.
    bare = control.merge_preset_responses([preset_part([9, 8], None)])
    assert bare == PresetList(3, IPC, None, 2, (Preset(8, "P8"), Preset(9, "P9"))) and bare.complete
    # SumNum 0 and no PresetList: complete and empty.
    empty = control.merge_preset_responses([response("PresetQuery", ["<SumNum>0</SumNum>"])])
    assert empty == PresetList(3, IPC, 0, 0, ()) and empty.complete
    assert PresetList(3, IPC, 2, 2, (Preset(1, ""),)).complete is False  # Num as claimed; presets counted


@pytest.mark.parametrize(("parts", "message"), [
    ([], "no PresetQuery parts to merge"),
    ([preset_part([1], 2), preset_part([2], 2, sn=4)],
     f"PresetQuery part 2 is SN 4 of '{IPC}', expected SN 3 of '{IPC}'"),
    ([preset_part([1], 2), preset_part([2], 2, device_id=CHANNEL)],
     f"PresetQuery part 2 is SN 3 of '{CHANNEL}', expected SN 3 of '{IPC}'"),
    ([preset_part([1], 2), response("PresetQuery", ['<PresetList Num="1">', "<Item></Item>", "</PresetList>"])],
     "PresetList item 1 lacks <PresetID>"),
    ([preset_part([1], 2), response("DeviceControl", ["<Result>OK</Result>"])],
     "expected CmdType PresetQuery, got 'DeviceControl'"),
])
def test_merge_preset_parts_refused(parts: list[bytes], message: str) -> None:
    with pytest.raises(ControlError) as info:
        control.merge_preset_responses(parts)
    assert info.value.reason == message


@FUZZ
@given(st.lists(st.integers(1, 255), unique=True, max_size=40), st.integers(1, 12), st.randoms(use_true_random=False),
       st.integers(0, 3))
def test_merge_any_split_order_and_repeats(ids: list[int], per: int, rng: random.Random, repeats: int) -> None:
    parts = [preset_part(ids[i:i + per], len(ids)) for i in range(0, len(ids), per)] or [preset_part([], 0)]
    sent = parts + [rng.choice(parts) for _ in range(repeats)]
    rng.shuffle(sent)
    merged = control.merge_preset_responses(sent)
    assert merged == PresetList(3, IPC, len(ids), len(ids), tuple(Preset(i, f"P{i}") for i in sorted(ids)))
    assert merged.complete
    if len(parts) > 1:
        assert not control.merge_preset_responses(parts[1:]).complete


BAD_ANSWERS: list[tuple[Callable[[bytes], object], bytes, type[Exception], str]] = [
    (control.parse_control_response, b'<?xml version="1.0"?>\r\n<!DOCTYPE Response>\r\n<Response></Response>',
     InvalidBody, "DTD not allowed"),
    (control.parse_preset_response,
     b'<Response><CmdType>PresetQuery</CmdType><SN>1</SN><DeviceID>1</DeviceID><!ENTITY x "y"></Response>',
     InvalidBody, "entity declaration not allowed"),
    (control.parse_preset_response, b"<Response><CmdType>PresetQuery</CmdType>", InvalidBody,
     "malformed XML: no element found: line 1, column 40"),
    (control.parse_preset_response, b"<Response><CmdType>PresetQuery</CmdType><SN>1</SN></Response>", InvalidBody,
     "MANSCDP lacks <DeviceID>"),
    (control.parse_control_response, response("DeviceControl", ["<Result>MAYBE</Result>"]), ControlError,
     "Result must be OK or ERROR, got 'MAYBE'"),
    (control.parse_control_response, response("DeviceControl", ["<Result>" + "X" * 100 + "</Result>"]), ControlError,
     f"Result must be OK or ERROR, got {'X' * 40!r}"),
    (control.parse_control_response, response("DeviceControl", []), ControlError, "Response lacks <Result>"),
    (control.parse_control_response, response("DeviceControl", ["<Result></Result>"]), ControlError,
     "Response lacks <Result>"),
    (control.parse_config_download_response, response("ConfigDownload", ["<Result>no</Result>"]), ControlError,
     "Result must be OK or ERROR, got 'no'"),
    (control.parse_control_response, response("Catalog", ["<Result>OK</Result>"]), ControlError,
     "expected CmdType DeviceControl or DeviceConfig, got 'Catalog'"),
    (control.parse_preset_response, response("DeviceControl", ["<Result>OK</Result>"]), ControlError,
     "expected CmdType PresetQuery, got 'DeviceControl'"),
    (control.parse_config_download_response, response("PresetQuery", []), ControlError,
     "expected CmdType ConfigDownload, got 'PresetQuery'"),
    (control.parse_preset_response, expected("Notify", "PresetQuery", 1, IPC, []), ControlError,
     "expected a <Response>, got <Notify>"),
    (control.parse_control_response, expected("Control", "DeviceControl", 1, IPC, ["<Result>OK</Result>"]),
     ControlError, "expected a <Response>, got <Control>"),
    (control.parse_preset_response, response("PresetQuery", ["<SumNum>x</SumNum>"]), ControlError,
     "SumNum is not a count: 'x'"),
    (control.parse_preset_response, response("PresetQuery", ["<SumNum>-1</SumNum>"]), ControlError,
     "SumNum is not a count: '-1'"),
    (control.parse_preset_response, response("PresetQuery", ['<PresetList Num="two">', "</PresetList>"]),
     ControlError, "PresetList Num is not a count: 'two'"),
    (control.parse_preset_response, response("PresetQuery", ['<PresetList Num="1234567890">', "</PresetList>"]),
     ControlError, "PresetList Num is not a count: '1234567890'"),
    (control.parse_preset_response, response("PresetQuery", [
        '<PresetList Num="2">', "<Item><PresetID>1</PresetID></Item>", "<Item><PresetName>x</PresetName></Item>",
        "</PresetList>"]), ControlError, "PresetList item 2 lacks <PresetID>"),
    (control.parse_preset_response, response("PresetQuery", [
        '<PresetList Num="1">', "<Item><PresetID></PresetID></Item>", "</PresetList>"]), ControlError,
     "PresetList item 1 lacks <PresetID>"),
    (control.parse_preset_response, response("PresetQuery", [
        '<PresetList Num="1">', "<Item><PresetID>0x1F</PresetID></Item>", "</PresetList>"]), ControlError,
     "PresetList item 1: PresetID is not a number: '0x1F'"),
    (control.parse_preset_response, response("PresetQuery", [
        '<PresetList Num="1">', "<Item><PresetID>١</PresetID></Item>", "</PresetList>"]), ControlError,
     "PresetList item 1: PresetID is not a number: '١'"),
    (control.parse_preset_response, response("PresetQuery", [
        '<PresetList Num="1">', f"<Item><PresetID>{'9' * 500}</PresetID></Item>", "</PresetList>"]), ControlError,
     f"PresetList item 1: PresetID is not a number: {'9' * 40!r}"),
    (control.parse_preset_response, b"<Response>" + b"<a>" * 300_000, BodyTooLarge,
     "MANSCDP body of 900010 bytes exceeds 262144"),
]


@pytest.mark.parametrize(("parse", "body", "kind", "message"), BAD_ANSWERS, ids=[m[:60] for *_, m in BAD_ANSWERS])
def test_parser_refuses_with_exact_message(parse: Callable[[bytes], object], body: bytes, kind: type[Exception],
                                           message: str) -> None:
    with pytest.raises(kind) as info:
        parse(body)
    assert str(info.value) == message
    assert isinstance(info.value, InvalidBody)  # the router answers 400 (513 for the oversize body)


# --- properties -----------------------------------------------------------------------------------------

_NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 999_999_999), _NAMES), max_size=20), st.sampled_from(["GB2312", "UTF-8"]),
       st.integers(0, 2**63))
def test_preset_list_round_trip(items: list[tuple[int, str]], encoding: str, sn: int) -> None:
    fields: list[manscdp.Field] = [
        ("SumNum", len(items)),
        manscdp.element("PresetList", [("Item", [("PresetID", i), ("PresetName", n)]) for i, n in items],
                        Num=len(items)),
    ]
    body = manscdp.encode("Response", "PresetQuery", sn, CHANNEL, fields, encoding)
    answer = control.parse_preset_response(body)
    assert answer == PresetList(sn, CHANNEL, len(items), len(items),
                                tuple(Preset(i, n.strip()) for i, n in items))


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_invalid_body(data: bytes) -> None:
    for parse in (control.parse_control_response, control.parse_preset_response,
                  control.parse_config_download_response):
        try:
            parse(data)
        except InvalidBody:
            pass


@FUZZ
@given(st.lists(st.sampled_from(["<Item>", "</Item>", "<PresetID>", "</PresetID>", "7", "x", "<PresetName>",
                                 "</PresetName>", '<PresetList Num="1">', "</PresetList>", "<SumNum>", "</SumNum>",
                                 "<Result>", "</Result>", "OK"]), max_size=30))
def test_shuffled_preset_markup_parses_or_raises_invalid_body(parts: list[str]) -> None:
    body = response("PresetQuery", ["".join(parts)])
    try:
        control.parse_preset_response(body)
    except InvalidBody:
        pass
