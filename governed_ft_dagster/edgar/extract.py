"""Extract the Risk Factors section (10-K Item 1A, 10-Q Part II Item 1A) from EDGAR HTML."""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import Enum

from lxml import etree

__all__ = [
    "DEFAULT_MAX_BYTES",
    "EXTRACTOR_VERSION",
    "Extraction",
    "Status",
    "decode_html",
    "document_lines",
    "extract_many",
    "extract_risk_factors",
    "html_to_text",
]

EXTRACTOR_VERSION = "1.0.0"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# A section this short that says "no material changes" / "incorporated by reference" is not substantive.
SHORT_SECTION_CHARS = 3000
# A section this short that only refers the reader elsewhere is a pointer, not risk factors.
POINTER_MAX_CHARS = 1500
POINTER_LEAD_CHARS = 250
# A section a pointer leads to must have at least this much text to count as the risk factors.
FOLLOWED_MIN_CHARS = 500
# Table rows whose cells add up to at most this many characters become one line.
ROW_JOIN_MAX_CHARS = 500
# A short line seen this many times in a document is a running header or footer.
REPEATED_LINE_MIN_COUNT = 5
REPEATED_LINE_MAX_CHARS = 120
HEADING_MAX_CHARS = 220


class Status(str, Enum):
    """Outcome of a Risk Factors extraction."""

    EXTRACTED = "extracted"
    NO_MATERIAL_CHANGES = "no_material_changes"
    INCORPORATED_BY_REFERENCE = "incorporated_by_reference"
    NOT_FOUND = "not_found"
    ERROR = "error"


@dataclass(frozen=True)
class Extraction:
    """Result of extracting the Risk Factors section from one document."""

    status: Status
    text: str
    reason: str | None = None
    heading: str | None = None
    start: int | None = None  # index of the heading line in document_lines(html)
    end: int | None = None  # index of the first line after the section

    @property
    def chars(self) -> int:
        """Length of the extracted text in characters."""
        return len(self.text)


class DocumentError(ValueError):
    """Input that cannot be turned into text (empty, too large, unparsable)."""


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SNIFF_BYTES = 64 * 1024
_META_CHARSET_RE = re.compile(rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]{1,40})""", re.I)
_XML_ENCODING_RE = re.compile(rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._-]{1,40})["']""", re.I)
# WHATWG: latin-1 labels mean windows-1252; a utf-16 label without a BOM means utf-8.
_ENCODING_ALIASES = {"latin1": "cp1252", "iso8859-1": "cp1252", "ascii": "utf-8"}


def _codec_name(label: bytes) -> str | None:
    """Normalise an encoding label to a Python codec name, or None if unknown."""
    try:
        name = codecs.lookup(label.decode("ascii", "ignore").strip()).name
    except LookupError:
        return None
    if name.startswith(("utf-16", "utf-32")):
        return "utf-8"
    return _ENCODING_ALIASES.get(name, name)


