"""PTZCmd codec (sip/ptz.py, GB/T 28181-2016 A.3): byte-exact encodings, round trips, exact refusals."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.errors import InvalidBody, RemoteProtocolError
from sip.ptz import (
    DEFAULT_SPEED,
    DEFAULT_ZOOM_SPEED,
    Lens,
    Motion,
    PtzCommand,
    PtzError,
    PtzOp,
    ScanAction,
)

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# --- byte-exact encodings --------------------------------------------------------------------------
# Byte 8 is worked out by hand below: 0xA5 + 0x0F = 0xB4, + address 0x01 = 0xB5 is the common start.

HAND_COMPUTED = [
    # GB28181.md example: stop on address 1. 0xB5 + 00 + 00 + 00 + 00 = 0xB5
    (PtzCommand.stop(), "A50F0100000000B5"),
    # GB/T 28181-2016 A.3 example: zoom in (0x10), zoom speed 1, address 0x4D.
    # 0xB4 + 0x4D = 0x101, + 0x10 = 0x111, + 00 + 00, + 0x10 (1 << 4 | 0) = 0x121 -> 0x21
    (PtzCommand.move(zoom=1, zoom_speed=1, address=0x4D), "A50F4D1000001021"),
    # right (0x01), pan speed 0x50: 0xB5 + 0x01 = 0xB6, + 0x50 = 0x106 -> 0x06
    (PtzCommand.move(pan=1, pan_speed=0x50), "A50F010150000006"),
    # left + up (0x02 | 0x08 = 0x0A), pan 0x20, tilt 0x30: 0xB5 + 0x0A = 0xBF, + 0x20 = 0xDF, + 0x30 = 0x10F -> 0x0F
    (PtzCommand.move(pan=-1, tilt=1, pan_speed=0x20, tilt_speed=0x30), "A50F010A2030000F"),
    # right + down (0x05), both 0xFF: 0xB5 + 0x05 = 0xBA, + 0xFF = 0x1B9, + 0xFF = 0x2B8 -> 0xB8
    (PtzCommand.move(pan=1, tilt=-1, pan_speed=0xFF, tilt_speed=0xFF), "A50F0105FFFF00B8"),
    # zoom out (0x20), zoom speed 15 -> byte 7 0xF0: 0xB5 + 0x20 = 0xD5, + 0xF0 = 0x1C5 -> 0xC5
    (PtzCommand.move(zoom=-1, zoom_speed=15), "A50F01200000F0C5"),
    # FI focus far (0x40 | 0x01), speed 0x80: 0xB5 + 0x41 = 0xF6, + 0x80 = 0x176 -> 0x76
    (PtzCommand.focus(1, 0x80), "A50F014180000076"),
    # FI iris close (0x40 | 0x08), iris speed 0x10 in byte 6: 0xB5 + 0x48 = 0xFD, + 0x10 = 0x10D -> 0x0D
    (PtzCommand.iris(-1, 0x10), "A50F01480010000D"),
    # call preset 3: 0xB5 + 0x82 = 0x137, + 0x03 = 0x13A -> 0x3A
    (PtzCommand.preset_call(3), "A50F01820003003A"),
    # set preset 255: 0xB5 + 0x81 = 0x136, + 0xFF = 0x235 -> 0x35
    (PtzCommand.preset_set(255), "A50F018100FF0035"),
    # delete preset 1: 0xB5 + 0x83 = 0x138, + 0x01 = 0x139 -> 0x39
    (PtzCommand.preset_delete(1), "A50F018300010039"),
    # cruise 1 add preset 5: 0xB5 + 0x84 = 0x139, + 0x01 + 0x05 = 0x13F -> 0x3F
    (PtzCommand.cruise_add(1, 5), "A50F01840105003F"),
    # cruise 1 delete (preset 0: whole cruise): 0xB5 + 0x85 = 0x13A, + 0x01 = 0x13B -> 0x3B
    (PtzCommand.cruise_delete(1, 0), "A50F01850100003B"),
    # cruise 2 speed 0x123: byte 6 0x23, byte 7 0x10. 0xB5 + 0x86 = 0x13B, + 0x02 = 0x13D, + 0x23 = 0x160,
    # + 0x10 = 0x170 -> 0x70
    (PtzCommand.cruise_speed(2, 0x123), "A50F018602231070"),
    # cruise 1 dwell 4095 s: byte 6 0xFF, byte 7 0xF0. 0xB5 + 0x87 = 0x13C, + 0x01 = 0x13D, + 0xFF = 0x23C,
    # + 0xF0 = 0x32C -> 0x2C
    (PtzCommand.cruise_dwell(1, 4095), "A50F018701FFF02C"),
    # start cruise 5: 0xB5 + 0x88 = 0x13D, + 0x05 = 0x142 -> 0x42
    (PtzCommand.cruise_start(5), "A50F018805000042"),
    # scan 0 set right edge (2): 0xB5 + 0x89 = 0x13E, + 0x02 = 0x140 -> 0x40
    (PtzCommand.scan(0, ScanAction.SET_RIGHT), "A50F018900020040"),
    # scan 3 speed 0x400: byte 6 0x00, byte 7 0x40. 0xB5 + 0x8A = 0x13F, + 0x03 = 0x142, + 0x40 = 0x182 -> 0x82
    (PtzCommand.scan_speed(3, 0x400), "A50F018A03004082"),
    # auxiliary switch 1 (wiper) on: 0xB5 + 0x8C = 0x141, + 0x01 = 0x142 -> 0x42
    (PtzCommand.aux(1, True), "A50F018C01000042"),
    # auxiliary switch 2 off: 0xB5 + 0x8D = 0x142, + 0x02 = 0x144 -> 0x44
    (PtzCommand.aux(2, False), "A50F018D02000044"),
    # stop on address 0xFFF: byte 3 0xFF, byte 7 0x0F. 0xB4 + 0xFF = 0x1B3, + 0x0F = 0x1C2 -> 0xC2
    (PtzCommand.stop(address=0xFFF), "A50FFF0000000FC2"),
    # stop on address 0: 0xB4 -> 0xB4
    (PtzCommand.stop(address=0), "A50F0000000000B4"),
    # zoom in speed 5 on address 0x123: byte 3 0x23, byte 7 0x51. 0xB4 + 0x23 = 0xD7, + 0x10 = 0xE7,
    # + 0x51 = 0x138 -> 0x38
    (PtzCommand.move(zoom=1, zoom_speed=5, address=0x123), "A50F231000005138"),
]


@pytest.mark.parametrize(("cmd", "text"), HAND_COMPUTED, ids=[text for _, text in HAND_COMPUTED])
def test_hand_computed_encodings(cmd: PtzCommand, text: str) -> None:
    assert cmd.encode() == text
    assert str(cmd) == text
    assert bytes(cmd) == bytes.fromhex(text)
    assert PtzCommand.decode(text) == cmd
    assert PtzCommand.parse(bytes.fromhex(text)) == cmd


def test_checksum_is_the_byte_sum_modulo_256() -> None:
    for cmd, text in HAND_COMPUTED:
        raw = bytes.fromhex(text)
        assert raw[7] == sum(raw[:7]) % 256, cmd


def test_decode_is_lenient_about_case_and_surrounding_whitespace() -> None:
    assert PtzCommand.decode("a50f0100000000b5") == PtzCommand.stop()
    assert PtzCommand.decode(" \r\n\tA50F0100000000B5\r\n") == PtzCommand.stop()
    assert PtzCommand.decode("a50f4d1000001021").encode() == "A50F4D1000001021"


def test_stop_is_move_without_direction_and_idle_axes_carry_no_speed() -> None:
    assert PtzCommand.move() == PtzCommand.stop()
    assert PtzCommand.move(pan_speed=9, tilt_speed=9, zoom_speed=9) == PtzCommand.stop()
    cmd = PtzCommand.move(tilt=1, pan_speed=0x11, tilt_speed=0x22, zoom_speed=3)
    assert (cmd.data1, cmd.data2, cmd.data3) == (0, 0x22, 0)
    assert PtzCommand.move(pan=1).data1 == DEFAULT_SPEED
    assert PtzCommand.move(zoom=1).data3 == DEFAULT_ZOOM_SPEED


def test_fi_stop_and_combined_lens_command() -> None:
    assert PtzCommand.focus(0).encode() == PtzCommand.iris(0).encode() == "A50F0140000000F5"  # 0xB5 + 0x40
    both = PtzCommand.lens(focus=-1, iris=1, focus_speed=1, iris_speed=2)
    assert both.command == 0x40 | Lens.FOCUS_NEAR | Lens.IRIS_OPEN == 0x46
    assert (both.data1, both.data2) == (1, 2)


def test_reading_a_decoded_command() -> None:
    move = PtzCommand.decode("A50F010A2030000F")
    assert (move.op, move.flags, move.command) == (PtzOp.PTZ, Motion.LEFT | Motion.UP, 0x0A)
    assert isinstance(move.flags, Motion)
    assert (move.pan, move.tilt, move.zoom) == (-1, 1, 0)
    assert (move.focus_direction, move.iris_direction) == (0, 0)
    assert (move.preset, move.group, move.value) == (None, None, None)
    zoom = PtzCommand.decode("A50F01200000F0C5")
    assert (zoom.pan, zoom.tilt, zoom.zoom, zoom.data3) == (0, 0, -1, 15)
    lens = PtzCommand.decode("A50F014180000076")
    assert (lens.op, lens.flags, lens.focus_direction, lens.iris_direction) == (PtzOp.FI, Lens.FOCUS_FAR, 1, 0)
    assert isinstance(lens.flags, Lens)
    assert lens.pan == 0
    assert PtzCommand.decode("A50F01480010000D").iris_direction == -1
    call = PtzCommand.decode("A50F01820003003A")
    assert (call.op, call.preset, call.group, call.value) == (PtzOp.PRESET_CALL, 3, None, None)
    speed = PtzCommand.decode("A50F018602231070")
    assert (speed.op, speed.group, speed.value, speed.preset) == (PtzOp.CRUISE_SPEED, 2, 0x123, None)
    assert PtzCommand.decode("A50F01850100003B").preset == 0
    assert PtzCommand.decode("A50F018900020040").data2 == ScanAction.SET_RIGHT
    assert PtzCommand.decode("A50F231000005138").address == 0x123


def test_unused_bytes_are_kept_as_received() -> None:
    # A preset call with byte 5 = 0x07 and data3 = 2 (both unused by the standard) forwards byte for byte.
    # 0xB5 + 0x82 = 0x137, + 0x07 = 0x13E, + 0x03 = 0x141, + 0x20 = 0x161 -> 0x61
    cmd = PtzCommand.decode("A50F018207032061")
    assert (cmd.op, cmd.data1, cmd.preset, cmd.data3) == (PtzOp.PRESET_CALL, 7, 3, 2)
    assert cmd.encode() == "A50F018207032061"


def test_ptz_error_is_a_value_error_and_a_400() -> None:
    with pytest.raises(PtzError) as info:
        PtzCommand.decode("A50F0100000000B4")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, InvalidBody)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.status == 400
    assert info.value.reason == str(info.value) == "PTZCmd checksum is B4, expected B5"


# --- refusals ---------------------------------------------------------------------------------------

BAD_TEXT = [
    ("", "PTZCmd must be 16 hex digits, got 0 characters"),
    ("   ", "PTZCmd must be 16 hex digits, got 0 characters"),
    ("A50F0100000000B", "PTZCmd must be 16 hex digits, got 15 characters"),
    ("A50F0100000000B500", "PTZCmd must be 16 hex digits, got 18 characters"),
    ("A50F0100000000B5 00", "PTZCmd must be 16 hex digits, got 19 characters"),
    ("A5" * 10_000, "PTZCmd must be 16 hex digits, got 20000 characters"),
    ("A50F0100000000G5", "PTZCmd has a non-hex character 'G' at position 14"),
    ("A50F01000000 0B5", "PTZCmd has a non-hex character ' ' at position 12"),
    ("+50F0100000000B5", "PTZCmd has a non-hex character '+' at position 0"),
    ("A50F01000000_0B5", "PTZCmd has a non-hex character '_' at position 12"),
    ("A50F01000000٠0B5", "PTZCmd has a non-hex character '٠' at position 12"),  # Arabic-Indic zero
    ("B50F0100000000C5", "PTZCmd must start with A5, got B5"),
    ("000F010000000010", "PTZCmd must start with A5, got 00"),
    ("A50E0100000000B4", "PTZCmd byte 2 check nibble is E, expected F for version 0"),
    ("A5000100000000A6", "PTZCmd byte 2 check nibble is 0, expected F for version 0"),
    ("A51F0100000000C5", "PTZCmd byte 2 check nibble is F, expected 0 for version 1"),
    # version 1 with its right nibble ((0xA + 0x5 + 1) % 16 = 0): 0xA5 + 0x10 + 0x01 = 0xB6
    ("A5100100000000B6", "PTZCmd version 1 is not supported (only 0)"),
    ("A50F0100000000B4", "PTZCmd checksum is B4, expected B5"),
    ("A50F0100000000B6", "PTZCmd checksum is B6, expected B5"),
    ("A50F4D1000001020", "PTZCmd checksum is 20, expected 21"),
    # command bytes outside every family: 0xB5 + 0x8B = 0x140 -> 0x40; + 0x50 = 0x105 -> 0x05; + 0xC0 = 0x175
    # -> 0x75; + 0x80 = 0x135 -> 0x35
    ("A50F018B00000040", "unknown PTZCmd command byte 8B"),
    ("A50F015000000005", "unknown PTZCmd command byte 50"),
    ("A50F01C000000075", "unknown PTZCmd command byte C0"),
    ("A50F018000000035", "unknown PTZCmd command byte 80"),
    # conflicting bits: 0xB5 + 0x03 = 0xB8; + 0x0C = 0xC1; + 0x30 = 0xE5; + 0x43 = 0xF8; + 0x4C = 0x101 -> 0x01
    ("A50F0103000000B8", "PTZ command cannot move right and left at once"),
    ("A50F010C000000C1", "PTZ command cannot move down and up at once"),
    ("A50F0130000000E5", "PTZ command cannot move zoom in and zoom out at once"),
    ("A50F0143000000F8", "FI command cannot move focus far and focus near at once"),
    ("A50F014C00000001", "FI command cannot move iris open and iris close at once"),
    # preset 0: 0xB5 + 0x82 = 0x137 -> 0x37; cruise add preset 0: 0xB5 + 0x84 = 0x139 -> 0x39;
    # scan action 3: 0xB5 + 0x89 + 0x03 = 0x141 -> 0x41
    ("A50F018200000037", "preset must be 1..255, got 0"),
    ("A50F018400000039", "preset must be 1..255, got 0"),
    ("A50F018900030041", "scan action must be 0..2, got 3"),
]


@pytest.mark.parametrize(("text", "message"), BAD_TEXT, ids=[m for _, m in BAD_TEXT])
def test_decode_refuses_with_exact_message(text: str, message: str) -> None:
    with pytest.raises(PtzError) as info:
        PtzCommand.decode(text)
    assert str(info.value) == message


def test_decode_refuses_non_str_and_parse_wrong_length() -> None:
    with pytest.raises(PtzError, match="^PTZCmd must be a str, got bytes$"):
        PtzCommand.decode(b"A50F0100000000B5")  # type: ignore[arg-type]
    with pytest.raises(PtzError, match="^PTZCmd must be 8 bytes, got 7$"):
        PtzCommand.parse(bytes.fromhex("A50F0100000000"))
    with pytest.raises(PtzError, match="^PTZCmd must be 8 bytes, got 0$"):
        PtzCommand.parse(b"")


BAD_ARGS = [
    (lambda: PtzCommand.move(pan=2), "pan must be -1, 0 or 1, got 2"),
    (lambda: PtzCommand.move(tilt=-2), "tilt must be -1, 0 or 1, got -2"),
    (lambda: PtzCommand.move(zoom=True), "zoom must be -1, 0 or 1, got bool"),
    (lambda: PtzCommand.move(pan=0.5), "pan must be -1, 0 or 1, got float"),  # type: ignore[arg-type]
    (lambda: PtzCommand.move(pan=1, pan_speed=256), "pan speed must be 0..255, got 256"),
    (lambda: PtzCommand.move(tilt=1, tilt_speed=-1), "tilt speed must be 0..255, got -1"),
    (lambda: PtzCommand.move(zoom=1, zoom_speed=16), "zoom speed must be 0..15, got 16"),
    (lambda: PtzCommand.move(pan=1, pan_speed="9"), "pan speed must be an int 0..255, got str"),  # type: ignore[arg-type]
    (lambda: PtzCommand.move(pan=1, address=4096), "address must be 0..4095, got 4096"),
    (lambda: PtzCommand.stop(address=-1), "address must be 0..4095, got -1"),
    (lambda: PtzCommand.focus(2), "focus must be -1, 0 or 1, got 2"),
    (lambda: PtzCommand.focus(1, 256), "focus speed must be 0..255, got 256"),
    (lambda: PtzCommand.iris(-1, -5), "iris speed must be 0..255, got -5"),
    (lambda: PtzCommand.lens(iris=3), "iris must be -1, 0 or 1, got 3"),
    (lambda: PtzCommand.preset_call(0), "preset must be 1..255, got 0"),
    (lambda: PtzCommand.preset_set(256), "preset must be 1..255, got 256"),
    (lambda: PtzCommand.preset_delete(-1), "preset must be 1..255, got -1"),
    (lambda: PtzCommand.preset_call("3"), "preset must be an int 1..255, got str"),  # type: ignore[arg-type]
    (lambda: PtzCommand.preset_call(True), "preset must be an int 1..255, got bool"),
    (lambda: PtzCommand.cruise_add(256, 1), "cruise group must be 0..255, got 256"),
    (lambda: PtzCommand.cruise_add(1, 0), "preset must be 1..255, got 0"),
    (lambda: PtzCommand.cruise_delete(1, 256), "preset must be 0..255, got 256"),
    (lambda: PtzCommand.cruise_speed(0, 4096), "cruise speed must be 0..4095, got 4096"),
    (lambda: PtzCommand.cruise_dwell(0, -1), "dwell time must be 0..4095, got -1"),
    (lambda: PtzCommand.cruise_dwell(-1, 5), "cruise group must be 0..255, got -1"),
    (lambda: PtzCommand.cruise_start(300), "cruise group must be 0..255, got 300"),
    (lambda: PtzCommand.scan(256), "scan group must be 0..255, got 256"),
    (lambda: PtzCommand.scan(0, 3), "scan action must be 0..2, got 3"),  # type: ignore[arg-type]
    (lambda: PtzCommand.scan_speed(0, 5000), "scan speed must be 0..4095, got 5000"),
    (lambda: PtzCommand.aux(256, True), "switch must be 0..255, got 256"),
    (lambda: PtzCommand.aux(1, 1), "on must be a bool, got int"),  # type: ignore[arg-type]
    (lambda: PtzCommand(0x82, data2=1), "op must be a PtzOp, got 130"),  # type: ignore[arg-type]
    (lambda: PtzCommand(PtzOp.PTZ, flags=0x40), "flags 0x40 not allowed for PTZ (mask 0x3F)"),
    (lambda: PtzCommand(PtzOp.FI, flags=0x10), "flags 0x10 not allowed for FI (mask 0x0F)"),
    (lambda: PtzCommand(PtzOp.PRESET_CALL, flags=1, data2=1), "flags 0x01 not allowed for PRESET_CALL (mask 0x00)"),
    (lambda: PtzCommand(PtzOp.PTZ, flags=256), "flags must be 0..255, got 256"),
    (lambda: PtzCommand(PtzOp.PTZ, Motion.LEFT | Motion.RIGHT), "PTZ command cannot move right and left at once"),
    (lambda: PtzCommand(PtzOp.PTZ, data1=256), "pan speed must be 0..255, got 256"),
    (lambda: PtzCommand(PtzOp.PTZ, data3=16), "zoom speed must be 0..15, got 16"),
    (lambda: PtzCommand(PtzOp.FI, data3=16), "data3 must be 0..15, got 16"),
    (lambda: PtzCommand(PtzOp.PRESET_CALL, data1=256, data2=1), "data1 must be 0..255, got 256"),
    (lambda: PtzCommand(PtzOp.PRESET_CALL), "preset must be 1..255, got 0"),
    (lambda: PtzCommand(PtzOp.CRUISE_START, data2=-1), "data2 must be 0..255, got -1"),
    (lambda: PtzCommand(PtzOp.CRUISE_SPEED, data2=256), "cruise speed low byte must be 0..255, got 256"),
    (lambda: PtzCommand(PtzOp.SCAN_SPEED, data3=16), "scan speed high nibble must be 0..15, got 16"),
    (lambda: PtzCommand(PtzOp.AUX_ON, data1=-1), "switch must be 0..255, got -1"),
]


@pytest.mark.parametrize(("build", "message"), BAD_ARGS, ids=[m for _, m in BAD_ARGS])
def test_constructor_refuses_with_exact_message(build: object, message: str) -> None:
    assert callable(build)
    with pytest.raises(PtzError) as info:
        build()
    assert str(info.value) == message


# --- properties -------------------------------------------------------------------------------------

_PTZ_FLAGS = st.tuples(st.sampled_from([0, Motion.RIGHT, Motion.LEFT]), st.sampled_from([0, Motion.DOWN, Motion.UP]),
                       st.sampled_from([0, Motion.ZOOM_IN, Motion.ZOOM_OUT])).map(lambda t: Motion(t[0] | t[1] | t[2]))
_FI_FLAGS = st.tuples(st.sampled_from([0, Lens.FOCUS_FAR, Lens.FOCUS_NEAR]),
                      st.sampled_from([0, Lens.IRIS_OPEN, Lens.IRIS_CLOSE])).map(lambda t: Lens(t[0] | t[1]))
_BYTE = st.integers(0, 0xFF)
_NIBBLE = st.integers(0, 0xF)
_ADDRESS = st.integers(0, 0xFFF)


def _commands_for(op: PtzOp) -> st.SearchStrategy[PtzCommand]:
    flags: st.SearchStrategy[int] = _PTZ_FLAGS if op is PtzOp.PTZ else _FI_FLAGS if op is PtzOp.FI else st.just(0)
    if op in (PtzOp.PRESET_SET, PtzOp.PRESET_CALL, PtzOp.PRESET_DELETE, PtzOp.CRUISE_ADD):
        data2 = st.integers(1, 0xFF)
    elif op is PtzOp.SCAN:
        data2 = st.integers(0, 2)
    else:
        data2 = _BYTE
    return st.builds(PtzCommand, st.just(op), flags, _BYTE, data2, _NIBBLE, _ADDRESS)


COMMANDS = st.sampled_from(list(PtzOp)).flatmap(_commands_for)


@FUZZ
@given(COMMANDS)
def test_round_trip_over_all_valid_fields(cmd: PtzCommand) -> None:
    text = cmd.encode()
    assert len(text) == 16 and text == text.upper()
    raw = bytes.fromhex(text)
    assert raw[:2] == b"\xa5\x0f"
    assert raw[7] == sum(raw[:7]) % 256
    assert raw[2] | (raw[6] & 0xF) << 8 == cmd.address
    assert raw[3] == cmd.command
    assert PtzCommand.decode(text) == cmd
    assert PtzCommand.decode(text.lower()) == cmd
    assert PtzCommand.parse(raw) == cmd


@FUZZ
@given(st.integers(-1, 1), st.integers(-1, 1), st.integers(-1, 1), _BYTE, _BYTE, _NIBBLE, _ADDRESS)
def test_move_round_trips_directions(pan: int, tilt: int, zoom: int, ps: int, ts: int, zs: int, addr: int) -> None:
    cmd = PtzCommand.move(pan, tilt, zoom, pan_speed=ps, tilt_speed=ts, zoom_speed=zs, address=addr)
    back = PtzCommand.decode(cmd.encode())
    assert (back.pan, back.tilt, back.zoom, back.address) == (pan, tilt, zoom, addr)
    assert (back.data1, back.data2, back.data3) == (ps if pan else 0, ts if tilt else 0, zs if zoom else 0)


@FUZZ
@given(st.binary(min_size=7, max_size=7))
def test_any_seven_bytes_with_a_right_checksum_decode_or_refuse_cleanly(head: bytes) -> None:
    raw = head + bytes((sum(head) % 256,))
    try:
        cmd = PtzCommand.parse(raw)
    except PtzError:
        return
    assert bytes(cmd) == raw  # lossless: a command forwarded from an upper platform goes out unchanged


@FUZZ
@given(st.text(max_size=40))
def test_any_text_decodes_or_raises_ptz_error(text: str) -> None:
    try:
        PtzCommand.decode(text)
    except PtzError:
        pass


@FUZZ
@given(st.from_regex(r"A50F[0-9A-F]{12}", fullmatch=True))
def test_valid_prefix_random_tail_decodes_or_raises_ptz_error(text: str) -> None:
    try:
        cmd = PtzCommand.decode(text)
    except PtzError:
        return
    assert cmd.encode() == text
