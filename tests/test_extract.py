"""Tests for the Risk Factors extractor on real EDGAR filings and hand-made HTML."""

from __future__ import annotations

import codecs
import json
import os
import re
from functools import lru_cache
from pathlib import Path

import pytest

from governed_ft_dagster.edgar.extract import (
    EXTRACTOR_VERSION,
    Extraction,
    Status,
    decode_html,
    extract_many,
    extract_risk_factors,
    html_to_text,
)

SAMPLES = Path(
    os.environ.get("GOVERNED_FT_SEC_SAMPLES")
    or Path(__file__).resolve().parents[1].parent / "shared" / "sec_samples"
)
FILINGS = SAMPLES / "filings"
LABELS = SAMPLES / "labels"

needs_samples = pytest.mark.skipif(
    not FILINGS.is_dir(), reason=f"shared SEC samples not found at {SAMPLES} (set GOVERNED_FT_SEC_SAMPLES)"
)

# filing-name prefix -> (form type, expected status)
EXPECTED: dict[str, tuple[str, Status]] = {
    "AAPL_10-K": ("10-K", Status.EXTRACTED),
    "NVDA_10-K": ("10-K", Status.EXTRACTED),
    "V_10-K": ("10-K", Status.EXTRACTED),
    "GE_10-K": ("10-K", Status.EXTRACTED),
    "WFC_10-K": ("10-K", Status.INCORPORATED_BY_REFERENCE),
    "AAPL_10-Q": ("10-Q", Status.NO_MATERIAL_CHANGES),
    "NVDA_10-Q": ("10-Q", Status.EXTRACTED),
    # Its Item 1A only refers the reader to the 10-K's risk factors: a pointer, not risk factors (issue 16).
    "ORCL_10-Q": ("10-Q", Status.INCORPORATED_BY_REFERENCE),
    "JNJ_10-Q": ("10-Q", Status.NOT_FOUND),
}

# Sentences from inside each section (first ones sit right after the heading, last ones just before the end).
INSIDE: dict[str, list[str]] = {
    "AAPL_10-K": [
        "The Company’s operations and performance depend significantly on global and regional economic conditions",
        "The Company’s stock has experienced substantial price volatility in the past",
    ],
    "NVDA_10-K": [
        "The following risk factors should be considered in addition to the other information in this Annual Report",
        "Risk Factors Summary",
        "The anti-takeover provisions of the Delaware General Corporation Law may discourage",
    ],
    "V_10-K": [
        "We are subject to complex and evolving global regulations that could harm our business",
        "only our board of directors, Chair, or CEO or any stockholders who have owned continuously",
    ],
    "GE_10-K": [
        "The following discussion of the material factors, events and uncertainties that may make an investment",
        "STRATEGIC RISKS. Strategic risk relates to the Company's future business plans",
        "Legal proceedings - We are subject to a variety of legal proceedings",
    ],
    "WFC_10-K": ["That information is incorporated into this item by reference."],
    "AAPL_10-Q": ["There have been no material changes to the Company’s risk factors since the 2022 Form 10-K."],
    "NVDA_10-Q": [
        "Other than the risk factors listed below, there have been no material changes",
        "Our business is exposed to the risks associated with litigation, investigations and regulatory proceedings.",
    ],
    "ORCL_10-Q": ["you should carefully consider the factors discussed in Part I, Item 1A Risk Factors"],
}

# Text that belongs to the section after Risk Factors (or to the TOC) and must never leak in.
OUTSIDE: dict[str, list[str]] = {
    "AAPL_10-K": ["has overall responsibility for identifying, assessing and managing any material risks from cyber"],
    "GE_10-K": ["LEGAL PROCEEDINGS. Refer to", "MANAGEMENT’S DISCUSSION OF FINANCIAL RESPONSIBILITY"],
    "WFC_10-K": ["Not applicable."],
    "NVDA_10-Q": ["we repurchased 7.5 million shares", "Issuer Purchases of Equity Securities"],
    "AAPL_10-Q": ["Purchases of Equity Securities by the Issuer", "Apple Inc. | Q3 2023 Form 10-Q"],
    "ORCL_10-Q": ["approximately $6.8 billion remained available for stock repurchases"],
}

