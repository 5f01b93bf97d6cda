"""Simulated device control and configuration: PTZ, presets, TeleBoot, Record/Guard/Alarm, DeviceConfig.

Theory of operation
-------------------
Each ``SimDevice`` has one ``DeviceControlSim`` (``device.control``) which adds its handlers to the device's
``manscdp_handlers``:

* ``<Control> DeviceControl``: every body is kept (``bodies``, the raw bytes; ``ptz_log``, each ``<PTZCmd>``
  text exactly as received) and answered ``200 OK``, except a malformed ``<PTZCmd>``, answered ``400`` with
  ``sip.ptz``'s reason (the router turns the ``PtzError`` into the status). A PTZ command moves the channel's
  virtual head (``PtzState``) one step: ``pan``/``tilt`` by ±speed, ``zoom`` by ±zoom speed, so a test can
  see exactly what arrived; stop ends the motion (``moving``). Presets store and recall the position.
  ``TeleBoot`` reboots the device after ``REBOOT_DELAY`` (stop without unregistering, then boot: a new
  registration). ``RecordCmd``, ``GuardCmd`` and ``AlarmCmd`` change ``recording``/``guard`` and get a
  ``<Response>`` ``Result OK``; PTZ, TeleBoot, IFameCmd, HomePosition and DragZoom get nothing more (§9.3.2).
* Cruise and scan (附录 A.3.5, A.3.6): cruise groups collect points (presets), speed and dwell time
  (``PtzState.cruises``); cruise start goes to the first point and sets ``cruising``; scan edges are the pan
  position when set, scan start sets ``scanning``; any PTZ command (stop included) ends both. Auxiliary switches
  on/off are kept in ``PtzState.aux``.
* ``<Query> PresetQuery``: the channel's presets (``<PresetList Num>``, ``<SumNum>`` the total), in parts of
  ``presets_per_message`` (default 10: 25 presets answer in 3 MESSAGEs with the query's SN), sent one after the
  other.
* ``<Control> DeviceConfig``: ``<BasicParam>`` is applied (``Name`` renames the device, ``HeartBeatInterval``
  changes the keepalive period, ``Expiration``/``HeartBeatCount`` are kept) and answered ``Result OK``.
* ``<Query> ConfigDownload``: ``<BasicParam>`` as it is now (other config types are not simulated: left out).

Misbehaviour hooks (tests): ``silent = True`` answers ``200 OK`` but never sends the ``<Response>``;
``preset_parts_order`` picks which PresetQuery parts are sent, in which order (drop, repeat, reorder).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sip import manscdp
from sip.endpoint import RequestReceived
from sip.ptz import PtzCommand, PtzOp, ScanAction

from ..sip_transport import SipServer

if TYPE_CHECKING:
    from .device import SimDevice

__all__ = ["PRESETS_PER_MESSAGE", "REBOOT_DELAY", "Cruise", "DeviceControlSim", "PtzState", "Scan"]

REBOOT_DELAY = 0.2
"""Seconds between a TeleBoot and the device going down (it then registers again at once)."""
PRESETS_PER_MESSAGE = 10
"""Presets per PresetQuery ``<Response>`` part (``DeviceControlSim.presets_per_message``'s default)."""


@dataclass(slots=True)
class Cruise:
    """One cruise group (附录 A.3.5): its points (presets, in the order added), speed and dwell time (s)."""

    points: list[int] = field(default_factory=list)
    speed: int = 0
    dwell: int = 0


@dataclass(slots=True)
class Scan:
    """One scan group (附录 A.3.6): its left and right edges (pan positions, None until set) and speed."""

    left: int | None = None
    right: int | None = None
    speed: int = 0


@dataclass(slots=True)
class PtzState:
    """One channel's virtual PTZ head: integer position, the motion in progress, presets, cruise and scan groups,
    what runs (``cruising``/``scanning``: the group, ended by any PTZ command, stop included) and the auxiliary
    switches (``aux``: switch -> on)."""

    pan: int = 0
    tilt: int = 0
    zoom: int = 0
    moving: tuple[int, int, int] = (0, 0, 0)  # pan, tilt, zoom directions of the last PTZ command
    presets: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    cruises: dict[int, Cruise] = field(default_factory=dict)
    scans: dict[int, Scan] = field(default_factory=dict)
    cruising: int | None = None
    scanning: int | None = None
    aux: dict[int, bool] = field(default_factory=dict)

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.pan, self.tilt, self.zoom)

    def apply(self, cmd: PtzCommand) -> None:
        op = cmd.op
        if op is PtzOp.PTZ:
            self.moving = (cmd.pan, cmd.tilt, cmd.zoom)
            self.pan += cmd.pan * cmd.data1
            self.tilt += cmd.tilt * cmd.data2
            self.zoom += cmd.zoom * cmd.data3
            self.cruising = self.scanning = None  # a PTZ stop (or a manual move) ends a cruise or scan
        elif op is PtzOp.PRESET_SET:
            self.presets[cmd.data2] = self.position
        elif op is PtzOp.PRESET_CALL:
            self._go(cmd.data2)
        elif op is PtzOp.PRESET_DELETE:
            self.presets.pop(cmd.data2, None)
        elif op is PtzOp.CRUISE_ADD:
            self.cruises.setdefault(cmd.data1, Cruise()).points.append(cmd.data2)
        elif op is PtzOp.CRUISE_DELETE:
            if cmd.data2 == 0:  # the whole cruise (as WVP sends it)
                self.cruises.pop(cmd.data1, None)
                if self.cruising == cmd.data1:
                    self.cruising = None
            elif (cruise := self.cruises.get(cmd.data1)) is not None:
                cruise.points = [p for p in cruise.points if p != cmd.data2]
        elif op is PtzOp.CRUISE_SPEED:
            self.cruises.setdefault(cmd.data1, Cruise()).speed = cmd.value or 0
        elif op is PtzOp.CRUISE_DWELL:
            self.cruises.setdefault(cmd.data1, Cruise()).dwell = cmd.value or 0
        elif op is PtzOp.CRUISE_START:
            cruise = self.cruises.get(cmd.data1)
            if cruise is not None and cruise.points:  # a cruise without points does nothing
                self.cruising, self.scanning = cmd.data1, None
                self._go(cruise.points[0])
        elif op is PtzOp.SCAN:
            action = ScanAction(cmd.data2)
            if action is ScanAction.START:
                self.scanning, self.cruising = cmd.data1, None
                self.scans.setdefault(cmd.data1, Scan())
            elif action is ScanAction.SET_LEFT:
                self.scans.setdefault(cmd.data1, Scan()).left = self.pan
            else:
                self.scans.setdefault(cmd.data1, Scan()).right = self.pan
        elif op is PtzOp.SCAN_SPEED:
            self.scans.setdefault(cmd.data1, Scan()).speed = cmd.value or 0
        elif op in (PtzOp.AUX_ON, PtzOp.AUX_OFF):
            self.aux[cmd.data1] = op is PtzOp.AUX_ON

    def _go(self, preset: int) -> None:
        stored = self.presets.get(preset)
        if stored is not None:
            self.pan, self.tilt, self.zoom = stored
            self.moving = (0, 0, 0)


