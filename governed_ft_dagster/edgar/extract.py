"""Extract the Risk Factors section (10-K Item 1A, 10-Q Part II Item 1A) from EDGAR HTML."""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
_INVISIBLE_CHARS = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_BULLETS = frozenset("•●◦▪▫■□○◆◇♦➢➤►▸✓✔·*-–—o")


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
    encoded = text.encode("utf-8", errors="replace")
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
    raw = raw.translate(_INVISIBLE_CHARS)
    lines: list[str] = []
    for chunk in raw.split(_HARD):
        if _SOFT in chunk:
            parts = [p for p in (" ".join(s.split()) for s in chunk.split(_SOFT)) if p]
            if not parts:
                continue
            if sum(map(len, parts)) + len(parts) <= ROW_JOIN_MAX_CHARS:
                lines.append(" ".join(parts))
            else:
                lines.extend(_merge_bullets(parts))
        else:
            line = " ".join(chunk.split())
            if line:
                lines.append(line)
    return _merge_bullets(lines)


def document_lines(html: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Paragraph lines of a whole document, including noise lines (page numbers, headers)."""
    return _split_lines(_walk(_parse(html, max_bytes)))


# ---------------------------------------------------------------------------
# Line classification
# ---------------------------------------------------------------------------

_DASHES = r"[.:;,\-\u2010-\u2015\u2212]"
_PAGE_REF = r"(?:\s*(?:pages?\s*)?[A-Z]?-?\d{1,4}(?:\s*(?:[-\u2013\u2014,]|and|to)\s*[A-Z]?-?\d{1,4})*)?"
_ITEM_RE = re.compile(
    rf"^(?:part\s+(?:iv|i{{1,3}})\s*{_DASHES}*\s*)?item\s*(\d{{1,2}})\s*([a-d])?\b\s*{_DASHES}*\s*(.*)$",
    re.I,
)
_PART_RE = re.compile(rf"^part\s+(iv|i{{1,3}})\b\s*(?:{_DASHES}|\u2014|$)", re.I)
_RF_TITLE_RE = re.compile(
    rf"^[\"'\u201c\u2018]?risk\s*factors[\"'\u201d\u2019]?\.?(?:\s*\(continued\))?{_PAGE_REF}\s*$", re.I
)
_RF_RUN_IN_RE = re.compile(r"^(risk\s*factors)\s*[.:\u2013\u2014-]\s+(\S.*)$", re.I)
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
_PAGES_RE = re.compile(r"\bpages?\s+\d", re.I)
_PAGE_REF_TAIL_RE = re.compile(r"[.:]?" + _PAGE_REF + r"\s*", re.I)

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


def _title_match(line: str, titles: Iterable[str]) -> bool:
    """Whether the line is one of the titles, alone (maybe with a page number) or run-in in capitals."""
    low = line.lower()
    for title in titles:
        if not low.startswith(title):
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


def _item_1a_candidates(lines: list[str], first: int) -> list[_Candidate]:
    """Lines from index `first` on that head an Item 1A Risk Factors section (or its TOC entry)."""
    found: list[_Candidate] = []
    for i in range(first, len(lines)):
        line = lines[i]
        match = _is_item_heading(line)
        if match is None or match.group(1) != "1" or (match.group(2) or "").lower() != "a":
            continue
        title = match.group(3)
        if not title:
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if _RF_TITLE_RE.match(nxt):
                found.append(_Candidate(i, i + 2, f"{line} {nxt}", ""))
            continue
        if _RF_TITLE_RE.match(title):
            found.append(_Candidate(i, i + 1, line, ""))
            continue
        run_in = _RF_RUN_IN_RE.match(title)
        if run_in and len(run_in.group(2)) > 40:
            heading = line[: len(line) - len(title)] + run_in.group(1)
            found.append(_Candidate(i, i + 1, heading.strip(), run_in.group(2)))
    return found


def _bare_candidates(lines: list[str], noise: list[bool], first: int) -> list[_Candidate]:
    """'RISK FACTORS' headings without an item number (e.g. GE's annual-report layout)."""
    found: list[_Candidate] = []
    for i in range(first, len(lines)):
        line = lines[i]
        if len(line) < 12 or line[0] not in "Rr\"'\u201c\u2018" or noise[i]:
            continue
        if len(line) <= 60 and _RF_TITLE_RE.match(line):
            found.append(_Candidate(i, i + 1, line, ""))
            continue
        run_in = _RF_RUN_IN_RE.match(line)
        if run_in and run_in.group(1).isupper() and len(run_in.group(2)) > 40:
            found.append(_Candidate(i, i + 1, run_in.group(1), run_in.group(2)))
    return found


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


def _is_end(line: str, noise: bool, titles: Iterable[str]) -> bool:
    """Whether a line starts the next section."""
    if _is_item_heading(line):
        return True
    if noise or len(line) > 300:
        return False
    if _PART_RE.match(line) and len(line) <= 100:
        return True
    return _title_match(line, titles)


def _section(
    lines: list[str], noise: list[bool], cand: _Candidate, titles: Iterable[str]
) -> tuple[list[str], int]:
    """Body paragraphs of a candidate, ending before the next section; and the end index."""
    body: list[str] = [cand.lead] if cand.lead else []
    skipped = False
    end = len(lines)
    for j in range(cand.body_start, len(lines)):
        line = lines[j]
        if _is_end(line, noise[j], titles):
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


def _pick(
    lines: list[str], noise: list[bool], cands: list[_Candidate], titles: Iterable[str]
) -> tuple[_Candidate, list[str]] | None:
    """The candidate with the most body text (TOC entries have none); later wins ties."""
    best: tuple[_Candidate, list[str]] | None = None
    best_chars = 0
    for cand in cands:
        body, _ = _section(lines, noise, cand, titles)
        chars = sum(map(len, body))
        if chars > 0 and chars >= best_chars:
            best, best_chars = (cand, body), chars
    return best


def _classify(heading: str, body: list[str]) -> Extraction:
    """Decide the status of a located section from its body text."""
    body_text = " ".join(body)
    text = "\n\n".join([heading, *body])
    size = len(body_text)
    if size <= 300 and _NOT_APPLICABLE_RE.search(body_text):
        return Extraction(Status.NOT_FOUND, "", "risk factors section says it is not applicable", heading)
    if size <= SHORT_SECTION_CHARS and _NO_MATERIAL_CHANGES_RE.search(body_text):
        if size <= SHORT_SECTION_CHARS // 2 or not _EXCEPT_RE.search(body_text):
            reason = "section only states there are no material changes from previously disclosed risk factors"
            return Extraction(Status.NO_MATERIAL_CHANGES, text, reason, heading)
    if size <= SHORT_SECTION_CHARS and _INCORPORATED_RE.search(body_text):
        reason = "section incorporates the risk factors by reference to another document"
        return Extraction(Status.INCORPORATED_BY_REFERENCE, text, reason, heading)
    return Extraction(Status.EXTRACTED, text, None, heading)


def _part_ii_starts(lines: list[str]) -> list[int]:
    """Indexes of 'PART II' heading lines."""
    return [
        i for i, line in enumerate(lines) if (match := _PART_RE.match(line)) and match.group(1).lower() == "ii"
    ]


def _locate(lines: list[str], quarterly: bool) -> Extraction:
    """Find and classify the Risk Factors section in document lines."""
    noise = _noise_flags(lines)
    part_ii = _part_ii_starts(lines) if quarterly else []
    # In a 10-Q only Part II has an Item 1A; the first Part II line may be the TOC's, which is fine.
    item = _pick(lines, noise, _item_1a_candidates(lines, part_ii[0] if part_ii else 0), _ITEM_END_TITLES)
    item_result = _classify(item[0].heading, item[1]) if item else None
    if item_result is not None and not (
        item_result.status is Status.INCORPORATED_BY_REFERENCE and _PAGES_RE.search(item_result.text)
    ):
        return item_result
    # No usable Item 1A (or one pointing at pages of this report): look for a bare RISK FACTORS heading.
    bare_titles = _BARE_END_TITLES + tuple(_toc_successor_titles(lines, noise))
    bare = _pick(lines, noise, _bare_candidates(lines, noise, part_ii[-1] if part_ii else 0), bare_titles)
    if bare is not None:
        bare_result = _classify(bare[0].heading, bare[1])
        if item_result is None or bare_result.status is Status.EXTRACTED:
            return bare_result
    if item_result is not None:
        return item_result
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
        return _locate(document_lines(html, max_bytes), quarterly)
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