NEXT_ITEM_10K = re.compile(
    r"^(?:item\s*1\s*[bc]\b|item\s*[2-9]\b|unresolved staff comments\W*$|cybersecurity\W*$|part\s+ii\b)", re.I
)
NEXT_ITEM_10Q = re.compile(
    r"^(?:(?:part\s+ii\W*)?item\s*[2-6]\b|unregistered sales of equity securities|defaults upon senior"
    r"|mine safety disclosures|other information\W*$|exhibits\W*$|signatures?\W*$)",
    re.I,
)
RF_HEADING = re.compile(r"^(?:(?:part\s+ii\W*)?item\s*1a\W*)?risk\s*factors$", re.I)
PAGE_NUMBER_LINE = re.compile(r"^(?:page\s*)?[-\u2013(]?\s*(?:\d{1,4}|[ivxlcdm]{1,6})\s*[-\u2013)]?$", re.I)
TOC_ENTRY = re.compile(r"^item\s*\d+[a-c]?\W.{3,150}\s\d{1,3}$", re.I)


def _filing(prefix: str) -> Path:
    matches = sorted(FILINGS.glob(f"{prefix}_*.html"))
    assert len(matches) == 1, f"expected one filing for {prefix}, found {matches}"
    return matches[0]


@lru_cache(maxsize=None)
def _extract(prefix: str) -> Extraction:
    form, _ = EXPECTED[prefix]
    return extract_risk_factors(_filing(prefix).read_bytes(), form)


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def _label_1a(prefix: str) -> int | None:
    """Item 1A character_count from the sec-parser label file for a filing, if there is one."""
    accession = _filing(prefix).stem.split("_")[-1]
    files = list(LABELS.glob(f"*{accession}.expected-top-level-sections.json"))
    if not files:
        return None
    for entry in json.loads(files[0].read_text()):
        if entry["identifier"].lower() in ("1a", "part2item1a"):
            return int(entry["character_count"])
    return 0


# ---------------------------------------------------------------------------
# Real filings
# ---------------------------------------------------------------------------


@needs_samples
def test_every_shared_filing_has_an_expectation() -> None:
    names = {p.name for p in FILINGS.glob("*.html")}
    assert len(names) == len(EXPECTED)
    for prefix in EXPECTED:
        _filing(prefix)


@needs_samples
@pytest.mark.parametrize("prefix", sorted(EXPECTED))
def test_status(prefix: str) -> None:
    result = _extract(prefix)
    assert result.status is EXPECTED[prefix][1], result.reason


@needs_samples
@pytest.mark.parametrize("prefix", sorted(p for p, (_, s) in EXPECTED.items() if s is not Status.NOT_FOUND))
def test_section_bounds_and_cleanliness(prefix: str) -> None:
    form, _ = EXPECTED[prefix]
    result = _extract(prefix)
    lines = _lines(result.text)
    assert result.heading and lines[0] == result.heading
    assert RF_HEADING.match(result.heading.rstrip(".")), result.heading
    assert result.text.startswith(result.heading + "\n\n")
    assert result.chars == len(result.text)
    next_item = NEXT_ITEM_10Q if form == "10-Q" else NEXT_ITEM_10K
    leaked = [line for line in lines if next_item.match(line)]
    assert not leaked, f"section runs past its end: {leaked[:3]}"
    assert not [line for line in lines if PAGE_NUMBER_LINE.match(line)]
    assert not [line for line in lines if line.lower() == "table of contents"]
    assert not [line for line in lines if TOC_ENTRY.match(line)], "table-of-contents entries in section"
    assert "\n\n\n" not in result.text and "  " not in result.text


@needs_samples
@pytest.mark.parametrize("prefix", sorted(INSIDE))
def test_known_sentences_inside(prefix: str) -> None:
    text = _extract(prefix).text
    for sentence in INSIDE[prefix]:
        assert sentence in text


@needs_samples
@pytest.mark.parametrize("prefix", sorted(OUTSIDE))
def test_following_sections_stay_out(prefix: str) -> None:
    text = _extract(prefix).text
    for sentence in OUTSIDE[prefix]:
        assert sentence not in text


