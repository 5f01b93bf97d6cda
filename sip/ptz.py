"""The PTZCmd front-end command (GB/T 28181-2016 附录 A.3): encode and decode.

Theory of operation
-------------------
A ``DeviceControl`` body carries ``<PTZCmd>`` as 8 bytes written as 16 hex digits (A.3.1)::

    byte 1  0xA5                              fixed prefix
    byte 2  version << 4 | check nibble       version 0; check = (0xA + 0x5 + version) % 16 -> 0x0F
    byte 3  address & 0xFF                    address: 12 bits, 0..4095
    byte 4  command                           see PtzOp
    byte 5  data1                             0..255
    byte 6  data2                             0..255
    byte 7  data3 << 4 | address >> 8         data3: 0..15
    byte 8  sum(bytes 1..7) % 256             checksum

Byte 4 is either a bit field or a code (A.3.2-A.3.7):

* PTZ (``0b00xxxxxx``, A.3.2): ``Motion`` bits 0x01 right, 0x02 left, 0x04 down, 0x08 up, 0x10 zoom in
  (tele), 0x20 zoom out (wide); data1 pan speed, data2 tilt speed, data3 zoom speed. No bit set is
  *stop*. A bit cleared stops that motion, so every command replaces the previous one.
* FI (``0b0100xxxx``, A.3.3): ``Lens`` bits 0x01 focus far, 0x02 focus near, 0x04 iris open,
  0x08 iris close; data1 focus speed, data2 iris speed. ``0x40`` alone stops focus and iris.
* Presets 0x81 set / 0x82 call / 0x83 delete (A.3.4): data2 the preset, 1..255.
* Cruise (A.3.5): data1 the cruise group; 0x84 add point and 0x85 delete point (data2 the preset;
  0 deletes the whole cruise in the field, e.g. WVP), 0x86 speed and 0x87 dwell time in seconds (a
  12-bit value: low byte in data2, high nibble in data3), 0x88 start. A PTZ stop ends a cruise.
* Scan (A.3.6): data1 the scan group; 0x89 with data2 0 start, 1 set left edge, 2 set right edge
  (``ScanAction``); 0x8A speed (12 bits as for cruise). A PTZ stop ends a scan.
* Auxiliary switch (A.3.7): 0x8C on, 0x8D off, data1 the switch number (1 is the wiper on most
  cameras).

Two left/right, up/down, zoom in/out, far/near or open/close bits together are invalid (A.3.2 notes)
and refused. Bytes the standard leaves unused (data1 of a preset command, data3 outside PTZ and the
12-bit values, ...) are written as 0 by the constructors and kept as received by ``decode``, so a
command forwarded from an upper platform goes out byte for byte. The address means something only to
RS-485 decoders behind an encoder; it defaults to 1, as WVP and most platforms send
(``A50F01...``).

``PtzCommand.decode(text)`` checks, in order: length (16 hex digits, surrounding whitespace ignored,
either case), hex digits, the A5 prefix, byte 2's check nibble, the version (only 0), the checksum,
a known command byte, then the fields as the constructor does. Every refusal is a ``PtzError`` with
an exact message. ``encode()`` writes upper case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Self

from sip.errors import InvalidBody

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_SPEED",
    "DEFAULT_ZOOM_SPEED",
    "Lens",
    "Motion",
    "PtzCommand",
    "PtzError",
    "PtzOp",
    "ScanAction",
    "check_int",
]

DEFAULT_ADDRESS = 1
DEFAULT_SPEED = 0x80  # pan/tilt, focus/iris: half of 0..255
DEFAULT_ZOOM_SPEED = 0x8  # half of 0..15
PREFIX = 0xA5
VERSION = 0


class PtzError(InvalidBody, ValueError):
    """A PTZCmd that cannot be encoded or decoded.

    An ``InvalidBody`` (status 400): a device or upper platform sending one gets ``400``; an API
    caller passing a bad speed or preset gets a ``ValueError`` with the exact reason.
    """


class PtzOp(IntEnum):
    """Byte 4: the command code, or the base of the two bit-field families (PTZ, FI)."""

    PTZ = 0x00  # | Motion bits
    FI = 0x40  # | Lens bits
    PRESET_SET = 0x81
    PRESET_CALL = 0x82
    PRESET_DELETE = 0x83
    CRUISE_ADD = 0x84
    CRUISE_DELETE = 0x85
    CRUISE_SPEED = 0x86
    CRUISE_DWELL = 0x87
    CRUISE_START = 0x88
    SCAN = 0x89
    SCAN_SPEED = 0x8A
    AUX_ON = 0x8C
    AUX_OFF = 0x8D


class Motion(IntFlag):
    """PTZ bits of byte 4 (A.3.2)."""

    RIGHT = 0x01
    LEFT = 0x02
    DOWN = 0x04
    UP = 0x08
    ZOOM_IN = 0x10  # tele
    ZOOM_OUT = 0x20  # wide


class Lens(IntFlag):
    """FI bits of byte 4 (A.3.3)."""

    FOCUS_FAR = 0x01
    FOCUS_NEAR = 0x02
    IRIS_OPEN = 0x04
    IRIS_CLOSE = 0x08


class ScanAction(IntEnum):
    """data2 of ``PtzOp.SCAN`` (A.3.6)."""

    START = 0
    SET_LEFT = 1
    SET_RIGHT = 2


# Names of data1, data2, data3 per op for messages; None: unused by the standard (kept as given).
_NAMES: dict[PtzOp, tuple[str | None, str | None, str | None]] = {
    PtzOp.PTZ: ("pan speed", "tilt speed", "zoom speed"),
    PtzOp.FI: ("focus speed", "iris speed", None),
    PtzOp.PRESET_SET: (None, "preset", None),
    PtzOp.PRESET_CALL: (None, "preset", None),
    PtzOp.PRESET_DELETE: (None, "preset", None),
    PtzOp.CRUISE_ADD: ("cruise group", "preset", None),
    PtzOp.CRUISE_DELETE: ("cruise group", "preset", None),
    PtzOp.CRUISE_SPEED: ("cruise group", "cruise speed low byte", "cruise speed high nibble"),
    PtzOp.CRUISE_DWELL: ("cruise group", "dwell time low byte", "dwell time high nibble"),
    PtzOp.CRUISE_START: ("cruise group", None, None),
    PtzOp.SCAN: ("scan group", "scan action", None),
    PtzOp.SCAN_SPEED: ("scan group", "scan speed low byte", "scan speed high nibble"),
    PtzOp.AUX_ON: ("switch", None, None),
    PtzOp.AUX_OFF: ("switch", None, None),
}
_PRESET_OPS = frozenset({PtzOp.PRESET_SET, PtzOp.PRESET_CALL, PtzOp.PRESET_DELETE, PtzOp.CRUISE_ADD})
_WIDE_OPS = frozenset({PtzOp.CRUISE_SPEED, PtzOp.CRUISE_DWELL, PtzOp.SCAN_SPEED})  # 12-bit data2/data3
_GROUP_OPS = frozenset(op for op, names in _NAMES.items() if names[0] in ("cruise group", "scan group"))
_FLAG_MASK = {PtzOp.PTZ: 0x3F, PtzOp.FI: 0x0F}
_CONFLICTS: dict[PtzOp, tuple[tuple[int, str], ...]] = {
    PtzOp.PTZ: ((Motion.RIGHT | Motion.LEFT, "right and left"), (Motion.DOWN | Motion.UP, "down and up"),
                (Motion.ZOOM_IN | Motion.ZOOM_OUT, "zoom in and zoom out")),
    PtzOp.FI: ((Lens.FOCUS_FAR | Lens.FOCUS_NEAR, "focus far and focus near"),
               (Lens.IRIS_OPEN | Lens.IRIS_CLOSE, "iris open and iris close")),
}
_HEX16 = re.compile(r"[0-9A-Fa-f]{16}")
_NOT_HEX = re.compile(r"[^0-9A-Fa-f]")


def check_int(name: str, value: object, lo: int, hi: int, error: type[Exception] = PtzError) -> int:
    """``value`` if it is an int (not a bool) in ``lo..hi``, else ``error`` naming ``name`` and the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be an int {lo}..{hi}, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise error(f"{name} must be {lo}..{hi}, got {value}")
    return value