def decode_html(data: bytes) -> str:
    """Decode HTML bytes using BOM, meta charset or XML declaration, then utf-8, then cp1252."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(codec, errors="replace")
    head = data[:_SNIFF_BYTES]
    candidates: list[str] = []
    for match in (_META_CHARSET_RE.search(head), _XML_ENCODING_RE.search(head)):
        if match:
            name = _codec_name(match.group(1))
            if name and name not in candidates:
                candidates.append(name)
    if "utf-8" not in candidates:
        candidates.append("utf-8")
    for codec in candidates:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("cp1252", errors="replace")


# ---------------------------------------------------------------------------
# HTML -> lines
# ---------------------------------------------------------------------------

# Control characters never carry meaning in filing text, so they can mark breaks in the flattened text.
_HARD = "\x00"  # paragraph break
_SOFT = "\x01"  # break inside a table cell: a space for short rows, a paragraph for long ones
_BLOCK_TAGS = frozenset(
    "address article aside blockquote body br caption center dd div dl dt fieldset figcaption figure "
    "footer form h1 h2 h3 h4 h5 h6 header hr html li main nav ol p pre section table tbody tfoot thead "
    "tr ul".split()
)
_CELL_TAGS = frozenset(("td", "th"))
_SKIP_TAGS = frozenset(
    "head script style title noscript template object iframe ix:header ix:hidden ix:references "
    "ix:resources xbrli:context xbrli:unit".split()
)
_INVISIBLE_CHARS = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
_BULLETS = frozenset("•●◦▪▫■□○◆◇♦➢➤►▸✓✔·*-–—o")


def _without_ix_header(data: bytes) -> bytes:
    """Cut the inline-XBRL header (hidden facts and contexts, never text) before parsing."""
    start = data.find(b"<ix:header>")
    if start < 0:
        return data
    end = data.find(b"</ix:header>", start)
    return data if end < 0 else data[:start] + data[end + len(b"</ix:header>"):]


def _parse(html: bytes | str, max_bytes: int) -> etree._Element:
    """Check size, decode and parse a document into an lxml tree."""
    if isinstance(html, str):
        if len(html) > max_bytes:
            raise DocumentError(f"document is {len(html)} characters, larger than the limit of {max_bytes} bytes")
        text = html
    else:
        data = bytes(html)
        if len(data) > max_bytes:
            raise DocumentError(f"document is {len(data)} bytes, larger than the limit of {max_bytes} bytes")
        text = decode_html(data)
    if not text.strip():
        raise DocumentError("empty document")
    encoded = _without_ix_header(text.encode("utf-8", errors="replace"))
    if len(encoded) > max_bytes:
        raise DocumentError(f"document is {len(encoded)} bytes, larger than the limit of {max_bytes} bytes")
    parser = etree.HTMLParser(
        encoding="utf-8", remove_comments=True, remove_pis=True, huge_tree=True, no_network=True
    )
    root = etree.fromstring(encoded, parser)
    if root is None:
        raise DocumentError("document has no parsable HTML content")
    return root


def _is_hidden(style: str) -> bool:
    """Whether an inline style hides the element."""
    return "display:none" in style.replace(" ", "").lower()


def _walk(root: etree._Element) -> str:
    """Flatten the tree in one pass into text with hard/soft break markers."""
    out: list[str] = []
    append = out.append
    in_cell = 0
    skipped = False  # a skipped element's "end" event comes right after its "start"
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, el in walker:
        tag = el.tag
        if event == "start":
            style = el.get("style")
            if tag in _SKIP_TAGS or not isinstance(tag, str) or (style and "none" in style and _is_hidden(style)):
                walker.skip_subtree()
                skipped = True
                continue
            if tag in _BLOCK_TAGS:
                append(_SOFT if in_cell and tag != "tr" else _HARD)
            elif tag in _CELL_TAGS:
                in_cell += 1
                append(_SOFT)
            text = el.text
            if text:
                append(text)
        else:
            if skipped:
                skipped = False
            elif tag in _BLOCK_TAGS:
                append(_SOFT if in_cell and tag != "tr" else _HARD)
            elif tag in _CELL_TAGS:
                in_cell -= 1
                append(_SOFT)
            tail = el.tail
            if tail:
                append(tail)
    return "".join(out)


def _merge_bullets(parts: list[str]) -> list[str]:
    """Join lines holding only a bullet glyph with the line that follows."""
    merged: list[str] = []
    pending = ""
    for part in parts:
        if len(part) <= 2 and part in _BULLETS:
            pending = part
            continue
        if part[0] == _ANCHOR_OPEN and _ANCHOR_ONLY_RE.fullmatch(part):
            merged.append(part)  # an anchor between a bullet and its text belongs to neither
            continue
        if pending and _is_item_heading(part):
            merged.append(pending)
            pending = ""
        merged.append(f"{pending} {part}" if pending else part)
        pending = ""
    if pending:
        merged.append(pending)
    return merged


def _split_lines(raw: str) -> list[str]:
    """Turn marked-up text into whitespace-normalised paragraph lines."""
    for char in _INVISIBLE_CHARS:  # str.replace per character is many times faster than str.translate here
        if char in raw:
            raw = raw.replace(char, "")
    lines: list[str] = []
    for chunk in raw.split(_HARD):
        if _SOFT in chunk:
            row = " ".join(chunk.replace(_SOFT, " ").split())
            if len(row) < ROW_JOIN_MAX_CHARS:
                if row:
                    lines.append(row)
            else:
                lines.extend(_merge_bullets([p for p in (" ".join(s.split()) for s in chunk.split(_SOFT)) if p]))
        else:
            line = " ".join(chunk.split())
            if line:
                lines.append(line)
    return _merge_bullets(lines)


# ---------------------------------------------------------------------------
# Table of contents: internal links to the anchors at section starts
# ---------------------------------------------------------------------------

# Anchor targets get an inline marker "<n>" between two private-use characters (lxml text cannot hold
# control characters); the markers are taken out again once lines are split.
_ANCHOR_OPEN, _ANCHOR_CLOSE = "\ue000", "\ue001"
_ANCHOR_RE = re.compile("\ue000(\\d+)\ue001")
_ANCHOR_ONLY_RE = re.compile("(?:\ue000\\d+\ue001 ?)+")
_TOC_ITEM_RE = re.compile(r"^(?:part\s+(?:iv|i{1,3})\W*)?item\s*(\d{1,2})\s*([a-d](?![a-z]))?", re.I)
_TOC_PART_RE = re.compile(r"^part\s+(iv|i{1,3})\b", re.I)
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4}


@dataclass(frozen=True)
class _TocEntry:
    target: str  # id (or name) of the element the link points to
    key: str  # "1A", "2", ... for items, "PART II" for parts, "RF" for a bare Risk Factors entry, "END" for others


def _toc_key(label: str) -> str | None:
    """What a table-of-contents label names: an item, a part, Risk Factors, another section; None otherwise."""
    label = " ".join(label.split())
    if not label or len(label) > 200:
        return None
    match = _TOC_ITEM_RE.match(label)
    if match:
        return match.group(1).lstrip("0") + (match.group(2) or "").upper()
    match = _TOC_PART_RE.match(label)
    if match:
        return f"PART {match.group(1).upper()}"
    title = _PAGE_REF_TAIL_RE.sub("", label, count=1) if _EDGE_DIGITS_RE.search(label) else label
    if _RF_TITLE_RE.match(title):
        return "RF"
    if _title_match(label, _BARE_END_TITLES):
        return "END"
    return None


def _row_text(link: etree._Element) -> str:
    """Text of the table row holding a link, cells separated by spaces; empty outside tables."""
    for row in link.iterancestors("tr"):
        return " ".join(" ".join("".join(cell.itertext()).split()) for cell in row.iter("td", "th"))
    return ""


def _toc_entries(root: etree._Element) -> list[_TocEntry]:
    """Internal links that name a section, in document order, one per target."""
    entries: list[_TocEntry] = []
    seen: set[str] = set()
    for link in root.iter("a"):
        href = link.get("href")
        if not href or href[0] != "#":
            continue
        target = href[1:].strip()
        if not target or target in seen or any(c in target for c in " '\""):
            continue
        seen.add(target)
        label = "".join(link.itertext())
        key = _toc_key(label)
        if key is None or key in ("RF", "END"):
            row_key = _toc_key(_row_text(link))
            if row_key is not None and row_key not in ("RF", "END"):
                key = row_key
        if key is not None:
            entries.append(_TocEntry(target, key))
    return entries


def _mark_anchors(root: etree._Element, entries: list[_TocEntry]) -> None:
    """Put a marker at the start of each element a table-of-contents entry points to."""
    if not entries:
        return
    index = {entry.target: n for n, entry in enumerate(entries)}
    for element in root.xpath("id($ids)", ids=" ".join(index)):
        n = index.get(element.get("id")) if element.get("id") in index else index.get(element.get("name"))
        if n is not None:
            element.text = f"{_ANCHOR_OPEN}{n}{_ANCHOR_CLOSE}{element.text or ''}"


def _take_anchors(marked: list[str]) -> tuple[list[str], dict[int, int]]:
    """Remove anchor markers from lines; return the lines and entry number -> index of the line it starts."""
    lines: list[str] = []
    anchors: dict[int, int] = {}
    for line in marked:
        if _ANCHOR_OPEN in line:
            for number in _ANCHOR_RE.findall(line):
                anchors.setdefault(int(number), len(lines))
            line = " ".join(_ANCHOR_RE.sub(" ", line).split())
            if not line:
                continue
        lines.append(line)
    return lines, anchors


def _read(html: bytes | str, max_bytes: int) -> tuple[list[str], list[_TocEntry], dict[int, int]]:
    """Lines of a document, its table-of-contents entries and the line each entry's anchor starts."""
    root = _parse(html, max_bytes)
    entries = _toc_entries(root)
    _mark_anchors(root, entries)
    lines, anchors = _take_anchors(_split_lines(_walk(root)))
    return lines, entries, anchors


