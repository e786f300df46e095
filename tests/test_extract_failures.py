"""One test per failure kind of issue 16, each on a small fragment shaped like the filing that showed it."""

from __future__ import annotations

from governed_ft_dagster.edgar.extract import Status, document_lines, extract_risk_factors

RISK = "Our business faces risks that could materially harm our results of operations and financial condition. "
ONE_PAGE = "".join(f"<p>{RISK * 6}</p>" for _ in range(3))


def _doc(body: str) -> str:
    return f"<html><head><title>10</title></head><body>{body}</body></html>"


def _toc_row(target: str, item: str, title: str, page: int) -> str:
    return f"<tr><td><a href='#{target}'>{item}</a></td><td><a href='#{target}'>{title}</a></td><td>{page}</td></tr>"


def test_heading_with_trailing_colon_is_found() -> None:
    toc = (
        "<table><tr><td>Item 1A.</td><td>Risk Factors</td><td>12</td></tr>"
        "<tr><td>Item 1B.</td><td>Unresolved Staff Comments</td><td>30</td></tr></table>"
    )
    body = (
        "<p><b>Item 1.</b> <b>Business:</b></p><p>We make widgets for industrial customers.</p>"
        f"<p><b>Item 1A. Risk Factors:</b></p>{ONE_PAGE}"
        "<p><b>Item 1B. Unresolved Staff Comments:</b></p><p>None.</p>"
    )
    result = extract_risk_factors(_doc(toc + body), "10-K")
    assert result.status is Status.EXTRACTED
    assert result.heading == "Item 1A. Risk Factors:"
    assert result.text.endswith("financial condition.") and "None." not in result.text


def test_dash_after_item_number_is_not_part_of_the_title() -> None:
    html = _doc(
        "<p>PART II - OTHER INFORMATION</p><p>Item 1. - Legal Proceedings</p><p>See Note 9.</p>"
        "<p>Item 1A. - Risk Factors</p>"
        "<p>There have been no material changes to the risk factors disclosed in our 2024 Form 10-K.</p>"
        "<p>Item 2. - Unregistered Sales of Equity Securities and Use of Proceeds</p><p>None.</p>"
    )
    result = extract_risk_factors(html, "10-Q")
    assert result.status is Status.NO_MATERIAL_CHANGES
    assert result.heading == "Item 1A. - Risk Factors"
    assert "Unregistered" not in result.text


def test_running_page_header_repeating_the_item_heading_does_not_split_the_section() -> None:
    header = "<div><p>PART I</p><p>ITEM 1A. RISK FACTORS</p></div>"
    pages = "".join(
        f"{header}<p>Risk {n}: {RISK * 4}</p>{ONE_PAGE}<p style='text-align:center'>{20 + n}</p><hr/>"
        for n in range(1, 8)
    )
    html = _doc(
        "<p>PART I</p><p>ITEM 1. BUSINESS</p><p>We run railroads.</p><hr/>"
        f"<p>PART I</p><p>ITEM 1A. RISK FACTORS</p>{pages}"
        "<p>PART I</p><p>ITEM 1B. UNRESOLVED STAFF COMMENTS</p><p>None.</p>"
    )
    result = extract_risk_factors(html, "10-K")
    assert result.status is Status.EXTRACTED
    for n in range(1, 8):
        assert f"Risk {n}:" in result.text
    assert result.text.count("ITEM 1A. RISK FACTORS") == 1 and "PART I" not in result.text
    assert "None." not in result.text and "\n\n21\n\n" not in result.text


def test_plain_risk_factors_heading_before_a_cross_reference_index_is_found() -> None:
    html = _doc(
        "<p>PART I - FINANCIAL INFORMATION</p><p>Management's Discussion and Analysis</p><p>Revenue grew 5%.</p>"
        "<p>Other Key Information</p><p>Risk Factors</p>"
        f"<p>The following risk factors update those in our 2024 Form 10-K.</p>{ONE_PAGE}"
        "<p>Legal Proceedings</p><p>See Note 14 for a description of our legal proceedings.</p>"
        "<p>Form 10-Q Cross-Reference Index</p><p>Part II - Other Information</p>"
        "<table><tr><td>Item 1.</td><td>Legal Proceedings</td><td>Page 41</td></tr>"
        "<tr><td>Item 1A.</td><td>Risk Factors</td><td>Page 40</td></tr>"
        "<tr><td>Item 2.</td><td>Unregistered Sales of Equity Securities and Use of Proceeds</td><td>Page 42</td></tr>"
        "</table>"
    )
    result = extract_risk_factors(html, "10-Q")
    assert result.status is Status.EXTRACTED
    assert result.heading == "Risk Factors"
    assert result.text.startswith("Risk Factors\n\nThe following risk factors update")
    assert "Note 14" not in result.text and "Page 40" not in result.text