@needs_samples
@pytest.mark.parametrize("prefix", ["AAPL_10-K", "NVDA_10-K", "NVDA_10-Q"])
def test_size_matches_label(prefix: str) -> None:
    # Labels count HTML-derived text (with footers and spacing), so only the rough size can agree.
    label = _label_1a(prefix)
    assert label and label > 5000
    assert label / 2 <= _extract(prefix).chars <= label * 2


@needs_samples
def test_jnj_label_agrees_there_is_no_section() -> None:
    assert _label_1a("JNJ_10-Q") == 0
    result = _extract("JNJ_10-Q")
    assert result.text == "" and result.heading is None and result.reason


@needs_samples
def test_ge_real_section_not_cross_reference_index() -> None:
    # GE's "1A" label (954 chars) measures the cross-reference index entry, not the section.
    result = _extract("GE_10-K")
    assert result.heading == "RISK FACTORS"
    assert 40_000 < result.chars < 150_000
    assert result.chars > 10 * (_label_1a("GE_10-K") or 0)
    assert "Form 10-K Cross Reference Index" not in result.text
    for header in ("OPERATIONAL RISKS.", "FINANCIAL RISKS.", "LEGAL AND COMPLIANCE RISKS."):
        assert header in result.text


@needs_samples
def test_ge_paragraph_split_by_page_break_is_rejoined() -> None:
    text = _extract("GE_10-K").text
    assert "2023 FORM 10-K" not in text
    assert not [p for p in text.split("\n\n") if p[:1].islower()]


@needs_samples
def test_aapl_10q_matches_hand_reviewed_text() -> None:
    gold = json.loads((LABELS / "AAPL_10-Q_0000320193-23-000077.expected-structure-and-text.json").read_text())
    index = next(i for i, e in enumerate(gold) if e.get("section_type") == "part2item1a")
    heading = " ".join(gold[index]["text_content"].split())
    body = " ".join(gold[index + 1]["text_content"].split())
    assert _extract("AAPL_10-Q").text == f"{heading}\n\n{body}"


@needs_samples
def test_short_sections_are_short() -> None:
    for prefix in ("AAPL_10-Q", "WFC_10-K", "ORCL_10-Q"):
        assert 100 < _extract(prefix).chars < 1500
    assert _extract("NVDA_10-Q").chars > 20_000


@needs_samples
def test_extract_many_over_shared_filings() -> None:
    items = [(p, _filing(p).read_bytes(), form) for p, (form, _) in sorted(EXPECTED.items())]
    results = dict(extract_many(items))
    assert {k: v.status for k, v in results.items()} == {k: s for k, (_, s) in EXPECTED.items()}


@needs_samples
def test_html_to_text_drops_footers_and_hidden_xbrl() -> None:
    text = html_to_text(_filing("AAPL_10-K").read_bytes())
    assert "Apple Inc. | 2024 Form 10-K |" not in text
    assert "xbrli" not in text and "http://fasb.org" not in text
    assert "Item 1A. Risk Factors" in text
    assert not [line for line in text.split("\n\n") if PAGE_NUMBER_LINE.match(line)]


# ---------------------------------------------------------------------------
# Hand-made HTML
# ---------------------------------------------------------------------------

RISK = "<p>" + "Our business faces risks that could materially harm our results of operations. " * 12 + "</p>"
ITEM_1B = "<p>Item 1B. Unresolved Staff Comments</p><p>None.</p><p>Item 2. Properties</p><p>We lease offices.</p>"


def _doc(body: str, head: str = "") -> str:
    return f"<html><head>{head}</head><body>{body}</body></html>"


def test_heading_split_across_spans() -> None:
    html = _doc(f"<p><span>Item 1A.\tRi</span><span>sk Factors</span></p>{RISK}{ITEM_1B}")
    result = extract_risk_factors(html, "10-K")
    assert result.status is Status.EXTRACTED
    assert result.heading == "Item 1A. Risk Factors"
    assert "Unresolved" not in result.text and "lease offices" not in result.text


def test_heading_in_table_cells() -> None:
    html = _doc(
        "<table><tr><td><b>Item 1A.</b></td><td><b>Risk Factors</b></td></tr></table>"
        f"{RISK}<table><tr><td>Item 1B.</td><td>Unresolved Staff Comments</td></tr></table><p>None.</p>"
    )
    result = extract_risk_factors(html, "10-K")
    assert result.status is Status.EXTRACTED
    assert result.text.startswith("Item 1A. Risk Factors\n\nOur business faces risks")
    assert "None." not in result.text


