"""Expected Risk Factors outcomes for the unlabelled 2025 filings in ../shared/sec_samples/more/, judged by reading them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pytest

from conftest import SHARED_SAMPLES
from governed_ft_dagster.edgar.extract import Extraction, Status, document_lines, extract_risk_factors

MORE = SHARED_SAMPLES / "more"

pytestmark = pytest.mark.skipif(not MORE.is_dir(), reason=f"shared filings not found at {MORE}")


@dataclass(frozen=True)
class Expected:
    form: str
    status: Status
    heading: str
    first: str  # first sentence after the heading
    last: str  # last sentence of the section
    next_heading: str  # how the section that follows begins
    min_chars: int
    max_chars: int


EXPECTED: dict[str, Expected] = {
    "crm-10-k-2025-03-05.html": Expected(
        "10-K", Status.EXTRACTED, "ITEM 1A. RISK FACTORS",
        "In evaluating our business, you should carefully consider the following discussion of material risks, "
        "events and uncertainties that make an investment in us speculative or risky in addition to the other "
        "information included in this Annual Report.",
        "Additionally, failure to uphold, meet or make timely forward progress against our public commitments and "
        "goals related to climate action could adversely impact the resilience of our business to the impacts of "
        "climate-related events.",
        "ITEM 1B. UNRESOLVED STAFF COMMENTS", 100_000, 140_000,
    ),
    "googl-10-k-2025-02-05.html": Expected(
        "10-K", Status.EXTRACTED, "ITEM 1A.RISK FACTORS",
        "Our operations and financial results are subject to various risks and uncertainties, including but not "
        "limited to those described below, which could harm our business, reputation, financial condition, and "
        "operating results, and affect the trading price of our Class A and Class C stock.",
        "Under our hybrid work models, we may experience increased costs and/or disruption, in addition to "
        "potential effects on our ability to operate effectively and maintain our corporate culture.",
        "ITEM 1B.UNRESOLVED STAFF COMMENTS", 70_000, 100_000,
    ),
    "hubs-10-q-2025-08-06.html": Expected(
        "10-Q", Status.EXTRACTED, "Item 1A. RISK FACTORS",
        "An investment in our common stock involves a high degree of risk.",
        "Sustainability Accounting Standards Board and the Global Reporting Initiative, as well as new disclosure "
        "requirements from regulators.",
        "Item 2. Unregistered Sales of Equity Securities and Use of Proceeds", 120_000, 180_000,
    ),
    "nflx-10-k-2025-01-27.html": Expected(
        "10-K", Status.EXTRACTED, "Item 1A.Risk Factors",
        "If any of the following risks actually occur, our business, financial condition and results of "
        "operations could be harmed.",
        "Further, events outside of our control may cause actual results to differ from our forecast.",
        "Item 1B.Unresolved Staff Comments", 60_000, 85_000,
    ),
    "nflx-10-q-2025-07-18.html": Expected(
        "10-Q", Status.NO_MATERIAL_CHANGES, "Item 1A.Risk Factors",
        "There have been no material changes from the risk factors previously disclosed under the heading "
        "\u201cRisk Factors\u201d in the Company\u2019s Annual Report on Form 10-K for the year ended December 31, 2024.",
        "There have been no material changes from the risk factors previously disclosed under the heading "
        "\u201cRisk Factors\u201d in the Company\u2019s Annual Report on Form 10-K for the year ended December 31, 2024.",
        "Item 2.Unregistered Sales of Equity Securities and Use of Proceeds", 150, 400,
    ),
    "unp-10-k-2025-02-07.html": Expected(
        "10-K", Status.EXTRACTED, "Item 1A. Risk Factors",
        "The following discussion addresses significant factors, events, and uncertainties that make an "
        "investment in our securities risky and provides important information for the understanding of our "
        "\u201cforward-looking statements,\u201d which are discussed immediately preceding Item 7A of this Form 10-K "
        "and elsewhere.",
        "Also, in the event of a national crisis or emergency, one or more government entities could take "
        "actions (such as via the U.S. Defense Production Act or the International Emergency Economic Powers Act) that could "
        "diminish our rights or economic opportunities with respect to the transportation services we offer.",
        "Item 1B. Unresolved Staff Comments", 28_000, 40_000,
    ),
    # A pointer to the 10-K, not risk factors: the whole section is two sentences of boilerplate.
    "unp-10-q-2025-07-24.html": Expected(
        "10-Q", Status.INCORPORATED_BY_REFERENCE, "Item 1A. Risk Factors",
        "For a discussion of our potential risks and uncertainties, see the risk factors disclosed in our Form "
        "10-K for the year ended December 31, 2024.",
        "Our business also could be affected by risks that we are not presently aware of or that we currently "
        "consider immaterial to our operations.",
        "Item 2. Unregistered Sales of Equity Securities and Use of Proceeds", 300, 700,
    ),
    # The same document as filings/WFC_10-K: the risk factors live in the annual report to shareholders.
    "wfc-10-k-2025-02-25.html": Expected(
        "10-K", Status.INCORPORATED_BY_REFERENCE, "ITEM 1A. RISK FACTORS",
        "Information in response to this Item 1A can be found in this report under Item 1 and in the 2024 Annual "
        "Report to Shareholders under \u201cFinancial Review \u2013 Risk Factors.\u201d",
        "That information is incorporated into this item by reference.",
        "ITEM 1B. UNRESOLVED STAFF COMMENTS", 200, 400,
    ),
}


@lru_cache(maxsize=None)
def _run(name: str) -> tuple[Extraction, tuple[str, ...]]:
    data = (MORE / name).read_bytes()
    return extract_risk_factors(data, EXPECTED[name].form), tuple(document_lines(data))


def test_every_filing_in_more_has_an_expectation() -> None:
    assert {p.name for p in MORE.glob("*.html")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_status_heading_and_size(name: str) -> None:
    result, _ = _run(name)
    expected = EXPECTED[name]
    assert result.status is expected.status, result.reason
    assert result.heading == expected.heading
    assert expected.min_chars <= result.chars <= expected.max_chars


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_first_and_last_sentence(name: str) -> None:
    result, _ = _run(name)
    body = result.text[len(expected_heading := EXPECTED[name].heading):]
    assert result.text.startswith(expected_heading + "\n\n")
    assert body.lstrip().startswith(EXPECTED[name].first)
    assert result.text.endswith(EXPECTED[name].last)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_offsets_span_the_section_and_stop_before_the_next_one(name: str) -> None:
    result, lines = _run(name)
    assert result.start is not None and result.end is not None
    assert lines[result.start] == EXPECTED[name].heading
    assert EXPECTED[name].next_heading in lines[result.end : result.end + 3]
    assert EXPECTED[name].next_heading not in result.text
