"""MANSCDP device control and configuration (GB/T 28181-2016 §9.3, 附录 A.2.3, A.2.4): build and read.

Theory of operation
-------------------
Builders return the body of a ``MESSAGE`` (``Application/MANSCDP+xml``) to a device or channel, written by
``sip.manscdp.encode`` so the shape and charset handling are the ones every other body has (declaration,
one element per line, CRLF; ``GB2312`` declared and written with the GB18030 codec; pass the device's
``encoding``). Each takes the ``sn`` (``DeviceRegistry.next_sn()``) and the ``device_id`` addressed (the
device, or the channel for PTZ and the per-channel commands), then its own arguments::

    <Control> DeviceControl  ptz_control      <PTZCmd>A50F0100000000B5</PTZCmd> [<Info><ControlPriority>]
                             teleboot         <TeleBoot>Boot</TeleBoot>
                             record_control   <RecordCmd>Record|StopRecord</RecordCmd>
                             guard_control    <GuardCmd>SetGuard|ResetGuard</GuardCmd>
                             alarm_reset      <AlarmCmd>ResetAlarm</AlarmCmd> [<Info><AlarmMethod>,<AlarmType>]
                             iframe_request   <IFameCmd>Send</IFameCmd> (2016 spelling) or <IFrameCmd>
                             home_position    <HomePosition><Enabled>,<ResetTime>,<PresetIndex>
                             drag_zoom        <DragZoomIn|DragZoomOut><Length>,<Width>,<MidPointX>,...
              DeviceConfig   device_config_basic  <BasicParam><Name>,<Expiration>,<HeartBeatInterval>,...
    <Query>   ConfigDownload config_download_query <ConfigType>BasicParam/VideoParamOpt</ConfigType>
              PresetQuery    preset_query

What answers (§9.3.2): a device answers every MESSAGE ``200 OK`` at once. PTZ, TeleBoot, IFrame,
DragZoom and HomePosition get nothing more; RecordCmd, GuardCmd, AlarmCmd and DeviceConfig get a later
``<Response>`` MESSAGE with ``<Result>OK|ERROR</Result>`` (``parse_control_response``); the queries get
their ``<Response>`` (``parse_preset_response``, ``parse_config_download_response``; a PresetQuery answer
may come in several MESSAGEs sharing the SN, ``SumNum`` the total as for Catalog: ``merge_preset_responses``
joins them, deduplicated by PresetID).

Inputs are validated before anything is built; a refusal is a ``ControlError`` (a ``ValueError``, and an
``InvalidBody`` so a relayed command answers 400) with an exact message. A PTZCmd goes through
``sip.ptz`` (``PtzError``). Parsers take the body bytes or a decoded ``ManscdpDocument`` (what the router
hands to handlers); hostile XML is refused by ``manscdp.decode`` (``InvalidBody``), the shape by
``ControlError``. ``Result`` and ``CmdType`` are compared case-insensitively (lenient reading).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from sip import manscdp
from sip.errors import InvalidBody
from sip.manscdp import Field, ManscdpDocument
from sip.ptz import PtzCommand, check_int

__all__ = [
    "DEFAULT_PRIORITY",
    "ConfigDownload",
    "ConfigType",
    "ControlError",
    "ControlResponse",
    "DragZoom",
    "GuardAction",
    "Preset",
    "PresetList",
    "RecordAction",
    "Result",
    "alarm_reset",
    "config_download_query",
    "device_config_basic",
    "drag_zoom",
    "guard_control",
    "home_position",
    "iframe_request",
    "merge_preset_responses",
    "parse_config_download_response",
    "parse_control_response",
    "parse_preset_response",
    "preset_query",
    "ptz_control",
    "record_control",
    "teleboot",
]

DEFAULT_PRIORITY = 5  # WVP sends <ControlPriority>5</ControlPriority> with every PTZCmd
INT32_MAX = 2**31 - 1


class ControlError(InvalidBody, ValueError):
    """A control/config argument out of range, or a device answer of the wrong shape (status 400)."""


class RecordAction(StrEnum):
    RECORD = "Record"
    STOP = "StopRecord"


class GuardAction(StrEnum):
    SET = "SetGuard"
    RESET = "ResetGuard"


class ConfigType(StrEnum):
    """``<ConfigType>`` of a ConfigDownload query (A.2.4.7); several are joined with ``/``."""

    BASIC_PARAM = "BasicParam"
    VIDEO_PARAM_OPT = "VideoParamOpt"
    SVAC_ENCODE_CONFIG = "SVACEncodeConfig"
    SVAC_DECODE_CONFIG = "SVACDecodeConfig"
    # GB/T 28181-2022 additions
    VIDEO_PARAM_ATTRIBUTE = "VideoParamAttribute"
    VIDEO_RECORD_PLAN = "VideoRecordPlan"
    VIDEO_ALARM_RECORD = "VideoAlarmRecord"
    PICTURE_MASK = "PictureMask"
    FRAME_MIRROR = "FrameMirror"
    ALARM_REPORT = "AlarmReport"
    OSD_CONFIG = "OSDConfig"
    SNAP_SHOT_CONFIG = "SnapShotConfig"


class Result(StrEnum):
    OK = "OK"
    ERROR = "ERROR"


# --- validation helpers ---------------------------------------------------------------------------

_E = TypeVar("_E", bound=StrEnum)
_DEVICE_ID = re.compile(r"[0-9A-Za-z]{1,32}")  # gateway/devices.py accepts the same
_ALARM_METHOD = re.compile(r"[0-7]{1,8}")
_DIGITS = re.compile(r"[0-9]{1,9}")


def _int(name: str, value: object, lo: int, hi: int) -> int:
    return check_int(name, value, lo, hi, ControlError)


def _choice(name: str, kind: type[_E], value: object) -> _E:
    if isinstance(value, str):
        for member in kind:
            if member.value == value:
                return member
    allowed = ", ".join(member.value for member in kind)
    shown = repr(value[:40]) if isinstance(value, str) else type(value).__name__
    raise ControlError(f"{name} must be one of {allowed}, got {shown}")


def _device_id(device_id: object) -> str:
    if not isinstance(device_id, str) or _DEVICE_ID.fullmatch(device_id) is None:
        shown = repr(device_id[:40]) if isinstance(device_id, str) else type(device_id).__name__
        raise ControlError(f"device_id must be 1..32 ASCII letters or digits, got {shown}")
    return device_id


def _control(sn: int, device_id: str, fields: list[Field], encoding: str) -> bytes:
    return manscdp.encode("Control", "DeviceControl", sn, _device_id(device_id), fields, encoding)


# --- DeviceControl ---------------------------------------------------------------------------------


def ptz_control(sn: int, device_id: str, cmd: PtzCommand | str, *, priority: int | None = DEFAULT_PRIORITY,
                encoding: str = "GB2312") -> bytes:
    """``<PTZCmd>`` (a ``PtzCommand``, or hex from an upper platform: checked, written upper case) and
    ``<Info><ControlPriority>`` (1..5, the range platforms use; ``None`` leaves ``<Info>`` out, which the
    standard allows; the default 5 is what WVP sends with every PTZCmd)."""
    if isinstance(cmd, str):
        cmd = PtzCommand.decode(cmd)
    elif not isinstance(cmd, PtzCommand):
        raise ControlError(f"cmd must be a PtzCommand or its hex, got {type(cmd).__name__}")
    fields: list[Field] = [("PTZCmd", cmd.encode())]
    if priority is not None:
        fields.append(("Info", [("ControlPriority", _int("priority", priority, 1, 5))]))
    return _control(sn, device_id, fields, encoding)


def teleboot(sn: int, device_id: str, *, encoding: str = "GB2312") -> bytes:
    """Reboot the device (``<TeleBoot>Boot</TeleBoot>``; no Response follows)."""
    return _control(sn, device_id, [("TeleBoot", "Boot")], encoding)


def record_control(sn: int, device_id: str, action: RecordAction | str, *, encoding: str = "GB2312") -> bytes:
    """Start (``Record``) or stop (``StopRecord``) recording on the device."""
    return _control(sn, device_id, [("RecordCmd", _choice("RecordCmd", RecordAction, action))], encoding)


def guard_control(sn: int, device_id: str, action: GuardAction | str, *, encoding: str = "GB2312") -> bytes:
    """Arm (``SetGuard``) or disarm (``ResetGuard``)."""
    return _control(sn, device_id, [("GuardCmd", _choice("GuardCmd", GuardAction, action))], encoding)


def alarm_reset(sn: int, device_id: str, *, alarm_method: str | int | None = None, alarm_type: int | None = None,
                encoding: str = "GB2312") -> bytes:
    """``<AlarmCmd>ResetAlarm</AlarmCmd>``, optionally only for an alarm method (digits 0-7, combinable as
    in alarm queries: ``"25"`` device or video; 0 all) and type (needs the method)."""
    info: list[Field] = []
    if alarm_method is not None:
        if isinstance(alarm_method, bool) or not isinstance(alarm_method, str | int):
            raise ControlError(f"alarm_method must be a str or int, got {type(alarm_method).__name__}")
        method = str(alarm_method)
        if _ALARM_METHOD.fullmatch(method) is None:
            raise ControlError(f"alarm_method must be 1..8 digits 0-7, got {method[:40]!r}")
        info.append(("AlarmMethod", method))
    if alarm_type is not None:
        if alarm_method is None:
            raise ControlError("alarm_type needs alarm_method")
        info.append(("AlarmType", _int("alarm_type", alarm_type, 0, 999)))
    fields: list[Field] = [("AlarmCmd", "ResetAlarm")]
    if info:
        fields.append(("Info", info))
    return _control(sn, device_id, fields, encoding)


def iframe_request(sn: int, device_id: str, *, spelling_2016: bool = True, encoding: str = "GB2312") -> bytes:
    """Ask for a key frame now: ``<IFameCmd>Send</IFameCmd>`` as GB/T 28181-2016 spells it (what devices
    of both editions accept; ``gateway/streams.py`` sends it), or ``<IFrameCmd>`` with ``spelling_2016=False``."""
    if not isinstance(spelling_2016, bool):
        raise ControlError(f"spelling_2016 must be a bool, got {type(spelling_2016).__name__}")
    return _control(sn, device_id, [("IFameCmd" if spelling_2016 else "IFrameCmd", "Send")], encoding)


def home_position(sn: int, device_id: str, enabled: bool, *, reset_time: int | None = None,
                  preset_index: int | None = None, encoding: str = "GB2312") -> bytes:
    """Home position (看守位): enabled, the camera returns to preset ``preset_index`` (0..255) after
    ``reset_time`` seconds idle (both required); disabled, only ``<Enabled>0</Enabled>`` is sent."""
    if not isinstance(enabled, bool):
        raise ControlError(f"enabled must be a bool, got {type(enabled).__name__}")
    inner: list[Field] = [("Enabled", "1" if enabled else "0")]
    if enabled:
        if reset_time is None or preset_index is None:
            raise ControlError("an enabled home position needs reset_time and preset_index")
        inner.append(("ResetTime", _int("reset_time", reset_time, 1, INT32_MAX)))
        inner.append(("PresetIndex", _int("preset_index", preset_index, 0, 255)))
    elif reset_time is not None or preset_index is not None:
        raise ControlError("reset_time and preset_index apply only to an enabled home position")
    return _control(sn, device_id, [("HomePosition", inner)], encoding)


@dataclass(frozen=True, slots=True)
class DragZoom:
    """A box drawn on the picture (A.2.3.1 DragZoomIn/DragZoomOut), in the viewer's window pixels.

    ``length`` x ``width``: the window (1..65535 each); ``mid_x``, ``mid_y``: the box centre inside it;
    ``length_x`` x ``length_y``: the box, at most the window.
    """

    length: int
    width: int
    mid_x: int
    mid_y: int
    length_x: int
    length_y: int

    def __post_init__(self) -> None:
        _int("length", self.length, 1, 0xFFFF)
        _int("width", self.width, 1, 0xFFFF)
        _int("mid_x", self.mid_x, 0, self.length)
        _int("mid_y", self.mid_y, 0, self.width)
        _int("length_x", self.length_x, 0, self.length)
        _int("length_y", self.length_y, 0, self.width)

    def fields(self) -> list[Field]:
        return [("Length", self.length), ("Width", self.width), ("MidPointX", self.mid_x),
                ("MidPointY", self.mid_y), ("LengthX", self.length_x), ("LengthY", self.length_y)]


def drag_zoom(sn: int, device_id: str, box: DragZoom, *, zoom_in: bool, encoding: str = "GB2312") -> bytes:
    """Zoom into (``zoom_in=True``: ``<DragZoomIn>``) or out of (``<DragZoomOut>``) the drawn box."""
    if not isinstance(box, DragZoom):
        raise ControlError(f"box must be a DragZoom, got {type(box).__name__}")
    if not isinstance(zoom_in, bool):
        raise ControlError(f"zoom_in must be a bool, got {type(zoom_in).__name__}")
    return _control(sn, device_id, [("DragZoomIn" if zoom_in else "DragZoomOut", box.fields())], encoding)


# --- DeviceConfig and queries ----------------------------------------------------------------------


def device_config_basic(sn: int, device_id: str, *, name: str | None = None, expiration: int | None = None,
                        heartbeat_interval: int | None = None, heartbeat_count: int | None = None,
                        encoding: str = "GB2312") -> bytes:
    """``<Control><CmdType>DeviceConfig`` with ``<BasicParam>``: the device's name, registration expiry (s),
    keepalive interval (s) and missed-keepalive count; at least one. The device answers a Response."""
    params: list[Field] = []
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ControlError("name must be a non-empty str")
        if len(name) > 64:
            raise ControlError(f"name must be at most 64 characters, got {len(name)}")
        params.append(("Name", name))
    if expiration is not None:
        params.append(("Expiration", _int("expiration", expiration, 1, INT32_MAX)))
    if heartbeat_interval is not None:
        params.append(("HeartBeatInterval", _int("heartbeat_interval", heartbeat_interval, 1, INT32_MAX)))
    if heartbeat_count is not None:
        params.append(("HeartBeatCount", _int("heartbeat_count", heartbeat_count, 1, INT32_MAX)))
    if not params:
        raise ControlError("BasicParam needs at least one of name, expiration, heartbeat_interval, heartbeat_count")
    return manscdp.encode("Control", "DeviceConfig", sn, _device_id(device_id), [("BasicParam", params)], encoding)


def config_download_query(sn: int, device_id: str, *config_types: ConfigType | str,
                          encoding: str = "GB2312") -> bytes:
    """``<Query><CmdType>ConfigDownload`` for one or more config types (distinct), joined with ``/``."""
    if not config_types:
        raise ControlError("ConfigDownload needs at least one ConfigType")
    chosen = [_choice("ConfigType", ConfigType, kind) for kind in config_types]
    if len(set(chosen)) != len(chosen):
        raise ControlError("ConfigType repeated")
    value = "/".join(chosen)
    return manscdp.encode("Query", "ConfigDownload", sn, _device_id(device_id), [("ConfigType", value)], encoding)


def preset_query(sn: int, device_id: str, *, encoding: str = "GB2312") -> bytes:
    """``<Query><CmdType>PresetQuery`` for a channel's presets."""
    return manscdp.encode("Query", "PresetQuery", sn, _device_id(device_id), (), encoding)