def _direction(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PtzError(f"{name} must be -1, 0 or 1, got {type(value).__name__}")
    if value not in (-1, 0, 1):
        raise PtzError(f"{name} must be -1, 0 or 1, got {value}")
    return value


def _bits(direction: int, positive: int, negative: int) -> int:
    return positive if direction > 0 else negative if direction < 0 else 0


@dataclass(frozen=True, slots=True)
class PtzCommand:
    """One PTZCmd. Prefer the constructors (``move``, ``stop``, ``preset_call``, ...) to the fields.

    Raises ``PtzError`` on a field out of range: ``data1``/``data2`` 0..255, ``data3`` 0..15,
    ``address`` 0..4095, ``flags`` within the op's family (none outside PTZ/FI), no conflicting bits,
    a preset 1..255 for the preset commands and ``CRUISE_ADD``, a scan action 0..2.
    """

    op: PtzOp
    flags: int = 0  # Motion bits for PTZ, Lens bits for FI, 0 otherwise
    data1: int = 0  # byte 5
    data2: int = 0  # byte 6
    data3: int = 0  # high nibble of byte 7
    address: int = DEFAULT_ADDRESS

    def __post_init__(self) -> None:
        if not isinstance(self.op, PtzOp):
            raise PtzError(f"op must be a PtzOp, got {self.op!r}")
        names = _NAMES[self.op]
        mask = _FLAG_MASK.get(self.op, 0)
        flags = check_int("flags", self.flags, 0, 0xFF)
        if flags & ~mask:
            raise PtzError(f"flags 0x{flags:02X} not allowed for {self.op.name} (mask 0x{mask:02X})")
        for both, words in _CONFLICTS.get(self.op, ()):
            if flags & both == both:
                raise PtzError(f"{self.op.name} command cannot move {words} at once")
        check_int(names[0] or "data1", self.data1, 0, 0xFF)
        if self.op in _PRESET_OPS:
            check_int("preset", self.data2, 1, 0xFF)
        elif self.op is PtzOp.SCAN:
            check_int("scan action", self.data2, 0, 2)
        else:
            check_int(names[1] or "data2", self.data2, 0, 0xFF)
        check_int(names[2] or "data3", self.data3, 0, 0xF)
        check_int("address", self.address, 0, 0xFFF)

    # --- constructors -----------------------------------------------------------------------------

    @classmethod
    def stop(cls, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Stop pan, tilt and zoom (and a running cruise or scan): ``A50F0100000000B5`` on address 1."""
        return cls(PtzOp.PTZ, address=address)

    @classmethod
    def move(
        cls,
        pan: int = 0,
        tilt: int = 0,
        zoom: int = 0,
        *,
        pan_speed: int = DEFAULT_SPEED,
        tilt_speed: int = DEFAULT_SPEED,
        zoom_speed: int = DEFAULT_ZOOM_SPEED,
        address: int = DEFAULT_ADDRESS,
    ) -> Self:
        """Start moving: ``pan`` 1 right / -1 left, ``tilt`` 1 up / -1 down, ``zoom`` 1 in (tele) / -1 out.

        0 stops that axis; the speed of an axis at 0 is written as 0 (``move()`` is ``stop()``).
        Speeds: pan and tilt 0..255, zoom 0..15.
        """
        pan, tilt, zoom = _direction("pan", pan), _direction("tilt", tilt), _direction("zoom", zoom)
        check_int("pan speed", pan_speed, 0, 0xFF)
        check_int("tilt speed", tilt_speed, 0, 0xFF)
        check_int("zoom speed", zoom_speed, 0, 0xF)
        flags = (_bits(pan, Motion.RIGHT, Motion.LEFT) | _bits(tilt, Motion.UP, Motion.DOWN)
                 | _bits(zoom, Motion.ZOOM_IN, Motion.ZOOM_OUT))
        return cls(PtzOp.PTZ, Motion(flags), pan_speed if pan else 0, tilt_speed if tilt else 0,
                   zoom_speed if zoom else 0, address)

    @classmethod
    def lens(
        cls,
        focus: int = 0,
        iris: int = 0,
        *,
        focus_speed: int = DEFAULT_SPEED,
        iris_speed: int = DEFAULT_SPEED,
        address: int = DEFAULT_ADDRESS,
    ) -> Self:
        """FI command: ``focus`` 1 far / -1 near, ``iris`` 1 open / -1 close, 0 stops (speeds 0..255)."""
        focus, iris = _direction("focus", focus), _direction("iris", iris)
        check_int("focus speed", focus_speed, 0, 0xFF)
        check_int("iris speed", iris_speed, 0, 0xFF)
        flags = _bits(focus, Lens.FOCUS_FAR, Lens.FOCUS_NEAR) | _bits(iris, Lens.IRIS_OPEN, Lens.IRIS_CLOSE)
        return cls(PtzOp.FI, Lens(flags), focus_speed if focus else 0, iris_speed if iris else 0, 0, address)

    @classmethod
    def focus(cls, direction: int, speed: int = DEFAULT_SPEED, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Focus 1 far / -1 near / 0 stop (focus and iris)."""
        return cls.lens(focus=direction, focus_speed=speed, address=address)

    @classmethod
    def iris(cls, direction: int, speed: int = DEFAULT_SPEED, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Iris 1 open / -1 close / 0 stop (focus and iris)."""
        return cls.lens(iris=direction, iris_speed=speed, address=address)

    @classmethod
    def preset_set(cls, preset: int, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Store the current position as ``preset`` (1..255)."""
        return cls(PtzOp.PRESET_SET, 0, 0, check_int("preset", preset, 1, 0xFF), 0, address)

    @classmethod
    def preset_call(cls, preset: int, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Go to ``preset`` (1..255)."""
        return cls(PtzOp.PRESET_CALL, 0, 0, check_int("preset", preset, 1, 0xFF), 0, address)

    @classmethod
    def preset_delete(cls, preset: int, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Forget ``preset`` (1..255)."""
        return cls(PtzOp.PRESET_DELETE, 0, 0, check_int("preset", preset, 1, 0xFF), 0, address)

    @classmethod
    def cruise_add(cls, group: int, preset: int, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Append ``preset`` (1..255) to cruise ``group`` (0..255)."""
        group = check_int("cruise group", group, 0, 0xFF)
        return cls(PtzOp.CRUISE_ADD, 0, group, check_int("preset", preset, 1, 0xFF), 0, address)

    @classmethod
    def cruise_delete(cls, group: int, preset: int, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Remove ``preset`` (1..255; 0: the whole cruise) from cruise ``group`` (0..255)."""
        group = check_int("cruise group", group, 0, 0xFF)
        return cls(PtzOp.CRUISE_DELETE, 0, group, check_int("preset", preset, 0, 0xFF), 0, address)

    @classmethod
    def cruise_speed(cls, group: int, speed: int, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Set the speed (0..4095) of cruise ``group`` (0..255)."""
        return cls._wide(PtzOp.CRUISE_SPEED, "cruise group", group, "cruise speed", speed, address)

    @classmethod
    def cruise_dwell(cls, group: int, seconds: int, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Set the dwell time at each point (0..4095 s) of cruise ``group`` (0..255)."""
        return cls._wide(PtzOp.CRUISE_DWELL, "cruise group", group, "dwell time", seconds, address)

    @classmethod
    def cruise_start(cls, group: int, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Start cruise ``group`` (0..255); ``stop()`` ends it."""
        return cls(PtzOp.CRUISE_START, 0, check_int("cruise group", group, 0, 0xFF), 0, 0, address)

    @classmethod
    def scan(cls, group: int, action: ScanAction = ScanAction.START, *,
             address: int = DEFAULT_ADDRESS) -> Self:
        """Start scan ``group`` (0..255), or set its left/right edge here; ``stop()`` ends it."""
        group = check_int("scan group", group, 0, 0xFF)
        return cls(PtzOp.SCAN, 0, group, ScanAction(check_int("scan action", action, 0, 2)), 0, address)

    @classmethod
    def scan_speed(cls, group: int, speed: int, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Set the speed (0..4095) of scan ``group`` (0..255)."""
        return cls._wide(PtzOp.SCAN_SPEED, "scan group", group, "scan speed", speed, address)

    @classmethod
    def aux(cls, switch: int, on: bool, *, address: int = DEFAULT_ADDRESS) -> Self:
        """Turn auxiliary switch ``switch`` (0..255; 1 is usually the wiper) on or off."""
        if not isinstance(on, bool):
            raise PtzError(f"on must be a bool, got {type(on).__name__}")
        op = PtzOp.AUX_ON if on else PtzOp.AUX_OFF
        return cls(op, 0, check_int("switch", switch, 0, 0xFF), 0, 0, address)

    @classmethod
    def _wide(cls, op: PtzOp, group_name: str, group: int, name: str, value: int, address: int) -> Self:
        group = check_int(group_name, group, 0, 0xFF)
        value = check_int(name, value, 0, 0xFFF)
        return cls(op, 0, group, value & 0xFF, value >> 8, address)

    # --- reading ----------------------------------------------------------------------------------

    @property
    def command(self) -> int:
        """Byte 4."""
        return int(self.op) | self.flags

    @property
    def pan(self) -> int:
        """1 right, -1 left, 0 (also outside PTZ)."""
        return self._axis(PtzOp.PTZ, Motion.RIGHT, Motion.LEFT)

    @property
    def tilt(self) -> int:
        """1 up, -1 down, 0."""
        return self._axis(PtzOp.PTZ, Motion.UP, Motion.DOWN)

    @property
    def zoom(self) -> int:
        """1 in (tele), -1 out (wide), 0."""
        return self._axis(PtzOp.PTZ, Motion.ZOOM_IN, Motion.ZOOM_OUT)

    @property
    def focus_direction(self) -> int:
        """1 far, -1 near, 0 (also outside FI)."""
        return self._axis(PtzOp.FI, Lens.FOCUS_FAR, Lens.FOCUS_NEAR)

    @property
    def iris_direction(self) -> int:
        """1 open, -1 close, 0."""
        return self._axis(PtzOp.FI, Lens.IRIS_OPEN, Lens.IRIS_CLOSE)

    @property
    def preset(self) -> int | None:
        """The preset of the preset commands and cruise add/delete, else None."""
        if self.op in _PRESET_OPS or self.op is PtzOp.CRUISE_DELETE:
            return self.data2
        return None

    @property
    def group(self) -> int | None:
        """The cruise or scan group, else None."""
        return self.data1 if self.op in _GROUP_OPS else None

    @property
    def value(self) -> int | None:
        """The 12-bit speed or dwell time of CRUISE_SPEED, CRUISE_DWELL, SCAN_SPEED, else None."""
        return self.data3 << 8 | self.data2 if self.op in _WIDE_OPS else None

    def _axis(self, family: PtzOp, positive: int, negative: int) -> int:
        if self.op is not family:
            return 0
        return 1 if self.flags & positive else -1 if self.flags & negative else 0

    # --- wire -------------------------------------------------------------------------------------

    def __bytes__(self) -> bytes:
        head = bytes((
            PREFIX,
            VERSION << 4 | (0xA + 0x5 + VERSION) % 16,
            self.address & 0xFF,
            self.command,
            self.data1,
            self.data2,
            self.data3 << 4 | self.address >> 8,
        ))
        return head + bytes((sum(head) % 256,))

    def encode(self) -> str:
        """The 16 upper-case hex digits for ``<PTZCmd>``."""
        return bytes(self).hex().upper()

    def __str__(self) -> str:
        return self.encode()

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """The 8 raw bytes (see the module docstring); raises ``PtzError``."""
        if len(data) != 8:
            raise PtzError(f"PTZCmd must be 8 bytes, got {len(data)}")
        if data[0] != PREFIX:
            raise PtzError(f"PTZCmd must start with A5, got {data[0]:02X}")
        version, check = data[1] >> 4, data[1] & 0xF
        expected = (0xA + 0x5 + version) % 16
        if check != expected:
            raise PtzError(f"PTZCmd byte 2 check nibble is {check:X}, expected {expected:X} for version {version}")
        if version != VERSION:
            raise PtzError(f"PTZCmd version {version} is not supported (only 0)")
        checksum = sum(data[:7]) % 256
        if data[7] != checksum:
            raise PtzError(f"PTZCmd checksum is {data[7]:02X}, expected {checksum:02X}")
        command = data[3]
        flags: int
        if (command & 0xC0) == PtzOp.PTZ:
            op, flags = PtzOp.PTZ, Motion(command & 0x3F)
        elif (command & 0xF0) == PtzOp.FI:
            op, flags = PtzOp.FI, Lens(command & 0x0F)
        else:
            try:
                op, flags = PtzOp(command), 0
            except ValueError:
                raise PtzError(f"unknown PTZCmd command byte {command:02X}") from None
        return cls(op, flags, data[4], data[5], data[6] >> 4, (data[6] & 0xF) << 8 | data[2])

    @classmethod
    def decode(cls, text: str) -> Self:
        """``<PTZCmd>`` text: 16 hex digits, either case, surrounding whitespace ignored."""
        if not isinstance(text, str):
            raise PtzError(f"PTZCmd must be a str, got {type(text).__name__}")
        digits = text.strip()
        if len(digits) != 16:
            raise PtzError(f"PTZCmd must be 16 hex digits, got {len(digits)} characters")
        if _HEX16.fullmatch(digits) is None:
            bad = _NOT_HEX.search(digits)
            assert bad is not None
            raise PtzError(f"PTZCmd has a non-hex character {bad.group()!r} at position {bad.start()}")
        return cls.parse(bytes.fromhex(digits))
