"""What a simulated device says about itself: names, catalog items and the split of a catalog into parts.

Pure functions (no I/O): ``SimDevice`` calls them and encodes the result with ``sip.manscdp``. Channel names are
Chinese and deliberately include characters outside GB2312 proper (镕, 喆, 堃: in GBK/GB18030 only), the ones that
break gateways decoding "GB2312" with the strict GB2312 codec (GB28181.md, Charset).
"""

from __future__ import annotations

from collections.abc import Sequence

from sip.manscdp import Field

from .config import SimConfig, channel_id, derived_id

__all__ = ["PLACES", "Item", "catalog_ids", "catalog_items", "channel_name", "device_name", "group_ids", "split_parts"]

Item = tuple[str, Sequence[Field]]
"""A catalog item: its DeviceID and its fields (DeviceID first), ready for ``element("Item", fields)``."""

PLACES = (
    "镕城大道东口",
    "喆园停车场",
    "堃山路与人民路交叉口",
    "北门入口",
    "一号楼大厅",
    "地下车库出口",
    "南广场",
    "周界围墙西段",
)
"""Channel locations, cycled; the first three carry the rare characters 镕, 喆 and 堃."""


def device_name(index: int) -> str:
    """Name of device ``index`` (from 0)."""
    return f"模拟设备{index + 1:04d}"


def channel_name(index: int) -> str:
    """Name of channel ``index`` (from 0): ``通道01-镕城大道东口``."""
    return f"通道{index + 1:02d}-{PLACES[index % len(PLACES)]}"


def _coordinates(device_index: int, channel_index: int) -> tuple[str, str]:
    longitude = 117.227 + device_index * 0.001 + channel_index * 0.0001
    latitude = 31.820 + device_index * 0.001 + channel_index * 0.0001
    return f"{longitude:.6f}", f"{latitude:.6f}"


def group_ids(config: SimConfig, device_id: str) -> tuple[str, list[str]] | None:
    """The business group and virtual organisation IDs of a device (``catalog_groups``), else None."""
    if not config.catalog_groups:
        return None
    return derived_id(device_id, "215", 1), [derived_id(device_id, "216", n) for n in range(1, config.virtual_orgs + 1)]


def catalog_ids(config: SimConfig, device_id: str) -> list[str]:
    """The IDs of ``catalog_items`` in the same order, without building the items."""
    groups = group_ids(config, device_id)
    parents = [groups[0], *groups[1]] if groups is not None else []
    return [*parents, *(channel_id(device_id, i) for i in range(config.channels))]


def catalog_items(config: SimConfig, device_id: str, device_index: int, ip: str, port: int) -> list[Item]:
    """Every catalog item of a device, parents first: [business group, virtual organisations,] channels.

    :param ip: the address channels report (``IPAddress``), the device's own.
    :param port: the device's SIP port (``Port``).
    """
    civil_code = device_id[:6]
    items: list[Item] = []
    parents: list[str] = [device_id]
    groups = group_ids(config, device_id)
    if groups is not None:
        group_id, parents = groups
        items.append((group_id, (("DeviceID", group_id), ("Name", f"模拟业务分组{device_index + 1}"))))
        for n, org_id in enumerate(parents, 1):
            items.append((org_id, (("DeviceID", org_id), ("Name", f"虚拟组织{n}-喆堃片区"),
                                   ("ParentID", group_id), ("BusinessGroupID", group_id))))
    for index in range(config.channels):
        cid = channel_id(device_id, index)
        longitude, latitude = _coordinates(device_index, index)
        items.append((cid, (
            ("DeviceID", cid),
            ("Name", channel_name(index)),
            ("Manufacturer", config.manufacturer),
            ("Model", config.device_model),
            ("Owner", "Owner"),
            ("CivilCode", civil_code),
            ("Address", PLACES[index % len(PLACES)]),
            ("Parental", "0"),
            ("ParentID", parents[index % len(parents)]),
            ("SafetyWay", "0"),
            ("RegisterWay", "1"),
            ("Secrecy", "0"),
            ("IPAddress", ip),
            ("Port", str(port)),
            ("Status", "ON"),
            ("Longitude", longitude),
            ("Latitude", latitude),
        )))
    return items


def split_parts(items: Sequence[Item], per_message: int) -> list[list[Item]]:
    """Items in consecutive parts of at most ``per_message``; an empty catalog is one empty part."""
    if not items:
        return [[]]
    return [list(items[i : i + per_message]) for i in range(0, len(items), per_message)]
