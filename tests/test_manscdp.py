"""MANSCDP XML bodies (sip/manscdp.py): charsets, field shapes, hostile input, round trips."""

from __future__ import annotations

import enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.errors import InvalidBody, LocalProtocolError, MessageTooLarge, RemoteProtocolError
from sip.manscdp import (
    BodyTooLarge,
    Element,
    Field,
    ManscdpDocument,
    decode,
    element,
    encode,
)

DEVICE = "34020000001320000001"
CHANNEL_1 = "34020000001320000011"
CHANNEL_2 = "34020000001320000012"
# 镕 喆 堃 are GBK, not GB2312; 䶮 is CJK Ext-A (GB18030 FE9F); 𠀀 is Ext-B (GB18030 four-byte only).
RARE_1 = "朱镕基 喆堃"
RARE_2 = "䶮𠀀 A&B"

KEEPALIVE = (
    b'<?xml version="1.0" encoding="GB2312"?>\r\n'
    b"<Notify>\r\n"
    b"<CmdType>Keepalive</CmdType>\r\n"
    b"<SN>43</SN>\r\n"
    b"<DeviceID>34020000001320000001</DeviceID>\r\n"
    b"<Status>OK</Status>\r\n"
    b"</Notify>\r\n"
)


def catalog_text(declaration: str) -> str:
    """A Catalog response as an NVR sends it (2 channels, names needing GBK/GB18030)."""
    return (
        f"{declaration}"
        "<Response>\r\n"
        "<CmdType>Catalog</CmdType>\r\n"
        "<SN>17</SN>\r\n"
        f"<DeviceID>{DEVICE}</DeviceID>\r\n"
        "<SumNum>2</SumNum>\r\n"
        '<DeviceList Num="2">\r\n'
        "<Item>\r\n"
        f"<DeviceID>{CHANNEL_1}</DeviceID>\r\n"
        f"<Name>{RARE_1}</Name>\r\n"
        "<Manufacturer>Hikvision</Manufacturer>\r\n"
        "<Status>ON</Status>\r\n"
        "<Info>\r\n<PTZType>1</PTZType>\r\n</Info>\r\n"
        "</Item>\r\n"
        "<Item>\r\n"
        f"<DeviceID>{CHANNEL_2}</DeviceID>\r\n"
        f"<Name> {RARE_2.replace('&', '&amp;')} </Name>\r\n"
        "<Status>OFF</Status>\r\n"
        "</Item>\r\n"
        "</DeviceList>\r\n"
        "</Response>\r\n"
    )


EXPECTED_ITEMS = [
    {"DeviceID": CHANNEL_1, "Name": RARE_1, "Manufacturer": "Hikvision", "Status": "ON", "Info/PTZType": "1"},
    {"DeviceID": CHANNEL_2, "Name": RARE_2, "Status": "OFF"},
]


def check_catalog(doc: ManscdpDocument) -> None:
    assert (doc.root, doc.cmd_type, doc.sn, doc.device_id) == ("Response", "Catalog", 17, DEVICE)
    assert doc.text("SumNum") == "2"
    assert doc.attr("DeviceList", "Num") == "2"
    assert doc.items("DeviceList") == EXPECTED_ITEMS


# --- field shapes ---------------------------------------------------------------------------------


def test_keepalive() -> None:
    doc = decode(KEEPALIVE)
    assert (doc.root, doc.cmd_type, doc.sn, doc.device_id, doc.encoding) == (
        "Notify",
        "Keepalive",
        43,
        DEVICE,
        "GB2312",
    )
    assert doc.text("Status") == "OK"
    assert doc.text("Missing") is None and doc.text("Missing", "x") == "x"
    assert bytes(doc) == KEEPALIVE
    assert encode("Notify", "Keepalive", 43, DEVICE, [("Status", "OK")]) == KEEPALIVE


def test_catalog_query_exact_bytes() -> None:
    body = encode("Query", "Catalog", 17, DEVICE)
    assert body == (
        b'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n'
        b"<SN>17</SN>\r\n<DeviceID>34020000001320000001</DeviceID>\r\n</Query>\r\n"
    )
    doc = decode(body)
    assert (doc.root, doc.cmd_type, doc.sn, doc.device_id) == ("Query", "Catalog", 17, DEVICE)
    assert doc.items("DeviceList") == []