class DeviceControlSim:
    """The control side of one simulated device; see the module docstring."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.silent = False
        """Test hook: answer 200 OK but never send the ``<Response>``."""
        self.presets_per_message = PRESETS_PER_MESSAGE
        """Presets per PresetQuery answer part: 25 presets answer in 3 MESSAGEs at the default 10."""
        self.preset_parts_order: list[int] | None = None
        """Test hook: the PresetQuery parts to send, by index, in this order (repeats are sent twice, missing ones
        withheld); None sends every part in order."""
        self.preset_parts_sent = 0
        """PresetQuery answer parts sent (and accepted or not)."""
        self.bodies: list[bytes] = []
        """Every DeviceControl/DeviceConfig body received, as received (bounded to the last 1000)."""
        self.ptz_log: list[str] = []
        """Each ``<PTZCmd>`` text exactly as received (valid or not; bounded to the last 1000)."""
        self.ptz: dict[str, PtzState] = {}
        """Virtual PTZ heads by the ID addressed (a channel, or the device itself)."""
        self.recording = False
        self.guard = False
        self.reboots = 0
        self.expiration = device.config.expires
        self.heartbeat_count = 3
        self._reboot_tasks: set[asyncio.Task[None]] = set()
        device.manscdp_handlers.update({
            ("control", "devicecontrol"): self._on_device_control,
            ("control", "deviceconfig"): self._on_device_config,
            ("query", "presetquery"): self._on_preset_query,
            ("query", "configdownload"): self._on_config_download,
        })

    def head(self, target_id: str) -> PtzState:
        state = self.ptz.get(target_id)
        if state is None:
            state = self.ptz[target_id] = PtzState()
        return state

    def _keep(self, log: list[Any], value: object) -> None:
        log.append(value)
        del log[:-1000]

    # ------------------------------------------------------------------------------------------ handlers
    def _on_device_control(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        device = self.device
        self._keep(self.bodies, ev.request.body)
        ptz_text = doc.text("PTZCmd")
        if ptz_text is not None:
            self._keep(self.ptz_log, ptz_text)
            cmd = PtzCommand.decode(ptz_text)  # PtzError (400) for a malformed one
            self.head(doc.device_id).apply(cmd)
            device.log.info("ptz command", target=doc.device_id, cmd=cmd.encode(), op=cmd.op.name)
            device._ok(server, ev)
            return
        device._ok(server, ev)
        answer = True
        if doc.text("TeleBoot") is not None:
            answer = False
            self._schedule_reboot()
        elif (record := doc.text("RecordCmd")) is not None:
            self.recording = record == "Record"
        elif (guard := doc.text("GuardCmd")) is not None:
            self.guard = guard == "SetGuard"
        elif doc.text("AlarmCmd") is None:
            answer = False  # IFameCmd, HomePosition, DragZoomIn/Out: no Response (§9.3.2)
        if answer:
            self._respond(doc, [("Result", "OK")])

    def _on_device_config(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        device = self.device
        self._keep(self.bodies, ev.request.body)
        device._ok(server, ev)
        basic = doc.find("BasicParam")
        if basic is None:
            self._respond(doc, [("Result", "ERROR")])
            return
        values = basic.flat()
        try:
            if "Expiration" in values:
                self.expiration = int(values["Expiration"])
            if "HeartBeatInterval" in values:
                interval = float(values["HeartBeatInterval"])
                if interval <= 0:
                    raise ValueError("HeartBeatInterval must be positive")
                device.keepalive_interval = interval
            if "HeartBeatCount" in values:
                self.heartbeat_count = int(values["HeartBeatCount"])
        except ValueError:
            self._respond(doc, [("Result", "ERROR")])
            return
        if values.get("Name"):
            device.name = values["Name"]
        self._respond(doc, [("Result", "OK")])

    def _on_preset_query(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self.device._ok(server, ev)
        if self.silent:
            self.device.log.info("control answer withheld (silent)", cmd_type=doc.cmd_type, sn=doc.sn)
            return
        self.device.spawn(self._answer_presets(doc, self.preset_parts(doc.device_id)))

    def preset_parts(self, target_id: str) -> list[list[manscdp.Field]]:
        """The fields of each PresetQuery Response part for ``target_id``'s presets, in order:
        ``presets_per_message`` presets each (an empty list is one part), ``<SumNum>`` the total in every part."""
        presets = sorted(self.head(target_id).presets)
        step = max(1, self.presets_per_message)
        chunks = [presets[i:i + step] for i in range(0, len(presets), step)] or [[]]
        return [[("SumNum", str(len(presets))), manscdp.element("PresetList", [
                    manscdp.element("Item", [("PresetID", str(p)), ("PresetName", f"Preset {p}")]) for p in chunk
                ], Num=len(chunk))] for chunk in chunks]

    async def _answer_presets(self, query: manscdp.ManscdpDocument, parts: list[list[manscdp.Field]]) -> None:
        """Send the parts one after the other (each waits for its 200 OK), as ``preset_parts_order`` says."""
        device = self.device
        order = self.preset_parts_order
        accepted = True
        for index in range(len(parts)) if order is None else order:
            if not 0 <= index < len(parts):
                continue
            resp = await device.send_manscdp("Response", query.cmd_type, parts[index], sn=query.sn,
                                             device_id=device._target(query))
            self.preset_parts_sent += 1
            if resp is None or resp.status >= 300:
                accepted = False
                device.log.warning("preset part not accepted", sn=query.sn, part=index,
                                   status=resp.status if resp is not None else None)
        if accepted:
            device.queries[query.cmd_type] += 1  # one answered query, as for Catalog

    def _on_config_download(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        device = self.device
        device._ok(server, ev)
        kinds = (doc.text("ConfigType") or "").split("/")
        fields: list[manscdp.Field] = [("Result", "OK")]
        if "BasicParam" in kinds:
            cfg = device.config
            interval = device.keepalive_interval
            fields.append(("BasicParam", [
                ("Name", device.name), ("DeviceID", device.device_id), ("SIPServerID", cfg.platform_id),
                ("SIPServerIP", cfg.server[0]), ("SIPServerPort", str(cfg.server[1])), ("DomainName", cfg.domain),
                ("Expiration", str(self.expiration)),
                ("HeartBeatInterval", str(int(interval)) if interval == int(interval) else str(interval)),
                ("HeartBeatCount", str(self.heartbeat_count)),
            ]))
        self._respond(doc, fields)

    # ------------------------------------------------------------------------------------------ helpers
    def _respond(self, doc: manscdp.ManscdpDocument, fields: list[manscdp.Field]) -> None:
        if self.silent:
            self.device.log.info("control answer withheld (silent)", cmd_type=doc.cmd_type, sn=doc.sn)
            return
        self.device.spawn(self.device._answer(doc, fields))

    def _schedule_reboot(self) -> None:
        """Not a device task: ``stop()`` cancels those, and the reboot is what calls it."""
        task = asyncio.create_task(self._reboot(), name=f"sim.{self.device.device_id}.reboot")
        self._reboot_tasks.add(task)
        task.add_done_callback(self._reboot_tasks.discard)

    async def _reboot(self) -> None:
        await asyncio.sleep(REBOOT_DELAY)
        device = self.device
        if device.sim.server is None:  # the simulator stopped meanwhile
            return
        device.log.info("rebooting (TeleBoot)")
        self.reboots += 1
        await device.stop(unregister=False)
        device.start()