def test_heading_number_and_title_in_separate_blocks() -> None:
    html = _doc(f"<div>ITEM 1A.</div><div>RISK FACTORS</div>{RISK}<div>ITEM 1B.</div><div>UNRESOLVED STAFF COMMENTS</div>")
    result = extract_risk_factors(html, "10-K")
    assert result.heading == "ITEM 1A. RISK FACTORS"
    assert result.text.endswith("results of operations.")


def test_table_of_contents_then_body() -> None:
    toc = (
        "<table>"
        "<tr><td><a href='#i1a'>Item 1A.</a></td><td><a href='#i1a'>Risk Factors</a></td><td>5</td></tr>"
        "<tr><td><a href='#i1b'>Item 1B.</a></td><td><a href='#i1b'>Unresolved Staff Comments</a></td><td>9</td></tr>"
        "<tr><td><a href='#i2'>Item 2.</a></td><td><a href='#i2'>Properties</a></td><td>9</td></tr>"
        "</table>"
    )
    body = (
        "<p>Item 1. Business</p><p>We make widgets.</p>"
        f"<p id='i1a'>Item 1A. Risk Factors</p>{RISK}"
        "<p style='text-align:center'>5</p><p><a href='#toc'>Table of Contents</a></p>"
        f"<p>Competition is intense and could reduce our margins and market share.</p>{ITEM_1B}"
    )
    result = extract_risk_factors(_doc(toc + body), "10-K")
    assert result.status is Status.EXTRACTED
    assert result.text.count("Item 1A") == 1
    assert "Competition is intense" in result.text
    assert "widgets" not in result.text and "Unresolved" not in result.text
    assert "\n\n5\n\n" not in result.text and "Table of Contents" not in result.text


def test_10q_uses_part_ii_and_stops_before_item_2() -> None:
    html = _doc(
        "<p>PART I. FINANCIAL INFORMATION</p><p>Item 1. Financial Statements</p><p>Revenue rose.</p>"
        "<p>Item 2. Management's Discussion and Analysis</p><p>Sales grew.</p>"
        "<p>PART II. OTHER INFORMATION</p><p>Item 1. Legal Proceedings</p><p>None.</p>"
        f"<p>Item 1A. Risk Factors</p>{RISK}"
        "<p>Item 2. Unregistered Sales of Equity Securities and Use of Proceeds</p><p>We bought back shares.</p>"
        "<p>Item 6. Exhibits</p>"
    )
    result = extract_risk_factors(html, "10-Q")
    assert result.status is Status.EXTRACTED
    assert "bought back" not in result.text and "Sales grew" not in result.text


def test_10q_ignores_item_1a_before_part_ii() -> None:
    html = _doc(
        f"<p>PART I</p><p>Item 1A. Risk Factors</p>{RISK * 3}<p>Item 2. Management's Discussion</p><p>Sales.</p>"
        "<p>PART II</p><p>Item 1A. Risk Factors</p>"
        "<p>There have been no material changes to our risk factors since our Annual Report.</p>"
        "<p>Item 2. Unregistered Sales of Equity Securities</p><p>None.</p>"
    )
    result = extract_risk_factors(html, "10-Q")
    assert result.status is Status.NO_MATERIAL_CHANGES
    assert "Our business faces risks" not in result.text


def test_item_1a_pointing_to_pages_prefers_risk_factors_section_in_same_document() -> None:
    html = _doc(
        "<p>Item 1A. Risk Factors</p><p>See \u201cRisk Factors\u201d on pages 27-36, incorporated herein by reference.</p>"
        f"{ITEM_1B}<p>RISK FACTORS</p>{RISK}<p>LEGAL PROCEEDINGS</p><p>Refer to Note 24.</p>"
    )
    result = extract_risk_factors(html, "10-K")
    assert result.status is Status.EXTRACTED and result.heading == "RISK FACTORS"
    assert "Note 24" not in result.text