def test_index_entry_not_applicable_with_a_note_is_incorporated_by_reference() -> None:
    html = _doc(
        "<p>PART I - FINANCIAL INFORMATION</p><p>Results of operations improved.</p>"
        "<p>Form 10-Q Cross-Reference Index</p><p>Part II - Other Information</p>"
        "<table><tr><td>Item 1.</td><td>Legal Proceedings</td><td>Page 41</td></tr>"
        "<tr><td>Item 1A.</td><td>Risk Factors</td><td>Not applicable (a)</td></tr>"
        "<tr><td>Item 2.</td><td>Unregistered Sales of Equity Securities</td><td>Page 42</td></tr></table>"
        "<p>(a) For a discussion of the risks we face, see Part I, Item 1A. Risk Factors of our "
        "Annual Report on Form 10-K for the year ended December 31, 2024.</p>"
    )
    result = extract_risk_factors(html, "10-Q")
    assert result.status is Status.INCORPORATED_BY_REFERENCE
    assert result.heading == "Item 1A. Risk Factors"
    assert "cross-reference index" in (result.reason or "") and "Annual Report on Form 10-K" in result.text


def test_index_entry_not_applicable_without_a_note_is_not_found_with_a_reason() -> None:
    html = _doc(
        "<p>Form 10-Q Cross-Reference Index</p>"
        "<table><tr><td>Item 1A.</td><td>Risk Factors</td><td>Not applicable</td></tr>"
        "<tr><td>Item 2.</td><td>Unregistered Sales of Equity Securities</td><td>Page 42</td></tr></table>"
    )
    result = extract_risk_factors(html, "10-Q")
    assert result.status is Status.NOT_FOUND and "not applicable" in (result.reason or "")


def test_pointer_to_the_annual_report_is_not_returned_as_risk_factors() -> None:
    html = _doc(
        "<p>PART II - OTHER INFORMATION</p><p>Item 1A. Risk Factors</p>"
        "<p>For a discussion of our potential risks and uncertainties, please refer to Part I, Item 1A, "
        "\u201cRisk Factors\u201d in our Annual Report on Form 10-K for the year ended December 31, 2024.</p>"
        "<p>Item 2. Unregistered Sales of Equity Securities and Use of Proceeds</p><p>None.</p>"
    )
    result = extract_risk_factors(html, "10-Q")
    assert result.status is Status.INCORPORATED_BY_REFERENCE
    assert "refers the reader" in (result.reason or "")


def test_pointer_inside_the_report_is_followed_to_the_section_it_names() -> None:
    html = _doc(
        "<p>PART I - FINANCIAL INFORMATION</p><p>Item 2. Management's Discussion and Analysis</p>"
        "<p>Forward-Looking Statements</p><p>Some statements here are forward-looking.</p>"
        f"<p>Risk Factors</p><p>An investment in our securities involves risk.</p>{ONE_PAGE}"
        "<p>Controls and Procedures</p><p>Our disclosure controls are effective.</p>"
        "<p>PART II - OTHER INFORMATION</p><p>Item 1A. Risk Factors</p>"
        "<p>For a discussion of risk factors, see \u201cRisk Factors\u201d in Part I, Item 2 of this report.</p>"
        "<p>Item 2. Unregistered Sales of Equity Securities and Use of Proceeds</p><p>None.</p>"
    )
    result = extract_risk_factors(html, "10-Q")
    assert result.status is Status.EXTRACTED
    assert result.heading == "Risk Factors"
    assert result.text.startswith("Risk Factors\n\nAn investment in our securities involves risk.")
    assert "see \u201cRisk Factors\u201d" not in result.text and "disclosure controls" not in result.text


def test_pointer_inside_the_report_that_leads_nowhere_is_flagged() -> None:
    html = _doc(
        "<p>PART II - OTHER INFORMATION</p><p>Item 1A. Risk Factors</p>"
        "<p>For a discussion of risk factors, see \u201cRisk Factors\u201d in Part I, Item 2 of this report.</p>"
        "<p>Item 2. Unregistered Sales of Equity Securities and Use of Proceeds</p><p>None.</p>"
    )
    result = extract_risk_factors(html, "10-Q")
    assert result.status is Status.NOT_FOUND and result.text == ""
    assert "elsewhere in this report" in (result.reason or "")