@pytest.mark.parametrize(
    ("declared", "codec", "answer"),
    [
        ("GB2312", "gb18030", "GB2312"),
        ("gb2312", "gb18030", "GB2312"),
        ("GBK", "gb18030", "GB2312"),
        ("GB18030", "gb18030", "GB18030"),
        ("gb18030", "gb18030", "GB18030"),
        ("UTF-8", "utf-8", "UTF-8"),
        ("utf-8", "utf-8", "UTF-8"),
    ],
)
def test_catalog_response_in_each_declared_charset(declared: str, codec: str, answer: str) -> None:
    body = catalog_text(f'<?xml version="1.0" encoding="{declared}"?>\r\n').encode(codec)
    doc = decode(body)
    check_catalog(doc)
    assert doc.encoding == answer
    assert decode(bytes(doc)) == doc


def test_gb2312_declared_bytes_really_hold_rare_characters() -> None:
    body = catalog_text('<?xml version="1.0" encoding="GB2312"?>\r\n').encode("gb18030")
    # The two-byte GBK codes of 镕, the GB18030 code of 䶮 and the four-byte code of 𠀀 are in there.
    assert b"\xe9\x46" in body and b"\xfe\x9f" in body and b"\x95\x32\x82\x36" in body
    with pytest.raises(UnicodeDecodeError):
        body.decode("gb2312")  # what a naive decoder would do
    check_catalog(decode(body))


def test_no_declaration_with_gb_bytes_falls_back_to_gb18030() -> None:
    doc = decode(catalog_text("").encode("gb18030"))
    check_catalog(doc)
    assert doc.encoding == "GB2312"


def test_no_declaration_with_utf8_bytes() -> None:
    doc = decode(catalog_text("").encode("utf-8"))
    check_catalog(doc)
    assert doc.encoding == "UTF-8"


def test_utf8_bom() -> None:
    doc = decode(b"\xef\xbb\xbf" + catalog_text('<?xml version="1.0" encoding="UTF-8"?>').encode())
    check_catalog(doc)
    assert doc.encoding == "UTF-8"


def test_mislabelled_charset_is_recovered_strictly() -> None:
    # Declares UTF-8, sends GB bytes (a field quirk): UTF-8 fails strictly, GB18030 then succeeds.
    doc = decode(catalog_text('<?xml version="1.0" encoding="UTF-8"?>\r\n').encode("gb18030"))
    check_catalog(doc)
    assert doc.encoding == "GB2312"


def test_undecodable_bytes_are_refused_not_replaced() -> None:
    body = b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify><Name>\xff\xff</Name></Notify>'
    with pytest.raises(InvalidBody) as exc:
        decode(body)
    assert exc.value.reason == "undecodable body: neither GB18030 nor UTF-8 (byte 0xff at offset 55)"
    with pytest.raises(InvalidBody, match=r"^undecodable body: neither UTF-8 nor GB18030 \(byte 0x80 at offset 3\)$"):
        decode(b"<a>\x80</a>")


def test_unsupported_declared_charset() -> None:
    with pytest.raises(InvalidBody) as exc:
        decode(b'<?xml version="1.0" encoding="Big5"?><Notify/>')
    assert exc.value.reason == 'unsupported encoding "Big5"'


def test_round_trip_each_charset_with_nested_attributes_and_escapes() -> None:
    fields: list[Field] = [
        ("SumNum", 2),
        element(
            "DeviceList",
            [
                ("Item", [("DeviceID", CHANNEL_1), ("Name", RARE_1), ("Info", [("PTZType", 1)])]),
                ("Item", [("DeviceID", CHANNEL_2), ("Name", " " + RARE_2 + " "), ("Longitude", 116.397128)]),
            ],
            Num=2,
        ),
        ("Skipped", None),
        ("Note", '<tag> & "quotes" \r\n'),
    ]
    for encoding, codec in (("GB2312", "gb18030"), ("GB18030", "gb18030"), ("UTF-8", "utf-8"), ("gbk", "gb18030")):
        body = encode("Response", "Catalog", 17, DEVICE, fields, encoding=encoding)
        label = "GB2312" if encoding == "gbk" else encoding
        assert body.startswith(f'<?xml version="1.0" encoding="{label}"?>\r\n'.encode())
        assert RARE_1.encode(codec) in body
        doc = decode(body)
        assert doc.encoding == label
        assert doc.items("DeviceList")[0]["Info/PTZType"] == "1"
        assert doc.items("DeviceList")[1]["Longitude"] == "116.397128"
        assert doc.find("Note") == Element("Note", '<tag> & "quotes" \r\n')
        assert doc.text("Note") == '<tag> & "quotes"'
        assert doc.text("Skipped") is None
        assert doc == ManscdpDocument.build("Response", "Catalog", 17, DEVICE, fields, encoding)
        assert bytes(doc) == body