def test_10q_ends_at_later_item_when_item_2_absent() -> None:
    html = _doc(f"<p>PART II</p><p>Item 1A. Risk Factors</p>{RISK}<p>Item 5. Other Information</p><p>Trading plans.</p>")
    result = extract_risk_factors(html, "10-Q")
    assert "Trading plans" not in result.text and "Other Information" not in result.text


def test_10q_without_part_ii_item_1a_is_not_found() -> None:
    html = _doc(
        "<p>Part II</p><p>Item 1. Legal Proceedings</p><p>See Note 11.</p>"
        "<p>Investors should read the Risk Factors described in Item 1A of our Annual Report on Form 10-K.</p>"
        "<p>Item 2. Unregistered Sales of Equity Securities</p><p>None.</p>"
    )
    assert extract_risk_factors(html, "10-Q").status is Status.NOT_FOUND


def test_no_material_changes_vs_restated_factors() -> None:
    nmc = "<p>There have been no material changes to the risk factors disclosed in our 2023 Form 10-K.</p>"
    short = _doc(f"<p>Item 1A. Risk Factors</p>{nmc}<p>Item 2. Properties</p>")
    assert extract_risk_factors(short, "10-Q").status is Status.NO_MATERIAL_CHANGES
    restated = _doc(
        "<p>Item 1A. Risk Factors</p><p>Except as set forth below, there have been no material changes.</p>"
        f"{RISK * 4}<p>Item 2. Properties</p>"
    )
    assert extract_risk_factors(restated, "10-Q").status is Status.EXTRACTED


def test_incorporated_by_reference() -> None:
    html = _doc(
        "<p>Item 1A. Risk Factors</p><p>The information required by this item is set forth under "
        "\u201cRisk Factors\u201d in the 2024 Annual Report and is incorporated herein by reference.</p>"
        f"{ITEM_1B}"
    )
    result = extract_risk_factors(html, "10-K")
    assert result.status is Status.INCORPORATED_BY_REFERENCE
    assert "incorporated herein by reference" in result.text


def test_not_applicable_section_is_not_found() -> None:
    html = _doc(f"<p>Item 1A. Risk Factors</p><p>Not applicable.</p>{ITEM_1B}")
    result = extract_risk_factors(html, "10-K")
    assert result.status is Status.NOT_FOUND and "not applicable" in (result.reason or "")


def test_run_in_risk_factors_heading_without_item_number() -> None:
    html = _doc(
        "<table><tr><td>Item 1A. Risk Factors</td><td>27-36</td></tr>"
        "<tr><td>Item 1B. Unresolved Staff Comments</td><td>Not applicable</td></tr></table>"
        "<p><b>RISK FACTORS.</b> The following discussion of material factors could affect our results.</p>"
        f"{RISK}<p><b>STRATEGIC RISKS.</b> Our strategy may fail for many reasons described here.</p>"
        "<p><b>LEGAL PROCEEDINGS.</b> Refer to Note 24.</p>"
    )
    result = extract_risk_factors(html, "10-K")
    assert result.status is Status.EXTRACTED
    assert result.text.startswith("RISK FACTORS\n\nThe following discussion")
    assert "STRATEGIC RISKS." in result.text and "Note 24" not in result.text


def test_hidden_inline_xbrl_is_ignored() -> None:
    hidden = (
        "<div style='display: none'><ix:header><ix:hidden><p>Item 1A. Risk Factors</p></ix:hidden>"
        "<ix:resources><xbrli:context id='c1'>0000320193 2024-09-28</xbrli:context></ix:resources>"
        "</ix:header></div>"
    )
    html = _doc(hidden + "<p>Item 1. Business</p><p>We sell things.</p>")
    assert extract_risk_factors(html, "10-K").status is Status.NOT_FOUND
    assert "0000320193" not in html_to_text(html)


def test_html_to_text_paragraphs_and_noise() -> None:
    footer = "<p>Acme Corp. | 2024 Form 10-K | {}</p>"
    pages = "".join(f"<p>Paragraph {i}   with\n  extra   whitespace.</p><p>{i}</p>{footer.format(i)}" for i in range(1, 7))
    text = html_to_text(_doc(pages + "<p>- 12 -</p><p>Page 13</p><p>iv</p><p>Table of Contents</p><li>Last</li>"))
    paragraphs = text.split("\n\n")
    assert paragraphs == [f"Paragraph {i} with extra whitespace." for i in range(1, 7)] + ["Last"]