def test_table_of_contents_anchor_ends_the_section_where_no_item_heading_does() -> None:
    toc = (
        "<table>" + _toc_row("i1a", "Item 1A.", "Risk Factors", 9) + _toc_row("i1c", "Item 1C.", "Cybersecurity", 20)
        + _toc_row("i2", "Item 2.", "Properties", 21) + "</table>"
    )
    body = (
        f"<div id='i1a'><b>Item 1A. Risk Factors</b></div>{ONE_PAGE}"
        "<div id='i1c'><b>Cybersecurity</b></div><p>We maintain a cybersecurity risk management program.</p>"
        "<div id='i2'><b>Item 2. Properties</b></div><p>We lease our headquarters.</p>"
    )
    result = extract_risk_factors(_doc(toc + body), "10-K")
    assert result.status is Status.EXTRACTED
    assert "cybersecurity risk management program" not in result.text
    lines = document_lines(_doc(toc + body))
    assert lines[result.start] == "Item 1A. Risk Factors" and lines[result.end] == "Cybersecurity"


def test_table_of_contents_anchor_picks_the_section_and_a_sub_heading_does_not_end_it() -> None:
    toc = (
        "<table><tr><td><a href='#rf'>Risk Factors</a></td><td>27</td></tr>"
        "<tr><td><a href='#lp'>Legal Proceedings</a></td><td>36</td></tr></table>"
    )
    body = (
        f"<div id='rf'>RISK FACTORS</div>{ONE_PAGE}<p>Cybersecurity</p>"
        f"<p>Cyber attacks on our systems could disrupt operations. {RISK}</p>"
        "<div id='lp'>LEGAL PROCEEDINGS</div><p>Refer to Note 24.</p>"
    )
    result = extract_risk_factors(_doc(toc + body), "10-K")
    assert result.status is Status.EXTRACTED and result.heading == "RISK FACTORS"
    assert "Cyber attacks on our systems" in result.text and "Note 24" not in result.text


def test_upper_case_section_does_not_end_at_a_title_case_sub_heading() -> None:
    html = _doc(
        f"<p>RISK FACTORS</p>{ONE_PAGE}<p>Cybersecurity</p><p>Cyber attacks on our systems could disrupt us. {RISK}</p>"
        "<p>LEGAL PROCEEDINGS</p><p>Refer to Note 24.</p>"
    )
    result = extract_risk_factors(html, "10-K")
    assert result.status is Status.EXTRACTED
    assert "Cyber attacks on our systems" in result.text and "Note 24" not in result.text


def test_heading_word_split_by_inline_tags_with_whitespace_between() -> None:
    html = _doc(
        f"<p><span>ITEM 1A. RI</span>\n<span>SK FACTORS</span></p>{ONE_PAGE}"
        "<p>ITEM 1B. UNRESOLVED STAFF COMMENTS</p><p>None.</p>"
    )
    result = extract_risk_factors(html, "10-K")
    assert result.status is Status.EXTRACTED and result.heading == "ITEM 1A. RI SK FACTORS"


def test_cross_reference_link_into_the_section_does_not_end_it() -> None:
    toc = (
        "<table>" + _toc_row("i1a", "Item 1A.", "Risk Factors", 9)
        + _toc_row("i1b", "Item 1B.", "Unresolved Staff Comments", 20) + "</table>"
    )
    body = (
        f"<div id='i1a'>Item 1A. Risk Factors</div>{ONE_PAGE}<p>See <a href='#tax'>Risk Factors</a> below on taxes.</p>"
        f"<div id='tax'>Risks Related to Taxation</div><p>Changes in tax law could hurt us. {RISK}</p>"
        "<div id='i1b'>Item 1B. Unresolved Staff Comments</div><p>None.</p>"
    )
    result = extract_risk_factors(_doc(toc + body), "10-K")
    assert result.status is Status.EXTRACTED
    assert "Changes in tax law could hurt us." in result.text and "None." not in result.text


def test_short_risk_that_ends_by_pointing_to_the_annual_report_is_still_a_risk() -> None:
    html = _doc(
        "<p>PART II</p><p>Item 1A. Risk Factors</p>"
        "<p>Our pending merger with Acme may not be completed on the expected timeline or at all. "
        "Regulators may impose conditions, financing may become costlier, and the attention of management may be "
        "diverted from operations, any of which could harm our results. For our other risks, see our Annual Report "
        "on Form 10-K for the year ended December 31, 2024.</p>"
        "<p>Item 2. Unregistered Sales of Equity Securities and Use of Proceeds</p><p>None.</p>"
    )
    assert extract_risk_factors(html, "10-Q").status is Status.EXTRACTED