def test_encode_layout_of_nested_elements() -> None:
    body = encode(
        "Response",
        "RecordInfo",
        3,
        DEVICE,
        [element("RecordList", [("Item", [("Type", "time")])], Num=1), element("Empty")],
        encoding="UTF-8",
    )
    assert body.decode().endswith(
        '<RecordList Num="1">\r\n<Item>\r\n<Type>time</Type>\r\n</Item>\r\n</RecordList>\r\n'
        "<Empty></Empty>\r\n</Response>\r\n"
    )


class Speed(enum.IntEnum):
    FAST = 2


class Status(enum.StrEnum):
    ON = "ON"


def test_encode_scalars_and_misuse() -> None:
    doc = decode(encode("Notify", "Alarm", 1, DEVICE, [("Speed", Speed.FAST), ("Status", Status.ON)]))
    assert (doc.text("Speed"), doc.text("Status")) == ("2", "ON")
    misuse: list[tuple[list[object], str]] = [
        ([("Flag", True)], "<Flag>: bool is ambiguous in MANSCDP, pass a str"),
        ([("Raw", b"x")], "<Raw>: cannot encode bytes"),
        ([("Bad tag", "x")], "not an XML name: 'Bad tag'"),
        ([("Ctl", "a\x01b")], "<Ctl> has a character XML cannot carry: U+0001"),
        ([("SN", 5)], "<SN> is set by the arguments, not by fields"),
        (["Status"], "not a MANSCDP field: 'Status'"),
    ]
    for fields, message in misuse:
        with pytest.raises(LocalProtocolError) as exc:
            encode("Notify", "Alarm", 1, DEVICE, fields)  # type: ignore[arg-type]
        assert exc.value.reason == message
    with pytest.raises(LocalProtocolError, match="unknown MANSCDP root 'Reply'"):
        encode("Reply", "Alarm", 1, DEVICE)
    with pytest.raises(LocalProtocolError, match="SN must be a non-negative int"):
        encode("Notify", "Alarm", -1, DEVICE)
    with pytest.raises(LocalProtocolError, match='unsupported encoding "Big5"'):
        encode("Notify", "Alarm", 1, DEVICE, encoding="Big5")
    with pytest.raises(LocalProtocolError, match="bool is ambiguous"):
        element("DeviceList", [], Num=True)


def test_accessors_tolerate_whitespace_and_nesting() -> None:
    body = (
        b"<Notify>\n  <CmdType> Alarm </CmdType>\n  <SN>\t7\n</SN>\n  <DeviceID> " + DEVICE.encode() + b" </DeviceID>\n"
        b"  <AlarmPriority> 1 </AlarmPriority>\n  <Info>\n    <AlarmType> 2 </AlarmType>\n  </Info>\n"
        b"  <Empty/>\n</Notify>"
    )
    doc = decode(body)
    assert (doc.cmd_type, doc.sn, doc.device_id) == ("Alarm", 7, DEVICE)
    assert doc.text("AlarmPriority") == "1"
    assert doc.text("Info/AlarmType") == "2"
    assert doc.text("/Info//AlarmType") == "2"
    assert doc.text("Info") == ""  # an element with children has no text of its own
    assert doc.text("Empty") == ""
    assert doc.text("Info/Nope") is None
    assert doc.attr("Info", "Num") is None and doc.attr("Nope", "Num", "0") == "0"


def test_items_first_duplicate_wins_and_custom_item_tag() -> None:
    body = (
        b"<Response><CmdType>X</CmdType><SN>1</SN><DeviceID>d</DeviceID>"
        b"<List><Entry><A>1</A><A>2</A></Entry><Other/><Entry><B>3</B></Entry></List></Response>"
    )
    assert decode(body).items("List", "Entry") == [{"A": "1"}, {"B": "3"}]


