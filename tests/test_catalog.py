"""Catalog reassembly by (device, SN): parts in any order, duplicates, partial results, bounds."""

from __future__ import annotations

from gateway.catalog import CatalogCollector, item_kind
from sip import manscdp
from sip.manscdp import element

DEVICE = "34020000001180000001"


def part(sn: int, total: int, ids: list[str]) -> manscdp.ManscdpDocument:
    items = [element("Item", [("DeviceID", i), ("Name", f"通道{i[-3:]}"), ("Status", "ON")]) for i in ids]
    body = manscdp.encode("Response", "Catalog", sn, DEVICE,
                          [("SumNum", total), element("DeviceList", items, Num=len(items))])
    return manscdp.decode(body)


def ids(n: int, start: int = 0) -> list[str]:
    return [f"34020000001310{i:06d}" for i in range(start, start + n)]


def test_parts_in_order_complete() -> None:
    c = CatalogCollector(DEVICE, 7)
    c.add(part(7, 5, ids(2)))
    assert not c.complete
    c.add(part(7, 5, ids(2, 2)))
    c.add(part(7, 5, ids(1, 4)))
    assert c.complete and list(c.items) == ids(5)
    assert c.items[ids(1)[0]]["Name"] == "通道000"


def test_out_of_order_and_duplicates_give_one_complete_catalog() -> None:
    c = CatalogCollector(DEVICE, 7)
    for p in (ids(2, 4), ids(2, 0), ids(2, 4), ids(2, 2), ids(2, 0)):
        c.add(part(7, 6, p))
    assert c.complete
    assert sorted(c.items) == ids(6)
    assert c.duplicates == 4 and c.parts == 5


def test_partial_when_parts_missing() -> None:
    c = CatalogCollector(DEVICE, 7)
    c.add(part(7, 10, ids(4)))
    assert not c.complete and c.sum_num == 10 and len(c.items) == 4


def test_bounded_whatever_sumnum_claims() -> None:
    c = CatalogCollector(DEVICE, 7, max_items=3)
    c.add(part(7, 1_000_000, ids(5)))
    assert len(c.items) == 3 and c.overflow == 2 and c.complete


def test_item_kinds() -> None:
    assert item_kind("34020000002150000001") == "business_group"
    assert item_kind("34020000002160000001") == "virtual_org"
    assert item_kind("34020000001310000001") == "channel"
    assert item_kind("short") == "channel"
