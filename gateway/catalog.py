"""Reassembly of multi-part MANSCDP answers (Catalog, and later RecordInfo) by (device, SN).

A device answers one Catalog query with several ``MESSAGE``s carrying the same ``SN``: ``<SumNum>`` is the total,
``<DeviceList Num="k">`` the items in this part. Parts arrive in any order, may repeat (UDP retransmission at the
application level, or firmware quirks) and may never all arrive. ``CatalogCollector`` keeps the items by their
``DeviceID`` (a repeated item replaces nothing: the first copy wins, and it is counted as a duplicate), knows
when it is complete, and is bounded: it never holds more than ``max_items`` items whatever ``SumNum`` claims.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sip.manscdp import ManscdpDocument

# GB/T 28181 ID type codes (digits 11-13 of the 20-digit ID) of catalog items that are not channels.
BUSINESS_GROUP = "215"
VIRTUAL_ORG = "216"


def item_kind(item_id: str) -> str:
    """``channel``, ``business_group`` or ``virtual_org`` from a catalog item's 20-digit ID."""
    code = item_id[10:13] if len(item_id) == 20 else ""
    if code == BUSINESS_GROUP:
        return "business_group"
    if code == VIRTUAL_ORG:
        return "virtual_org"
    return "channel"


@dataclass(slots=True)
class CatalogCollector:
    device_id: str
    sn: int
    max_items: int = 100_000
    sum_num: int | None = None
    items: dict[str, dict[str, str]] = field(default_factory=dict)
    parts: int = 0
    duplicates: int = 0
    overflow: int = 0

    def add(self, doc: ManscdpDocument) -> None:
        """Take one part of the answer."""
        self.parts += 1
        total = doc.text("SumNum")
        if total is not None and total.isascii() and total.isdigit():
            value = int(total)
            self.sum_num = value if self.sum_num is None else max(self.sum_num, value)
        for item in doc.items("DeviceList"):
            item_id = item.get("DeviceID", "")
            if not item_id:
                continue
            if item_id in self.items:
                self.duplicates += 1
                continue
            if len(self.items) >= self.max_items:
                self.overflow += 1
                continue
            self.items[item_id] = item

    @property
    def complete(self) -> bool:
        return self.sum_num is not None and len(self.items) >= min(self.sum_num, self.max_items)