def document_lines(html: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Paragraph lines of a whole document, including noise lines (page numbers, headers)."""
    return _read(html, max_bytes)[0]


# ---------------------------------------------------------------------------
# Line classification
# ---------------------------------------------------------------------------

_DASHES = r"[.:;,\-\u2010-\u2015\u2212]"
_PAGE_REF = r"(?:\s*(?:pages?\s*)?[A-Z]?-?\d{1,4}(?:\s*(?:[-\u2013\u2014,]|and|to)\s*[A-Z]?-?\d{1,4})*)?"
_ITEM_RE = re.compile(
    rf"^(?:part\s+(?:iv|i{{1,3}})\s*{_DASHES}*\s*)?item\s*(\d{{1,2}})\s*([a-d])?\b(?:\s*{_DASHES})*\s*(.*)$",
    re.I,
)
_PART_RE = re.compile(rf"^part\s+(iv|i{{1,3}})\b\s*(?:{_DASHES}|\u2014|$)", re.I)
# Inline tags can split a word ("Ri</span> <span>sk"), so single spaces between letters are allowed.
_RISK_FACTORS = r"r\s?i\s?s\s?k\s*f\s?a\s?c\s?t\s?o\s?r\s?s"
_RF_TITLE_RE = re.compile(
    rf"^[\"'\u201c\u2018]?{_RISK_FACTORS}[\"'\u201d\u2019]?\s*[.:]?(?:\s*\(continued\))?{_PAGE_REF}\s*$", re.I
)
_RF_RUN_IN_RE = re.compile(rf"^({_RISK_FACTORS})\s*[.:\u2013\u2014-]\s+(\S.*)$", re.I)
# An index entry that marks the item as not applicable, maybe with a note marker: "Risk Factors Not applicable (a)".
_RF_NOT_APPLICABLE_RE = re.compile(
    rf"^{_RISK_FACTORS}\W*(?:not\s+applicable|none|n/a)\b\W*?(\([a-z0-9]{{1,2}}\)|\*{{1,3}})?\W*$", re.I
)
_PAGE_NUMBER_RE = re.compile(
    r"^(?:page\s*)?[-\u2013\u2014(\[]?\s*(?:[A-Z]-)?\d{1,4}\s*[-\u2013\u2014)\]]?(?:\s*of\s*\d{1,4})?$"
    r"|^(?=[mdclxvi])m{0,3}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})\.?$",
    re.I,
)
_TOC_LINK_RE = re.compile(
    r"^(?:return\s+to\s+|back\s+to\s+)?(?:the\s+)?(?:table\s+of\s+contents?|index|contents|toc|top)\.?$", re.I
)
_FOOTER_RE = re.compile(r"\|.*\|\s*\d{1,4}$|^.{0,30}\bform\s+10-?[kq]\b.{0,20}?\s\d{1,4}$", re.I)
_DIGITS_RE = re.compile(r"\d+")
_EDGE_DIGITS_RE = re.compile(r"^\W*\d|\d\W*$")
_PAGE_REF_TAIL_RE = re.compile(r"[.:]?" + _PAGE_REF + r"\s*$", re.I)

_ITEM_END_TITLES = (
    "unresolved staff comments",
    "unregistered sales of equity securities",
    "defaults upon senior securities",
    "mine safety disclosure",
    "signatures",
    "signature",
    "exhibit index",
    "index to exhibits",
)
_BARE_END_TITLES = _ITEM_END_TITLES + (
    "legal proceedings",
    "cybersecurity",
    "properties",
    "management's discussion and analysis",
    "management\u2019s discussion and analysis",
    "quantitative and qualitative disclosure",
    "financial statements and supplementary data",
    "controls and procedures",
    "selected financial data",
    "market for registrant",
    "market for the registrant",
    "other information",
    "exhibits",
    "directors, executive officers",
    "executive compensation",
    "management and auditor",
    "report of independent registered public accounting firm",
)

_NO_MATERIAL_CHANGES_RE = re.compile(
    r"\bno\s+(?:other\s+)?material\s+(?:changes?|updates?|modifications?|developments?)\b"
    r"|\b(?:have|has)\s+not\s+(?:been\s+)?(?:any\s+)?(?:materially\s+changed|material(?:ly)?\s+chang)"
    r"|\bnot\s+materially\s+changed\b"
    r"|\bno\s+(?:significant|substantive)\s+changes?\b"
    r"|\bremain\s+(?:materially\s+)?unchanged\b",
    re.I,
)
_EXCEPT_RE = re.compile(r"\b(?:except|other\s+than|supplement|set\s+forth\s+below|as\s+follows|below)\b", re.I)
_INCORPORATED_RE = re.compile(
    r"\bincorporated\b[^.]{0,60}?\bby\s+reference\b"
    r"|\b(?:can\s+be\s+found|is\s+(?:included|contained|set\s+forth)|appears?)\b[^.]{0,200}?"
    r"\b(?:pages?\s+\d|exhibit\s+13)",
    re.I,
)
# A short section that sends the reader elsewhere instead of stating risks.
_POINTER_RE = re.compile(
    r"\b(?:refer\s+to|see|consider|discussed|described|disclosed|set\s+forth|contained|included|found|presented)\b"
    r"[^.]{0,250}?\b(?:form\s+10-?[kq]|annual\s+report|quarterly\s+report|this\s+report|report\s+to\s+"
    r"(?:share|stock)holders|part\s+i{1,2}\b|item\s+\d|pages?\s+\d|exhibit\s+13|proxy\s+statement)",
    re.I,
)
# A place in this very document: "in Part I, Item 2 of this report", "on pages 27-36", "herein".
_THIS_DOCUMENT_RE = re.compile(
    r"\b(?:in|of|under)\s+this\s+(?:annual\s+|quarterly\s+)?(?:report|form\s+10-?[kq]|document)\b(?!\s+(?:on|for)\b)"
    r"|\bherein\b|\bpages?\s+\d|\bpart\s+i{1,2},?\s+item\s+\d+[a-d]?\b[^.]{0,40}?\bof\s+this\b",
    re.I,
)
_OTHER_DOCUMENT_RE = re.compile(
    r"\b(?:our|its|the|company[\u2019']s|corporation[\u2019']s)\s+(?:\d{4}\s+)?(?:annual\s+report|form\s+10-?k|"
    r"quarterly\s+report\s+on\s+form\s+10-?q\s+for)|\bannual\s+report\s+(?:on\s+form\s+10-?k|to\s+(?:share|stock)"
    r"holders)|\bexhibit\s+13\b|\bproxy\s+statement\b",
    re.I,
)
_CONTENT_FOLLOWS_RE = re.compile(
    r"\b(?:except|other\s+than|supplement\w*|below|as\s+follows|following\s+risk|updated?)\b", re.I
)
_NOT_APPLICABLE_RE = re.compile(
    r"^(?:none|not\s+applicable|n/?a|omitted|reserved|\[reserved\])\.?$"
    r"|smaller\s+reporting\s+compan(?:y|ies)[^.]{0,120}\bnot\s+required\b"
    r"|\bnot\s+required\s+(?:to\s+provide|for\s+smaller)",
    re.I,
)


def _is_item_heading(line: str) -> re.Match[str] | None:
    """Match an 'Item N.' heading line (with an optional title), not a sentence mentioning an item."""
    if len(line) > HEADING_MAX_CHARS or line[:1] not in "IiPp":
        return None
    match = _ITEM_RE.match(line)
    if match is None:
        return None
    title = match.group(3)
    if title and title[0].isalpha() and title[0].islower():
        return None
    return match


def _is_item_1a(match: re.Match[str]) -> bool:
    """Whether an item heading match is Item 1A."""
    return match.group(1) in ("1", "01") and (match.group(2) or "").lower() == "a"


def _is_noise_line(line: str) -> bool:
    """Page numbers, table-of-contents links and page footers."""
    if len(line) > REPEATED_LINE_MAX_CHARS:
        return False
    return bool(_PAGE_NUMBER_RE.match(line) or _TOC_LINK_RE.match(line) or _FOOTER_RE.search(line))


def _repeat_key(line: str) -> str | None:
    """Key under which running headers/footers repeat: page numbers at either end become '#'."""
    if len(line) > REPEATED_LINE_MAX_CHARS:
        return None
    if _EDGE_DIGITS_RE.search(line):
        return _DIGITS_RE.sub("#", line)
    return line


def _noise_flags(lines: list[str]) -> list[bool]:
    """Flag page numbers, TOC links, footers and short lines repeated across the document."""
    keys = [_repeat_key(line) for line in lines]
    counts = Counter(k for k in keys if k is not None)
    flags: list[bool] = []
    for line, key in zip(lines, keys):
        if key is None:
            flags.append(False)
        elif _is_item_heading(line):
            flags.append(False)
        else:
            flags.append(counts[key] >= REPEATED_LINE_MIN_COUNT or _is_noise_line(line))
    return flags


def _title_match(line: str, titles: Iterable[str], upper_only: bool = False) -> bool:
    """Whether the line is one of the titles, alone (maybe with a page number) or run-in in capitals."""
    low = line.lower()
    for title in titles:
        if not low.startswith(title):
            continue
        if upper_only and not line[: len(title)].isupper():
            continue
        rest = line[len(title):]
        if _PAGE_REF_TAIL_RE.fullmatch(rest):
            return True
        if rest[:1] in ".:" and line[: len(title)].isupper():
            return True
        if title in _ITEM_END_TITLES and len(line) <= 150 and line[0].isupper() and not rest.endswith("."):
            return True  # e.g. "Unregistered Sales of Equity Securities and Use of Proceeds"
    return False


# ---------------------------------------------------------------------------
# Section location
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    start: int  # index of the heading line
    body_start: int  # index of the first body line
    heading: str
    lead: str  # body text that sat on the heading line (run-in heading)
    item: bool = True  # an "Item 1A" heading rather than a bare "Risk Factors" one


def _item_1a_at(lines: list[str], i: int) -> _Candidate | None:
    """The Item 1A Risk Factors heading (or TOC entry) on line i, if there is one."""
    match = _is_item_heading(lines[i])
    if match is None or not _is_item_1a(match):
        return None
    line, title = lines[i], match.group(3)
    if not title:
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _RF_TITLE_RE.match(nxt):
            return _Candidate(i, i + 2, f"{line} {nxt}", "")
        return None
    if _RF_TITLE_RE.match(title):
        return _Candidate(i, i + 1, line, "")
    run_in = _RF_RUN_IN_RE.match(title)
    if run_in and len(run_in.group(2)) > 40:
        heading = line[: len(line) - len(title)] + run_in.group(1)
        return _Candidate(i, i + 1, heading.strip(), run_in.group(2))
    return None


def _item_1a_candidates(lines: list[str], first: int) -> list[_Candidate]:
    """Lines from index `first` on that head an Item 1A Risk Factors section (or its TOC entry)."""
    found = []
    for i in range(first, len(lines)):
        if lines[i][:1] in "IiPp":
            cand = _item_1a_at(lines, i)
            if cand is not None:
                found.append(cand)
    return found


def _bare_at(lines: list[str], noise: list[bool], i: int) -> _Candidate | None:
    """A 'RISK FACTORS' heading without an item number on line i (e.g. GE's annual-report layout)."""
    line = lines[i]
    if len(line) < 12 or line[0] not in "Rr\"'\u201c\u2018" or noise[i]:
        return None
    if len(line) <= 60 and _RF_TITLE_RE.match(line):
        return _Candidate(i, i + 1, line, "", item=False)
    run_in = _RF_RUN_IN_RE.match(line)
    if run_in and run_in.group(1).isupper() and len(run_in.group(2)) > 40:
        return _Candidate(i, i + 1, run_in.group(1), run_in.group(2), item=False)
    return None


def _bare_candidates(lines: list[str], noise: list[bool], first: int) -> list[_Candidate]:
    """Bare 'Risk Factors' headings from index `first` on."""
    return [cand for i in range(first, len(lines)) if (cand := _bare_at(lines, noise, i)) is not None]


def _toc_successor_titles(lines: list[str], noise: list[bool]) -> list[str]:
    """Titles that follow a 'Risk Factors <page>' entry in a table of contents."""
    titles: list[str] = []
    for i, line in enumerate(lines):
        if len(line) > 40 or not re.match(r"^risk\s*factors\s+\d{1,4}$", line, re.I):
            continue
        for j in range(i + 1, min(i + 4, len(lines))):
            if noise[j]:
                continue
            match = re.match(r"^(.{4,80}?)\s+\d{1,4}(?:\s*-\s*\d{1,4})?$", lines[j])
            if match:
                titles.append(match.group(1).lower())
            break
    return titles


@dataclass(frozen=True)
class _Bounds:
    """What ends a section: titles of the next section, the part it belongs to, a hard stop line."""

    titles: tuple[str, ...]
    part: int = 0  # a PART heading above this number ends the section; 0: any PART heading does
    stop: int | None = None  # index of the next section's anchor, from the table of contents
    upper_only: bool = False  # an upper-case heading ends only at upper-case titles of the same level


def _section(lines: list[str], noise: list[bool], cand: _Candidate, bounds: _Bounds) -> tuple[list[str], int]:
    """Body paragraphs of a candidate, ending before the next section; and the end index."""
    body: list[str] = [cand.lead] if cand.lead else []
    skipped = False
    end = len(lines) if bounds.stop is None else min(bounds.stop, len(lines))
    for j in range(cand.body_start, end):
        line = lines[j]
        item = _is_item_heading(line)
        if item is not None:
            if not _is_item_1a(item):
                end = j
                break
            skipped = True  # the same item again: a running page header, not a new section
            continue
        if not noise[j] and len(line) <= 300:
            part = _PART_RE.match(line)
            if part and len(line) <= 100 and _ROMAN[part.group(1).lower()] > bounds.part:
                end = j
                break
            if _title_match(line, bounds.titles, bounds.upper_only):
                end = j
                break
        if noise[j]:
            skipped = True
            continue
        prev = body[-1] if body else ""
        # A paragraph cut by a page break continues in lower case after the footer.
        if skipped and prev and line[0].islower() and prev[-1] not in ".!?:;\u201d\")":
            body[-1] = f"{prev} {line}"
        else:
            body.append(line)
        skipped = False
    return body, end


@dataclass(frozen=True)
class _Found:
    cand: _Candidate
    body: list[str]
    end: int

    @property
    def chars(self) -> int:
        """Characters of body text."""
        return sum(map(len, self.body))


def _pick(lines: list[str], noise: list[bool], cands: list[_Candidate], bounds: _Bounds) -> _Found | None:
    """The candidate with the most body text (TOC entries have none); later wins ties."""
    best: _Found | None = None
    for cand in cands:
        body, end = _section(lines, noise, cand, bounds)
        found = _Found(cand, body, end)
        if found.chars > 0 and (best is None or found.chars >= best.chars):
            best = found
    return best


def _toc_section(
    lines: list[str], noise: list[bool], entries: list[_TocEntry], anchors: dict[int, int], quarterly: bool
) -> _Found | None:
    """The Risk Factors section as the table of contents links it: its anchor to the next section's anchor."""
    placed = [(anchors[n], entry) for n, entry in enumerate(entries) if n in anchors]
    if not placed:
        return None
    keys = [entry.key for _, entry in placed]
    if quarterly and "PART II" in keys:
        after_part_ii = keys.index("PART II")
        chosen = [i for i, key in enumerate(keys) if key in ("1A", "RF") and i > after_part_ii]
    else:
        chosen = [i for i, key in enumerate(keys) if key == "1A"]
    chosen = chosen or [i for i, key in enumerate(keys) if key == "RF"]
    if not chosen:
        return None
    start = placed[chosen[0]][0]
    cand = None
    for i in range(start, min(start + 6, len(lines))):
        cand = _item_1a_at(lines, i) or _bare_at(lines, noise, i)
        if cand is not None or not noise[i]:
            break
    if cand is None:
        return None
    # Links to Risk Factors itself (cross-references to a risk inside the section) do not end it.
    later = [line for line, entry in placed if line > cand.start and entry.key not in ("1A", "RF")]
    stop = min(later) if later else None
    if cand.item:
        bounds = _Bounds(_ITEM_END_TITLES, part=2 if quarterly else 1, stop=stop)
    else:
        bounds = _Bounds(_BARE_END_TITLES, stop=stop, upper_only=cand.heading.isupper())
    body, end = _section(lines, noise, cand, bounds)
    return _Found(cand, body, end) if body else None


def _classify(found: _Found) -> Extraction:
    """Decide the status of a located section from its body text."""
    heading, body = found.cand.heading, found.body
    body_text = " ".join(body)
    text = "\n\n".join([heading, *body])
    size = len(body_text)
    where = {"heading": heading, "start": found.cand.start, "end": found.end}
    if size <= 300 and _NOT_APPLICABLE_RE.search(body_text):
        return Extraction(Status.NOT_FOUND, "", "risk factors section says it is not applicable", **where)
    if size <= SHORT_SECTION_CHARS and _NO_MATERIAL_CHANGES_RE.search(body_text):
        if size <= SHORT_SECTION_CHARS // 2 or not _EXCEPT_RE.search(body_text):
            reason = "section only states there are no material changes from previously disclosed risk factors"
            return Extraction(Status.NO_MATERIAL_CHANGES, text, reason, **where)
    if size <= SHORT_SECTION_CHARS and _INCORPORATED_RE.search(body_text):
        reason = "section incorporates the risk factors by reference to another document"
        return Extraction(Status.INCORPORATED_BY_REFERENCE, text, reason, **where)
    pointer = _POINTER_RE.search(body_text)
    # A pointer opens the section; a risk that merely ends with "see our Form 10-K" is still a risk.
    leads = pointer is not None and pointer.start() <= POINTER_LEAD_CHARS
    if leads and size <= POINTER_MAX_CHARS and not _CONTENT_FOLLOWS_RE.search(body_text):
        reason = "section only refers the reader to risk factors disclosed elsewhere"
        return Extraction(Status.INCORPORATED_BY_REFERENCE, text, reason, **where)
    return Extraction(Status.EXTRACTED, text, None, **where)


def _part_ii_starts(lines: list[str]) -> list[int]:
    """Indexes of 'PART II' heading lines."""
    return [
        i for i, line in enumerate(lines) if (match := _PART_RE.match(line)) and match.group(1).lower() == "ii"
    ]


def _bare_section(lines: list[str], noise: list[bool], skip: range) -> _Found | None:
    """The largest bare 'Risk Factors' section outside the line range `skip`."""
    titles = _BARE_END_TITLES + tuple(_toc_successor_titles(lines, noise))
    best: _Found | None = None
    for cand in _bare_candidates(lines, noise, 0):
        if cand.start in skip:
            continue
        body, end = _section(lines, noise, cand, _Bounds(titles, upper_only=cand.heading.isupper()))
        found = _Found(cand, body, end)
        if found.chars > 0 and (best is None or found.chars >= best.chars):
            best = found
    return best


def _follow_pointer(lines: list[str], noise: list[bool], pointer: Extraction) -> Extraction:
    """Resolve a section that points elsewhere: to a Risk Factors section in this document, or flag it."""
    body = pointer.text[len(pointer.heading or ""):]
    if _THIS_DOCUMENT_RE.search(body):
        skip = range(pointer.start or 0, pointer.end or 0)
        target = _bare_section(lines, noise, skip)
        if target is not None:
            result = _classify(target)
            if result.status is Status.EXTRACTED and target.chars >= FOLLOWED_MIN_CHARS:
                return replace(result, reason=f"{pointer.heading} points to this section")
        if not _OTHER_DOCUMENT_RE.search(body):
            reason = "section points to risk factors elsewhere in this report, and no such section was found"
            return Extraction(Status.NOT_FOUND, "", reason, pointer.heading, pointer.start, pointer.end)
    return pointer


def _index_not_applicable(lines: list[str]) -> Extraction | None:
    """An index entry 'Item 1A. Risk Factors  Not applicable (a)': referred elsewhere by its note, or absent."""
    for i, line in enumerate(lines):
        match = _is_item_heading(line)
        if match is None or not _is_item_1a(match):
            continue
        entry = _RF_NOT_APPLICABLE_RE.match(match.group(3))
        if entry is None:
            continue
        heading = line[: len(line) - len(match.group(3))] + "Risk Factors"
        marker = entry.group(1)
        note = next(
            (lines[j] for j in range(i + 1, min(i + 200, len(lines))) if marker and lines[j].startswith(marker)), None
        )
        if note and _OTHER_DOCUMENT_RE.search(note):
            text = f"{heading.strip()}\n\n{match.group(3)}\n\n{note}"
            reason = "the cross-reference index marks Item 1A not applicable and its note refers to another document"
            return Extraction(Status.INCORPORATED_BY_REFERENCE, text, reason, heading.strip(), i, i + 1)
        reason = "the cross-reference index marks Item 1A Risk Factors as not applicable"
        return Extraction(Status.NOT_FOUND, "", reason, heading.strip(), i, i + 1)
    return None


def _locate(lines: list[str], entries: list[_TocEntry], anchors: dict[int, int], quarterly: bool) -> Extraction:
    """Find and classify the Risk Factors section in document lines."""
    noise = _noise_flags(lines)
    item = _toc_section(lines, noise, entries, anchors, quarterly)
    if item is None:
        part_ii = _part_ii_starts(lines) if quarterly else []
        # In a 10-Q only Part II has an Item 1A; the first Part II line may be the TOC's, which is fine.
        cands = _item_1a_candidates(lines, part_ii[0] if part_ii else 0)
        item = _pick(lines, noise, cands, _Bounds(_ITEM_END_TITLES, part=2 if quarterly else 1))
    if item is not None:
        result = _classify(item)
        if result.status is Status.INCORPORATED_BY_REFERENCE:
            return _follow_pointer(lines, noise, result)
        return result
    # No Item 1A with a body: a bare RISK FACTORS heading (annual-report and cross-reference-index layouts).
    bare = _bare_section(lines, noise, range(0))
    if bare is not None:
        return _classify(bare)
    index = _index_not_applicable(lines)
    if index is not None:
        return index
    where = "Part II Item 1A" if quarterly else "Item 1A"
    return Extraction(Status.NOT_FOUND, "", f"no {where} Risk Factors section with body text found", None)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def html_to_text(html: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Readable text of a document: paragraphs separated by blank lines, noise lines dropped."""
    lines = document_lines(html, max_bytes)
    noise = _noise_flags(lines)
    return "\n\n".join(line for line, drop in zip(lines, noise) if not drop)


def _is_quarterly(form_type: str) -> bool:
    """True for 10-Q forms, False for 10-K forms; raises on anything else."""
    form = form_type.strip().upper().replace(" ", "")
    if form.startswith("10-Q"):
        return True
    if form.startswith("10-K"):
        return False
    raise DocumentError(f"unsupported form type {form_type!r}; expected 10-K, 10-K/A, 10-Q or 10-Q/A")


def extract_risk_factors(
    html: bytes | str, form_type: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> Extraction:
    """Extract the Risk Factors section; never raises (failures become status=error)."""
    try:
        quarterly = _is_quarterly(str(form_type))
        if html is None or len(html) == 0:
            raise DocumentError("empty document")
        return _locate(*_read(html, max_bytes), quarterly)
    except DocumentError as exc:
        return Extraction(Status.ERROR, "", str(exc), None)
    except Exception as exc:  # noqa: BLE001 - the contract is to never raise
        return Extraction(Status.ERROR, "", f"{type(exc).__name__}: {exc}", None)


def extract_many(
    items: Iterable[tuple[str, bytes | str, str]], max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[tuple[str, Extraction]]:
    """Extract many (key, html, form_type) items lazily; never raises, even on malformed items."""
    try:
        iterator = iter(items)
    except Exception as exc:  # noqa: BLE001
        yield "", Extraction(Status.ERROR, "", f"items are not iterable: {type(exc).__name__}", None)
        return
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001
            yield "", Extraction(Status.ERROR, "", f"input iterator failed: {type(exc).__name__}: {exc}", None)
            return
        try:
            key, html, form_type = item
        except Exception as exc:  # noqa: BLE001
            yield str(item)[:80], Extraction(Status.ERROR, "", f"malformed item: {type(exc).__name__}", None)
            continue
        yield key, extract_risk_factors(html, form_type, max_bytes)