def test_namespaces_are_stripped() -> None:
    body = b'<Notify xmlns="urn:x"><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>d</DeviceID></Notify>'
    assert decode(body).root == "Notify"


# --- tolerance of field quirks --------------------------------------------------------------------


def test_bare_ampersand_tolerated() -> None:
    body = (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Response><CmdType>Catalog</CmdType><SN>1</SN>'
        "<DeviceID>d</DeviceID><Name>A&B &amp; C&D; &#65;&#x42; &unknown; 5&</Name>"
        "<Raw><![CDATA[x&amp;y&z]]></Raw><Attr v='a&b'/></Response>"
    ).encode("gb18030")
    doc = decode(body)
    assert doc.text("Name") == "A&B & C&D; AB &unknown; 5&"
    assert doc.text("Raw") == "x&amp;y&z"  # CDATA is left alone
    assert doc.attr("Attr", "v") == "a&b"


def test_leading_whitespace_before_declaration_and_single_quotes() -> None:
    body = ("\r\n  <?xml version='1.0' encoding='gbk'?>" + catalog_text("")).encode("gb18030")
    check_catalog(decode(body))


# --- hostile input --------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<Notify><CmdType>&lol3;</CmdType><SN>1</SN><DeviceID>d</DeviceID></Notify>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE Notify [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Notify><CmdType>&xxe;</CmdType><SN>1</SN><DeviceID>d</DeviceID></Notify>"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (BILLION_LAUGHS, "DTD not allowed"),
        (EXTERNAL_ENTITY, "DTD not allowed"),
        (b"<!doctype Notify><Notify/>", "DTD not allowed"),
        (b'<Notify><!ENTITY x "y"></Notify>', "entity declaration not allowed"),
        # Hidden inside GB text still counts: "<!" never occurs inside a multi-byte character.
        ("<Notify><Name>朱</Name><!DOCTYPE x></Notify>".encode("gb18030"), "DTD not allowed"),
    ],
)
def test_dtd_and_entities_refused_before_parsing(body: bytes, message: str) -> None:
    with pytest.raises(InvalidBody) as exc:
        decode(body)
    assert exc.value.reason == message


def test_oversized_body_refused() -> None:
    body = KEEPALIVE + b" " * (256 * 1024 - len(KEEPALIVE))
    assert decode(body).cmd_type == "Keepalive"  # exactly at the cap is fine
    with pytest.raises(BodyTooLarge) as exc:
        decode(body + b" ")
    assert exc.value.reason == "MANSCDP body of 262145 bytes exceeds 262144"
    assert exc.value.status == 513
    assert isinstance(exc.value, InvalidBody) and isinstance(exc.value, MessageTooLarge)
    with pytest.raises(BodyTooLarge, match="^MANSCDP body of 269 bytes exceeds 100$"):
        decode(KEEPALIVE + b" " * 100, max_size=100)


def _nested(depth: int) -> bytes:
    inner = "<CmdType>C</CmdType><SN>1</SN><DeviceID>d</DeviceID>" + "<a>" * (depth - 1) + "</a>" * (depth - 1)
    return f"<Notify>{inner}</Notify>".encode()


def test_deep_nesting_refused() -> None:
    assert decode(_nested(32)).find("a/a/a") is not None  # 32 levels, root included
    with pytest.raises(InvalidBody) as exc:
        decode(_nested(33))
    assert exc.value.reason == "XML nested deeper than 32 levels"
    with pytest.raises(InvalidBody, match="^XML nested deeper than 32 levels$"):
        decode(b"<a>" * 80_000)


