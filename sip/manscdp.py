"""MANSCDP XML bodies (GB/T 28181-2016 附录 A, ``Application/MANSCDP+xml``): decode and encode.

Theory of operation
-------------------
``decode(body)`` turns the bytes of a MESSAGE/NOTIFY body into a ``ManscdpDocument``: the root kind
(``Query``/``Control``/``Notify``/``Response``), the three fields every command carries (``CmdType``,
``SN``, ``DeviceID``), the charset to answer in, and the whole body as an immutable ``Element`` tree
with path accessors (``doc.text("Info/AlarmType")``, ``doc.items("DeviceList")``,
``doc.attr("DeviceList", "Num")``). ``encode(...)`` (or ``bytes(ManscdpDocument.build(...))``) writes
the shape devices expect: XML declaration, one element per line, CRLF line ends, no indentation,
``<Tag></Tag>`` rather than ``<Tag/>``.

Decoding is a pipeline, each step refusing with ``InvalidBody`` and an exact message:

1. Size: more than ``max_size`` bytes raises ``BodyTooLarge`` (an ``InvalidBody`` *and* a
   ``MessageTooLarge``, status 513), before anything else is looked at.
2. Hostile markup: ``<!DOCTYPE`` or ``<!ENTITY`` anywhere (any case) is refused before parsing ("DTD
   not allowed", "entity declaration not allowed"): no internal-entity bombs, no external entities.
   The check runs on the raw bytes: in UTF-8 and GB18030 the bytes ``<`` and ``!`` never occur inside
   a multi-byte character, so there are no false positives and no way round it.
3. Charset (GB/T 28181 "Charset" notes): the declaration's ``encoding`` picks the codec.
   GB2312/GBK/CP936/EUC-CN and GB18030 are all decoded with the ``gb18030`` codec (a superset: rare
   characters in names otherwise fail); UTF-8/ASCII with ``utf-8``; no declaration tries UTF-8 first.
   Decoding is strict. Field devices sometimes declare one charset and send the other, so when the
   declared (or first) codec fails the other one is tried, still strictly; if both fail the body is
   refused ("undecodable body: ..."). The fallback recovers GB bytes declared as UTF-8; UTF-8 bytes
   declared as GB2312 usually *do* decode as GB18030 (into the wrong characters): we honour the
   declaration there rather than guess. A UTF-8 byte-order mark means UTF-8. Any other declared
   charset (Big5, ISO-8859-1, ...) is refused. ``ManscdpDocument.encoding`` is the charset to answer in, normalised to "GB2312" (any
   GB declaration but GB18030, or GB bytes without one), "GB18030" or "UTF-8" -- the codec that
   actually worked decides.
4. The declaration is removed from the decoded text (the str is no longer in the declared charset,
   and expat refuses multi-byte declarations such as GB2312 outright when given bytes), and each bare
   ``&`` not starting ``&amp;``, ``&lt;``, ``&gt;``, ``&quot;``, ``&apos;`` or a character reference
   is escaped (devices send ``<Name>A&B</Name>``). CDATA sections are left alone. This also turns any
   other ``&name;`` into literal text.
5. ``xml.etree.ElementTree.XMLParser`` (expat, no DTD left to expand) feeds a small tree builder that
   refuses more than ``max_depth`` nested levels or ``max_elements`` elements as they appear. Expat's
   own message is kept: ``malformed XML: not well-formed (invalid token): line 1, column 5``.
6. The root must be one of the four kinds; ``CmdType``, ``SN`` (ASCII digits) and ``DeviceID`` must be
   present and non-empty (surrounding whitespace is stripped).

Namespaces (``{uri}Tag``) are stripped to local names. Leaf text is kept verbatim in the tree and
stripped by the accessors; the text of an element with children is stripped when decoded (it is the
line breaks between them). Where a tag repeats, path lookups and ``items`` take the first one.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Self, TypeAlias

from sip.errors import InvalidBody, LocalProtocolError, MessageTooLarge

__all__ = [
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_SIZE",
    "ROOTS",
    "BodyTooLarge",
    "Element",
    "Field",
    "ManscdpDocument",
    "decode",
    "element",
    "encode",
]

MAX_SIZE = 256 * 1024
MAX_DEPTH = 32
MAX_ELEMENTS = 50_000  # a 256 KiB body holds at most ~65k "<a/>"; a 512-channel catalog is ~15k
ROOTS = frozenset({"Query", "Control", "Notify", "Response"})


class BodyTooLarge(InvalidBody, MessageTooLarge):
    """A MANSCDP body over the size cap: caught as either parent, answered 513."""

    status = 513
    reason_phrase = "Message Too Large"


# --- the tree -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Element:
    """An immutable XML element: used for decoded bodies and for building ones to encode."""

    tag: str
    text: str = ""
    children: tuple[Element, ...] = ()
    attrs: tuple[tuple[str, str], ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        """The attribute ``name`` (e.g. ``Num`` of ``DeviceList``)."""
        for key, value in self.attrs:
            if key == name:
                return value
        return default

    def child(self, tag: str) -> Element | None:
        """The first direct child called ``tag``."""
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def findall(self, tag: str) -> list[Element]:
        """All direct children called ``tag``, in document order."""
        return [child for child in self.children if child.tag == tag]

    def find(self, path: str) -> Element | None:
        """Follow ``"A/B/C"`` from this element (first match at each step, empty steps ignored).

        ``""`` is this element itself.
        """
        found: Element | None = self
        for step in path.split("/"):
            if step and found is not None:
                found = found.child(step)
        return found

    def flat(self) -> dict[str, str]:
        """Leaf descendants as ``{"DeviceID": ..., "Info/PTZType": ...}``, texts stripped, first wins."""
        out: dict[str, str] = {}
        _flatten(self, "", out)
        return out


def _flatten(node: Element, prefix: str, out: dict[str, str]) -> None:
    for child in node.children:
        key = prefix + child.tag
        if child.children:
            _flatten(child, key + "/", out)
        else:
            out.setdefault(key, child.text.strip())


Field: TypeAlias = tuple[str, object] | Element
"""An entry of ``fields``: ``(tag, value)`` or a ready ``Element`` (needed for attributes).