def test_br_and_blocks_make_paragraphs() -> None:
    text = html_to_text(_doc("<div>One<br>Two</div><h2>Three</h2><table><tr><td>A</td><td>B</td></tr></table>"))
    assert text == "One\n\nTwo\n\nThree\n\nA B"


def test_empty_input() -> None:
    for empty in (b"", "", b"   \n "):
        result = extract_risk_factors(empty, "10-K")
        assert result.status is Status.ERROR and result.reason == "empty document"


def test_oversized_input_is_rejected_without_parsing() -> None:
    result = extract_risk_factors(b"<p>x</p>" * 1000, "10-K", max_bytes=1000)
    assert result.status is Status.ERROR
    assert "8000" in (result.reason or "") and "1000" in (result.reason or "")


def test_cp1252_bytes_with_meta_charset() -> None:
    body = "<p>Item 1A. Risk Factors</p><p>" + "We can\u2019t guarantee our caf\u00e9s \u2014 results may vary. " * 12
    html = _doc(body + "</p><p>Item 2. Properties</p>", "<meta http-equiv='Content-Type' content='text/html; charset=windows-1252'>")
    result = extract_risk_factors(html.encode("cp1252"), "10-K")
    assert result.status is Status.EXTRACTED
    assert "We can\u2019t guarantee our caf\u00e9s \u2014 results" in result.text


def test_decode_html_fallbacks() -> None:
    text = "<p>caf\u00e9 \u2019</p>"
    assert decode_html(codecs.BOM_UTF16_LE + text.encode("utf-16-le")) == text
    assert decode_html(text.encode("utf-8")) == text
    assert decode_html(text.encode("cp1252")) == text  # not utf-8, so cp1252
    assert decode_html(b"<?xml version='1.0' encoding='ASCII'?>" + text.encode("utf-8")).endswith(text)
    assert "\ufffd" in decode_html(b"<meta charset='utf-8'><p>\x81\xff</p>")


def test_truncated_html() -> None:
    html = _doc(f"<p>Item 1A. Risk Factors</p>{RISK}")[:-40] + "<p>Item 1B. Unres"
    result = extract_risk_factors(html, "10-K")
    assert result.status is Status.EXTRACTED
    assert "Unres" not in result.text


def test_unsupported_form_and_bad_input_types() -> None:
    assert extract_risk_factors("<p>x</p>", "8-K").status is Status.ERROR
    assert extract_risk_factors(12345, "10-K").status is Status.ERROR  # type: ignore[arg-type]
    assert extract_risk_factors(b"<html", "10-K").status is Status.ERROR


def test_amendment_forms_accepted() -> None:
    html = _doc(f"<p>Item 1A. Risk Factors</p>{RISK}{ITEM_1B}")
    assert extract_risk_factors(html, "10-K/A").status is Status.EXTRACTED
    assert extract_risk_factors(html, "10-Q/A").status is Status.EXTRACTED


def test_extract_many_never_raises_and_keeps_order() -> None:
    def items():  # type: ignore[no-untyped-def]
        yield "ok", _doc(f"<p>Item 1A. Risk Factors</p>{RISK}{ITEM_1B}").encode(), "10-K"
        yield "empty", b"", "10-Q"
        yield ("malformed",)
        yield "none", None, "10-K"
        raise RuntimeError("source broke")

    results = list(extract_many(items()))  # type: ignore[arg-type]
    assert [k for k, _ in results][:2] == ["ok", "empty"]
    assert [r.status for _, r in results] == [Status.EXTRACTED] + [Status.ERROR] * 4
    assert "source broke" in (results[-1][1].reason or "")


def test_extraction_value_object() -> None:
    result = Extraction(Status.EXTRACTED, "abc", None, "Item 1A")
    assert result.chars == 3 and Status("not_found") is Status.NOT_FOUND
    assert Status.EXTRACTED == "extracted"
    with pytest.raises(AttributeError):
        result.text = "x"  # type: ignore[misc]
    assert re.fullmatch(r"\d+\.\d+\.\d+", EXTRACTOR_VERSION)