def test_element_count_capped() -> None:
    body = b"<Notify><CmdType>C</CmdType><SN>1</SN><DeviceID>d</DeviceID>" + b"<x/>" * 10 + b"</Notify>"
    assert decode(body, max_elements=14).cmd_type == "C"
    with pytest.raises(InvalidBody, match="^XML has more than 13 elements$"):
        decode(body, max_elements=13)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<Notify><SN>1</SN><DeviceID>d</DeviceID></Notify>", "MANSCDP lacks <CmdType>"),
        (b"<Notify><CmdType> </CmdType><SN>1</SN><DeviceID>d</DeviceID></Notify>", "MANSCDP lacks <CmdType>"),
        (b"<Notify><CmdType>K</CmdType><DeviceID>d</DeviceID></Notify>", "MANSCDP lacks <SN>"),
        (b"<Notify><CmdType>K</CmdType><SN>1</SN></Notify>", "MANSCDP lacks <DeviceID>"),
        (b"<Notify><CmdType>K</CmdType><SN>1</SN><DeviceID/></Notify>", "MANSCDP lacks <DeviceID>"),
        (b"<Notify><CmdType>K</CmdType><SN>abc</SN><DeviceID>d</DeviceID></Notify>", 'MANSCDP <SN> is not a number: "abc"'),
        (b"<Notify><CmdType>K</CmdType><SN>-1</SN><DeviceID>d</DeviceID></Notify>", 'MANSCDP <SN> is not a number: "-1"'),
        ("<Notify><CmdType>K</CmdType><SN>١٢</SN><DeviceID>d</DeviceID></Notify>".encode(), 'MANSCDP <SN> is not a number: "١٢"'),
        (b"<Reply><CmdType>K</CmdType><SN>1</SN><DeviceID>d</DeviceID></Reply>", "unknown MANSCDP root <Reply>"),
        (b"<Notify><CmdType>K</CmdType>", "malformed XML: no element found: line 1, column 28"),
        (b"<Notify></Query>", "malformed XML: mismatched tag: line 1, column 10"),
        (b"", "malformed XML: no element found: line 1, column 0"),
        (b"<Notify>A<B</Notify>", "malformed XML: not well-formed (invalid token): line 1, column 11"),
    ],
)
def test_refused_with_exact_messages(body: bytes, message: str) -> None:
    with pytest.raises(InvalidBody) as exc:
        decode(body)
    assert exc.value.reason == message
    assert exc.value.status == 400


# --- properties -----------------------------------------------------------------------------------


@given(st.binary(max_size=400))
def test_fuzz_garbage_bytes(body: bytes) -> None:
    try:
        decode(body)
    except RemoteProtocolError:
        pass


_PIECES = [
    '<?xml version="1.0" encoding="GB2312"?>',
    '<?xml version="1.0" encoding="UTF-8"?>',
    "<Notify>",
    "</Notify>",
    "<CmdType>Keepalive</CmdType>",
    "<SN>1</SN>",
    f"<DeviceID>{DEVICE}</DeviceID>",
    "<Name>",
    "</Name>",
    "<a b='&'/>",
    "&",
    "&amp;",
    "&#0;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<!DOCTYPE",
    "\ufeff",
    "朱镕基",
    "𠀀",
    "\r\n",
    "<",
    ">",
    '"',
    "\x00",
]


@given(st.lists(st.sampled_from(_PIECES), max_size=25).map("".join), st.sampled_from(["gb18030", "utf-8"]))
def test_fuzz_xml_shaped_input(text: str, codec: str) -> None:
    try:
        doc = decode(text.encode(codec))
    except RemoteProtocolError:
        return
    assert decode(bytes(doc)) == doc


_names = st.sampled_from(["Item", "Name", "Info", "Status", "X"])
_texts = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), include_characters="\t\n\r\x7f\x85", exclude_characters="\ufffe\uffff"),
    max_size=12,
)


def _trees(depth: int) -> st.SearchStrategy[list[tuple[str, object]]]:
    leaf = st.tuples(_names, _texts)
    if depth == 0:
        return st.lists(leaf, max_size=4)
    node = st.tuples(_names, _trees(depth - 1).filter(bool))
    return st.lists(st.one_of(leaf, node), max_size=4)


@given(
    root=st.sampled_from(["Query", "Control", "Notify", "Response"]),
    cmd_type=_texts.filter(lambda t: t.strip() != ""),
    sn=st.integers(0, 2**63 - 1),
    device_id=_texts.filter(lambda t: t.strip() != ""),
    fields=_trees(2),
    encoding=st.sampled_from(["GB2312", "GB18030", "UTF-8"]),
)
def test_round_trip_property(
    root: str, cmd_type: str, sn: int, device_id: str, fields: list[tuple[str, object]], encoding: str
) -> None:
    built = ManscdpDocument.build(root, cmd_type, sn, device_id, fields, encoding)
    doc = decode(bytes(built), max_size=10**7)
    assert doc.tree == built.tree
    assert (doc.root, doc.sn, doc.encoding) == (root, sn, encoding)
    assert (doc.cmd_type, doc.device_id) == (cmd_type.strip(), device_id.strip())