``value`` is a ``str``; an ``int``/``float`` (written with ``str()``; ``IntEnum`` and ``StrEnum``
included); ``None`` (the entry is left out); or a sequence of ``Field`` (nested elements). ``bool``
is refused: GB/T 28181 spells flags as ``ON``/``OFF``, ``1``/``0``, ``true``... per field.
"""


def element(tag: str, value: object = None, /, **attrs: object) -> Element:
    """Build an ``Element`` from a ``Field`` value, with attributes: ``element("DeviceList", items, Num=2)``.

    Unlike inside a field sequence, ``value=None`` here gives an empty element.
    """
    text, children = _content(tag, value)
    pairs = tuple((name, _scalar(f"<{tag} {name}>", attr)) for name, attr in attrs.items())
    return Element(tag, text, children, pairs)


def _scalar(where: str, value: object) -> str:
    if isinstance(value, bool):
        raise LocalProtocolError(f"{where}: bool is ambiguous in MANSCDP, pass a str")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise LocalProtocolError(f"{where}: cannot encode {type(value).__name__}")


def _content(tag: str, value: object) -> tuple[str, tuple[Element, ...]]:
    if value is None:
        return "", ()
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        return "", _children(value)
    return _scalar(f"<{tag}>", value), ()


def _children(fields: Iterable[object]) -> tuple[Element, ...]:
    out: list[Element] = []
    for field in fields:
        if isinstance(field, Element):
            out.append(field)
        elif isinstance(field, tuple) and len(field) == 2 and isinstance(field[0], str):
            tag, value = field
            if value is not None:
                out.append(Element(tag, *_content(tag, value)))
        else:
            raise LocalProtocolError(f"not a MANSCDP field: {field!r}")
    return tuple(out)


# --- charsets -------------------------------------------------------------------------------------

_GB2312, _GB18030, _UTF8 = "GB2312", "GB18030", "UTF-8"
_CODECS = {_GB2312: "gb18030", _GB18030: "gb18030", _UTF8: "utf-8"}  # label -> Python codec
# Declared names (lower case, "-" and "_" removed) -> label to answer in.
_LABELS = {
    "gb2312": _GB2312,
    "gbk": _GB2312,
    "cp936": _GB2312,
    "ms936": _GB2312,
    "windows936": _GB2312,
    "euccn": _GB2312,
    "xgbk": _GB2312,
    "csgb2312": _GB2312,
    "gb18030": _GB18030,
    "utf8": _UTF8,
    "ascii": _UTF8,
    "usascii": _UTF8,
}
_BOM = b"\xef\xbb\xbf"
_DECLARED = re.compile(rb"""\A[ \t\r\n]*<\?xml[ \t\r\n][^>]*?encoding[ \t\r\n]*=[ \t\r\n]*["']([^"'>]*)["']""")
_DECLARATION = re.compile(r"\A\ufeff?[ \t\r\n]*<\?xml(?=[ \t\r\n?])[^>]*>")


def _label(name: str) -> str | None:
    return _LABELS.get(name.lower().replace("-", "").replace("_", ""))


def _decode_text(body: bytes) -> tuple[str, str]:
    """The body as str, and the label of the charset that decoded it (step 3)."""
    if body.startswith(_BOM):
        order = [_UTF8, _GB2312]
        body = body[len(_BOM) :]
    else:
        declared = _DECLARED.match(body)
        if declared is None:
            order = [_UTF8, _GB2312]
        else:
            name = declared.group(1).decode("ascii", "replace")
            label = _label(name)
            if label is None:
                raise InvalidBody(f'unsupported encoding "{name[:40]}"')
            order = [label, _UTF8 if label != _UTF8 else _GB2312]
    errors: list[UnicodeDecodeError] = []
    for label in order:
        try:
            return body.decode(_CODECS[label]), label
        except UnicodeDecodeError as exc:
            errors.append(exc)
    first = errors[0]
    names = " nor ".join("GB18030" if _CODECS[label] == "gb18030" else label for label in order)
    raise InvalidBody(
        f"undecodable body: neither {names} (byte 0x{body[first.start]:02x} at offset {first.start})"
    )


# --- decoding -------------------------------------------------------------------------------------

_HOSTILE = re.compile(rb"<![ \t\r\n]*(DOCTYPE|ENTITY)", re.IGNORECASE)
_REFERENCE = re.compile(r"&(?:amp|lt|gt|quot|apos|#[0-9]{1,10}|#x[0-9A-Fa-f]{1,8});")
_SN = re.compile(r"[0-9]{1,19}")


def _refuse_hostile(body: bytes) -> None:
    found = _HOSTILE.search(body)
    if found is not None:
        if found.group(1).upper() == b"DOCTYPE":
            raise InvalidBody("DTD not allowed")
        raise InvalidBody("entity declaration not allowed")


def _escape_bare_ampersands(text: str) -> str:
    """Step 4: ``A&B`` -> ``A&amp;B``, outside CDATA sections. Linear time."""
    if "&" not in text:
        return text
    out: list[str] = []
    pos = 0
    while True:
        amp = text.find("&", pos)
        if amp < 0:
            break
        cdata = text.find("<![CDATA[", pos, amp)
        if cdata >= 0:
            close = text.find("]]>", cdata + 9)
            if close < 0:
                break  # unterminated: the parser reports it
            out.append(text[pos : close + 3])
            pos = close + 3
            continue
        out.append(text[pos:amp])
        out.append("&" if _REFERENCE.match(text, amp) else "&amp;")
        pos = amp + 1
    out.append(text[pos:])
    return "".join(out)


def _local(name: str) -> str:
    return name.rpartition("}")[2] if name.startswith("{") else name


class _Builder:
    """Expat target building ``Element``s, enforcing depth and count caps as elements open."""

    __slots__ = ("_max_depth", "_max_elements", "_count", "_stack", "_root")

    def __init__(self, max_depth: int, max_elements: int) -> None:
        self._max_depth = max_depth
        self._max_elements = max_elements
        self._count = 0
        # (tag, attrs, text chunks, children) of each open element
        self._stack: list[tuple[str, tuple[tuple[str, str], ...], list[str], list[Element]]] = []
        self._root: Element | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        if len(self._stack) >= self._max_depth:
            raise InvalidBody(f"XML nested deeper than {self._max_depth} levels")
        self._count += 1
        if self._count > self._max_elements:
            raise InvalidBody(f"XML has more than {self._max_elements} elements")
        pairs = tuple((_local(k), v) for k, v in attrs.items())
        self._stack.append((_local(tag), pairs, [], []))

    def data(self, data: str) -> None:
        if self._stack:
            self._stack[-1][2].append(data)

    def end(self, tag: str) -> None:
        name, attrs, chunks, children = self._stack.pop()
        text = "".join(chunks)
        built = Element(name, text.strip() if children else text, tuple(children), attrs)
        if self._stack:
            self._stack[-1][3].append(built)
        else:
            self._root = built

    def close(self) -> Element | None:
        return self._root


def _parse_xml(text: str, max_depth: int, max_elements: int) -> Element:
    builder = _Builder(max_depth, max_elements)
    parser = ET.XMLParser(target=builder)
    try:
        parser.feed(text)
        parser.close()
    except ET.ParseError as exc:
        raise InvalidBody(f"malformed XML: {exc}") from None
    root = builder.close()
    if root is None:  # pragma: no cover - expat reports "no element found" first
        raise InvalidBody("malformed XML: no element found")
    return root


def _required(root: Element, tag: str) -> str:
    found = root.child(tag)
    value = found.text.strip() if found is not None else ""
    if not value:
        raise InvalidBody(f"MANSCDP lacks <{tag}>")
    return value


# --- encoding -------------------------------------------------------------------------------------

_NAME = re.compile(r"[^\W\d][\w.\-]*")
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#9;"}
)


def _checked_name(name: str) -> str:
    if _NAME.fullmatch(name) is None:
        raise LocalProtocolError(f"not an XML name: {name!r}")
    return name


def _escaped(where: str, value: str, table: dict[int, str]) -> str:
    bad = _ILLEGAL.search(value)
    if bad is not None:
        raise LocalProtocolError(f"{where} has a character XML cannot carry: U+{ord(bad.group()):04X}")
    return value.translate(table)


def _serialise(node: Element, out: list[str]) -> None:
    tag = _checked_name(node.tag)
    attrs = "".join(
        f' {_checked_name(name)}="{_escaped(f"<{tag} {name}>", value, _ATTR_ESCAPES)}"' for name, value in node.attrs
    )
    text = _escaped(f"<{tag}>", node.text, _TEXT_ESCAPES)
    if node.children:
        out.append(f"<{tag}{attrs}>{text}\r\n")
        for child in node.children:
            _serialise(child, out)
        out.append(f"</{tag}>\r\n")
    else:
        out.append(f"<{tag}{attrs}>{text}</{tag}>\r\n")


def _answer_label(encoding: str) -> str:
    label = _label(encoding)
    if label is None:
        raise LocalProtocolError(f'unsupported encoding "{encoding}"')
    return label


# --- the document ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManscdpDocument:
    """A decoded (or built) MANSCDP body."""

    root: str  # "Query", "Control", "Notify" or "Response"
    cmd_type: str
    sn: int
    device_id: str
    encoding: str  # charset to answer in: "GB2312", "GB18030" or "UTF-8"
    tree: Element  # the root element, CmdType/SN/DeviceID included

    @classmethod
    def parse(
        cls,
        body: bytes,
        max_size: int = MAX_SIZE,
        *,
        max_depth: int = MAX_DEPTH,
        max_elements: int = MAX_ELEMENTS,
    ) -> Self:
        """Decode a body (see the module docstring); raises ``InvalidBody`` (``BodyTooLarge``)."""
        if len(body) > max_size:
            raise BodyTooLarge(f"MANSCDP body of {len(body)} bytes exceeds {max_size}")
        _refuse_hostile(body)
        text, label = _decode_text(body)
        declaration = _DECLARATION.match(text)
        if declaration is not None:
            text = text[declaration.end() :]
        elif text.startswith("\ufeff"):
            text = text[1:]
        tree = _parse_xml(_escape_bare_ampersands(text), max_depth, max_elements)
        if tree.tag not in ROOTS:
            raise InvalidBody(f"unknown MANSCDP root <{tree.tag[:40]}>")
        cmd_type = _required(tree, "CmdType")
        sn = _required(tree, "SN")
        if _SN.fullmatch(sn) is None:
            raise InvalidBody(f'MANSCDP <SN> is not a number: "{sn[:40]}"')
        device_id = _required(tree, "DeviceID")
        return cls(tree.tag, cmd_type, int(sn), device_id, label, tree)

    @classmethod
    def build(
        cls,
        root: str,
        cmd_type: str,
        sn: int,
        device_id: str,
        fields: Sequence[Field] = (),
        encoding: str = _GB2312,
    ) -> Self:
        """A document to send; ``bytes(doc)`` encodes it. Raises ``LocalProtocolError`` on misuse."""
        if root not in ROOTS:
            raise LocalProtocolError(f"unknown MANSCDP root {root!r}")
        if isinstance(sn, bool) or not isinstance(sn, int) or sn < 0:
            raise LocalProtocolError(f"SN must be a non-negative int: {sn!r}")
        extra = _children(fields)
        for child in extra:
            if child.tag in ("CmdType", "SN", "DeviceID"):
                raise LocalProtocolError(f"<{child.tag}> is set by the arguments, not by fields")
        head = (Element("CmdType", cmd_type), Element("SN", str(sn)), Element("DeviceID", device_id))
        return cls(root, cmd_type, sn, device_id, _answer_label(encoding), Element(root, "", head + extra))

    def __bytes__(self) -> bytes:
        label = _answer_label(self.encoding)
        out = [f'<?xml version="1.0" encoding="{label}"?>\r\n']
        _serialise(self.tree, out)
        # Every character is a legal scalar (checked above) and gb18030/utf-8 encode them all.
        return "".join(out).encode(_CODECS[label])

    def find(self, path: str) -> Element | None:
        """The element at ``path`` below the root (``"Info/AlarmType"``), or None."""
        return self.tree.find(path)

    def text(self, path: str, default: str | None = None) -> str | None:
        """Stripped text at ``path`` (``""`` for an empty element), or ``default`` when absent."""
        found = self.tree.find(path)
        return default if found is None else found.text.strip()

    def attr(self, path: str, name: str, default: str | None = None) -> str | None:
        """Attribute ``name`` of the element at ``path``: ``doc.attr("DeviceList", "Num")``."""
        found = self.tree.find(path)
        return default if found is None else found.get(name, default)

    def items(self, list_tag: str, item_tag: str = "Item") -> list[dict[str, str]]:
        """``DeviceList``/``RecordList`` entries as flat dicts (``Element.flat``); [] when absent."""
        found = self.tree.find(list_tag)
        if found is None:
            return []
        return [item.flat() for item in found.findall(item_tag)]


def decode(
    body: bytes,
    max_size: int = MAX_SIZE,
    *,
    max_depth: int = MAX_DEPTH,
    max_elements: int = MAX_ELEMENTS,
) -> ManscdpDocument:
    """``ManscdpDocument.parse``: raises ``InvalidBody`` (``BodyTooLarge`` over ``max_size``)."""
    return ManscdpDocument.parse(body, max_size, max_depth=max_depth, max_elements=max_elements)


def encode(
    root: str,
    cmd_type: str,
    sn: int,
    device_id: str,
    fields: Sequence[Field] = (),
    encoding: str = _GB2312,
) -> bytes:
    """``bytes(ManscdpDocument.build(...))``: ``GB2312`` is declared but written with the ``gb18030``
    codec, so rare characters survive (GB18030-aware peers read them; strict GB2312 ones could not
    have represented them anyway)."""
    return bytes(ManscdpDocument.build(root, cmd_type, sn, device_id, fields, encoding))