# --- answers ---------------------------------------------------------------------------------------


def _doc(body: bytes | ManscdpDocument, cmd_types: tuple[str, ...]) -> ManscdpDocument:
    doc = body if isinstance(body, ManscdpDocument) else manscdp.decode(body)
    if doc.root != "Response":
        raise ControlError(f"expected a <Response>, got <{doc.root}>")
    for cmd_type in cmd_types:
        if doc.cmd_type.lower() == cmd_type.lower():
            return doc
    raise ControlError(f"expected CmdType {' or '.join(cmd_types)}, got {doc.cmd_type[:40]!r}")


def _result(doc: ManscdpDocument, required: bool) -> Result | None:
    text = doc.text("Result")
    if not text:
        if required:
            raise ControlError("Response lacks <Result>")
        return None
    upper = text.upper()
    if upper not in ("OK", "ERROR"):
        raise ControlError(f"Result must be OK or ERROR, got {text[:40]!r}")
    return Result(upper)


def _count(where: str, text: str | None) -> int | None:
    if text is None:
        return None
    value = text.strip()
    if _DIGITS.fullmatch(value) is None:
        raise ControlError(f"{where} is not a count: {value[:40]!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class ControlResponse:
    """A device's ``<Response>`` to DeviceControl (RecordCmd, GuardCmd, AlarmCmd) or DeviceConfig."""

    cmd_type: str  # "DeviceControl" or "DeviceConfig", as the device spelled it
    sn: int
    device_id: str
    result: Result

    @property
    def ok(self) -> bool:
        return self.result is Result.OK


def parse_control_response(body: bytes | ManscdpDocument) -> ControlResponse:
    """``<Response><CmdType>DeviceControl|DeviceConfig</CmdType>...<Result>OK|ERROR</Result>``."""
    doc = _doc(body, ("DeviceControl", "DeviceConfig"))
    result = _result(doc, required=True)
    assert result is not None
    return ControlResponse(doc.cmd_type, doc.sn, doc.device_id, result)


@dataclass(frozen=True, slots=True)
class Preset:
    preset_id: int
    name: str


@dataclass(frozen=True, slots=True)
class PresetList:
    """One PresetQuery ``<Response>`` (one part when the device splits its answer)."""

    sn: int
    device_id: str
    sum_num: int | None  # <SumNum>: presets in all parts, when sent
    num: int | None  # <PresetList Num=...>: presets in this part, as the device claims
    presets: tuple[Preset, ...]

    @property
    def complete(self) -> bool:
        """Nothing more to wait for: the presets reach ``SumNum``, or there is no ``SumNum`` to reach."""
        return self.sum_num is None or len(self.presets) >= self.sum_num


def parse_preset_response(body: bytes | ManscdpDocument) -> PresetList:
    """``<PresetList Num="n"><Item><PresetID>1</PresetID><PresetName>...</PresetName></Item>...``.

    No ``<PresetList>`` means no presets. ``Num`` and ``SumNum`` are reported, not enforced (devices
    miscount; reassembly by SN is the caller's). Each item needs a decimal ``PresetID``; a missing name is "".
    """
    doc = _doc(body, ("PresetQuery",))
    sum_num = _count("SumNum", doc.text("SumNum"))
    found = doc.find("PresetList")
    if found is None:
        return PresetList(doc.sn, doc.device_id, sum_num, None, ())
    num = _count("PresetList Num", found.get("Num"))
    presets: list[Preset] = []
    for index, item in enumerate(found.findall("Item"), 1):
        ident = item.child("PresetID")
        text = ident.text.strip() if ident is not None else ""
        if not text:
            raise ControlError(f"PresetList item {index} lacks <PresetID>")
        if _DIGITS.fullmatch(text) is None:
            raise ControlError(f"PresetList item {index}: PresetID is not a number: {text[:40]!r}")
        name = item.child("PresetName")
        presets.append(Preset(int(text), name.text.strip() if name is not None else ""))
    return PresetList(doc.sn, doc.device_id, sum_num, num, tuple(presets))


def merge_preset_responses(parts: Iterable[bytes | ManscdpDocument | PresetList]) -> PresetList:
    """The parts of one PresetQuery answer (several ``<Response>`` sharing the SN) as one ``PresetList``.

    Presets are deduplicated by PresetID (the first name seen wins) and sorted by it, so repeated and
    out-of-order parts merge to the same list. ``sum_num`` is the largest ``SumNum`` a part claims (None if
    none does: ``complete`` is then true), ``num`` the distinct presets merged. Every part must parse and share
    the SN and DeviceID of the first; ``ControlError`` otherwise, and for no parts at all.
    """
    merged: PresetList | None = None
    sum_num: int | None = None
    by_id: dict[int, Preset] = {}
    for index, part in enumerate(parts, 1):
        found = part if isinstance(part, PresetList) else parse_preset_response(part)
        if merged is None:
            merged = found
        elif (found.sn, found.device_id) != (merged.sn, merged.device_id):
            raise ControlError(f"PresetQuery part {index} is SN {found.sn} of {found.device_id[:40]!r}, "
                               f"expected SN {merged.sn} of {merged.device_id[:40]!r}")
        if found.sum_num is not None:
            sum_num = found.sum_num if sum_num is None else max(sum_num, found.sum_num)
        for preset in found.presets:
            by_id.setdefault(preset.preset_id, preset)
    if merged is None:
        raise ControlError("no PresetQuery parts to merge")
    presets = tuple(by_id[key] for key in sorted(by_id))
    return PresetList(merged.sn, merged.device_id, sum_num, len(presets), presets)


@dataclass(frozen=True, slots=True)
class ConfigDownload:
    """A ConfigDownload ``<Response>``: each config block (``BasicParam``, ``VideoParamOpt``, ...) as a flat
    dict of its leaves (``Element.flat``: nested ones as ``"ROIParam/ROIFlag"``).

    ``BasicParam`` may carry the device's ``Password`` in clear: do not log ``sections`` whole.
    """

    sn: int
    device_id: str
    result: Result | None  # absent in some devices' answers
    sections: Mapping[str, Mapping[str, str]]

    @property
    def basic_param(self) -> dict[str, str]:
        return dict(self.sections.get("BasicParam", {}))


_HEAD = frozenset({"CmdType", "SN", "DeviceID", "Result"})


def parse_config_download_response(body: bytes | ManscdpDocument) -> ConfigDownload:
    """``<Response><CmdType>ConfigDownload</CmdType>...[<Result>][<BasicParam>...]...``."""
    doc = _doc(body, ("ConfigDownload",))
    result = _result(doc, required=False)
    sections: dict[str, dict[str, str]] = {}
    for child in doc.tree.children:
        if child.tag in _HEAD:
            continue
        if child.children:  # a leaf beside the blocks (vendor extra) is not config: skipped
            sections.setdefault(child.tag, child.flat())  # a repeated block: the first wins
    return ConfigDownload(doc.sn, doc.device_id, result, sections)
