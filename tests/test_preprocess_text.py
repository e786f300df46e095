"""Pure text functions of the curated transformation, on real SEC filings."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import html as lxml_html

from governed_ft_dagster.preprocess import text as T

FILINGS = Path(__file__).resolve().parents[1].parent / "shared" / "sec_samples" / "filings"
if not FILINGS.is_dir():
    FILINGS = Path("/work/shared/sec_samples/filings")
pytestmark = pytest.mark.skipif(not FILINGS.is_dir(), reason="the shared SEC samples are not present")

AAPL_10K = "AAPL_10-K_2024-09-28_0000320193-24-000123.html"
NVDA_10K = "NVDA_10-K_2024-01-28_0001045810-24-000029.html"
NVDA_10Q = "NVDA_10-Q_2023-07-30_0001045810-23-000175.html"
GE_10K = "GE_10-K_2023-12-31_0000040545-24-000027.html"
V_10K = "V_10-K_2024-09-30_0001403161-24-000058.html"
ORCL_10Q = "ORCL_10-Q_2024-08-31.html"
_BLOCKS = ("div", "p", "tr", "br", "li", "table", "h1", "h2", "h3", "h4", "h5", "h6")


def page_text(name: str) -> str:
    """The whole document as text, one line per block element, page furniture included."""
    root = lxml_html.fromstring((FILINGS / name).read_bytes())
    for element in root.iter(*_BLOCKS):
        element.tail = "\n" + (element.tail or "")
    return root.text_content()


def _lxml_section(name: str) -> str:
    """Risk Factors section cut from the page text: the longest stretch from an Item 1A heading to Item 1B/2."""
    lines = [line.strip() for line in page_text(name).splitlines()]
    starts = [i for i, line in enumerate(lines) if re.match(r"(?i)^item\s*1a\.?\s*risk\s*factors\.?$", line)]
    best = ""
    for start in starts:
        end = next((j for j in range(start + 1, len(lines)) if re.match(r"(?i)^item\s*(1b|2)\b", lines[j])), len(lines))
        candidate = "\n".join(lines[start:end])
        best = max(best, candidate, key=len)
    return best


def section_text(name: str) -> str:
    """The Risk Factors section: the project's extractor when it is importable, else an lxml cut."""
    form = "10-K" if "10-K" in name else "10-Q"
    try:
        from governed_ft_dagster.edgar.extract import extract_risk_factors
    except ImportError:
        return _lxml_section(name)
    return extract_risk_factors((FILINGS / name).read_bytes(), form).text


@pytest.fixture(scope="module")
def sections() -> dict[str, str]:
    return {name: T.clean_section(section_text(name)) for name in (AAPL_10K, NVDA_10K, NVDA_10Q, GE_10K, V_10K, ORCL_10Q)}


def test_normalise_unicode_maps_compatibility_forms_and_typography() -> None:
    raw = "The \ufb01rm\u00a0\u2019s \u201cnet\u201d re\u00advenue\u200b \u25cf item \uff11\uff10\uff05"
    assert T.normalise_unicode(raw) == "The firm 's \"net\" revenue \u2022 item 10%"


def test_normalise_whitespace_keeps_paragraphs_and_rejoins_wrapped_lines() -> None:
    raw = ("Heading  of\tthe risk.\r\n\r\n\r\nThe body was wrapped\nin the middle of a sentence."
           "\nNext   paragraph.\n \n\u2022 bullet")
    assert T.normalise_whitespace(raw) == (
        "Heading of the risk.\n\nThe body was wrapped in the middle of a sentence.\n\nNext paragraph.\n\n\u2022 bullet"
    )


def test_strip_boilerplate_removes_page_furniture_from_a_real_filing() -> None:
    raw = page_text(AAPL_10K)
    assert "Apple Inc. | 2024 Form 10-K | 17" in raw
    cleaned = T.clean_section(raw)
    paras = T.paragraphs(cleaned)
    assert not [p for p in paras if re.fullmatch(r"Apple Inc\. \| 2024 Form 10-K \| \d+", p)]
    assert not [p for p in paras if re.fullmatch(r"\d{1,3}", p)]
    assert "The price of the Company's stock is subject to volatility." in paras
    nvda = T.paragraphs(T.clean_section(page_text(NVDA_10K)))
    assert "Table of Contents" not in nvda
    assert "Competition could adversely impact our market share and financial results." in nvda


def test_strip_boilerplate_on_crafted_furniture() -> None:
    text = "\n\n".join(["Risk heading that could hurt us.", "17", "Page 4", "- 12 -", "Table of Contents",
                      "ACME Corp | 2024 Form 10-K | 18", "ACME Corp 2024 Annual Report 19", "iv", "Body text here."])
    assert T.strip_boilerplate(text) == "Risk heading that could hurt us.\n\nBody text here."
    broken = "A sentence that runs over\n\n17\n\nTable of Contents\n\nthe page break.\n\nNext one."
    assert T.strip_boilerplate(broken) == "A sentence that runs over the page break.\n\nNext one."


def test_split_sentences_respects_abbreviations() -> None:
    sentences = T.split_sentences("Sales in the U.S. Market fell. Apple Inc. is large, e.g. in Europe. It may grow!")
    assert sentences == ["Sales in the U.S. Market fell.", "Apple Inc. is large, e.g. in Europe.", "It may grow!"]


def test_split_apple_by_headings(sections) -> None:
    factors = T.split_risk_factors(sections[AAPL_10K])
    headings = [f.heading for f in factors]
    assert 24 <= len(factors) <= 32
    assert headings[0].startswith("The Company's operations and performance depend significantly on global")
    assert headings[-1] == "The price of the Company's stock is subject to volatility."
    assert factors[0].section == "Macroeconomic and Industry Risks" and factors[-1].section == "General Risks"
    assert all(f.method == "heading" and f.heading.endswith(".") for f in factors)
    assert not any("should be read in conjunction" in h or h.startswith("While ") for h in headings)
    assert [f.ordinal for f in factors] == list(range(len(factors)))
    assert sum(len(f.body) for f in factors) > 0.8 * len(sections[AAPL_10K])


def test_split_nvidia_skips_the_summary_and_keeps_subsections(sections) -> None:
    factors = T.split_risk_factors(sections[NVDA_10K])
    assert factors[0].heading == ("Failure to meet the evolving needs of our industry and markets may adversely "
                                  "impact our financial results.")
    assert factors[0].section == "Risks Related to Our Industry and Markets"
    assert len(factors) >= 20
    assert not any(f.heading.startswith("\u2022") for f in factors)
    # The summary's shorter wording of the first heading must not become a record of its own.
    assert not any(f.heading.startswith("Failure to meet the evolving needs of our industry may") for f in factors)
    assert all(len(f.body) >= T.MIN_BODY_CHARS for f in factors)


def test_split_ge_run_in_headings(sections) -> None:
    factors = T.split_risk_factors(sections[GE_10K])
    assert len(factors) >= 15 and all(f.method == "inline" for f in factors)
    first = factors[0]
    assert first.heading.startswith("We may encounter challenges to executing our plan to separate GE Aerospace")
    assert not first.heading.startswith("Strategic plan")
    assert first.body.startswith("In November 2021")
    assert {f.section for f in factors} >= {"STRATEGIC RISKS", "OPERATIONAL RISKS", "FINANCIAL RISKS"}


def test_split_visa_and_a_restating_10q(sections) -> None:
    visa = T.split_risk_factors(sections[V_10K])
    assert "We face intense competition in our industry." in [f.heading for f in visa]
    quarterly = T.split_risk_factors(sections[NVDA_10Q])
    assert 5 <= len(quarterly) <= 15
    assert not any("no material changes" in f.heading for f in quarterly)


def test_boilerplate_only_section_has_no_risk_factors(sections) -> None:
    assert T.split_risk_factors(sections[ORCL_10Q]) == []
    assert T.split_risk_factors("") == []


def test_split_falls_back_to_lead_sentences() -> None:
    body = " ".join(["The business depends on many factors outside our control."] * 4)
    text = "\n\n".join([
        "You should carefully consider the risks described below and in our Annual Report on Form 10-K.",
        f"We may lose customers to competitors with lower prices. {body}",
        f"Continued paragraph that simply goes on with more detail. {body}",
        f"Our debt could limit our flexibility. {body}",
    ])
    factors = T.split_risk_factors(text)
    assert [f.heading for f in factors] == ["We may lose customers to competitors with lower prices.",
                                            "Our debt could limit our flexibility."]
    assert "Continued paragraph that simply goes on" in factors[0].body
    assert all(f.method == "lead_sentence" for f in factors)
    assert not any("carefully consider" in f.heading for f in factors)


def test_chunk_paragraphs_fits_every_chunk_and_keeps_all_words() -> None:
    paras = [f"Sentence number {i} is here. " * 6 for i in range(8)] + [f"Long sentence {i} ends. " for i in range(40)]
    body = "\n\n".join(p.strip() for p in paras[:8]) + "\n\n" + " ".join(p.strip() for p in paras[8:])
    fits = lambda piece: len(piece) <= 400  # noqa: E731
    chunks = T.chunk_paragraphs(body, fits)
    assert chunks and len(chunks) > 2 and all(fits(c) for c in chunks)
    assert " ".join(" ".join(chunks).split()) == " ".join(body.split())
    assert T.chunk_paragraphs("x" * 500, fits) is None
    assert T.chunk_paragraphs("short body", fits) == ["short body"]


def test_exact_key_ignores_case_spacing_and_punctuation() -> None:
    a = T.exact_key("Our  business may suffer.")
    assert a == T.exact_key("our business, may suffer") == T.exact_key("OUR\nBUSINESS may suffer!")
    assert a != T.exact_key("Our business may not suffer.")


def test_minhash_estimates_jaccard_on_a_real_restatement(sections) -> None:
    annual = {f.heading: f.body for f in T.split_risk_factors(sections[NVDA_10K])}
    quarterly = {f.heading: f.body for f in T.split_risk_factors(sections[NVDA_10Q])}
    key = "Failure to meet the evolving needs of our industry and markets may adversely impact our financial results."
    a, b = T.shingle_hashes(annual[key]), T.shingle_hashes(quarterly[key])
    true = T.jaccard(a, b)
    sa, sb = T.minhash_signature(a), T.minhash_signature(b)
    estimate = sum(x == y for x, y in zip(sa, sb)) / len(sa)
    assert true >= 0.8 and abs(estimate - true) < 0.15
    assert set(T.lsh_band_keys(sa)) & set(T.lsh_band_keys(sb))
    other = T.shingle_hashes(annual["Climate change may have a long-term impact on our business."])
    assert T.jaccard(a, other) < 0.1
    assert not set(T.lsh_band_keys(sa)) & set(T.lsh_band_keys(T.minhash_signature(other)))


def test_minhash_is_exactly_the_universal_hash_formula() -> None:
    rng = random.Random(3)
    mersenne = (1 << 61) - 1
    for size in (1, 2, 5, 400):
        values = [rng.randrange(0, 1 << 63) for _ in range(size)] + [(1 << 63) - 1, mersenne, mersenne - 1, 0]
        expected = [min((a * x + b) % mersenne for x in values) for a, b in T._permutations(T.NUM_PERM, 1)]
        assert T.minhash_signature(values) == expected


def test_minhash_is_deterministic_across_processes() -> None:
    code = ("from governed_ft_dagster.preprocess import text as T;"
            "print(T.lsh_band_keys(T.minhash_signature(T.shingle_hashes('one two three four five six seven'))))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1
    assert outputs.pop().strip() == str(T.lsh_band_keys(T.minhash_signature(T.shingle_hashes(
        "one two three four five six seven"))))
    assert T.shingle_hashes("a b") and len(T.minhash_signature([])) == T.NUM_PERM
    with pytest.raises(ValueError):
        T.lsh_band_keys([1] * 10, bands=3)


def test_build_messages_asks_for_the_heading() -> None:
    messages = T.build_messages("Body of the risk.", "Heading.", "Apple Inc.", "10-K")
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"].endswith("\n\nBody of the risk.") and "Apple Inc.'s Form 10-K" in messages[1]["content"]
    assert messages[2]["content"] == "Heading."
    assert "part 2 of 3" in T.build_messages("b", "h", None, None, 2, 3)[1]["content"]


def test_split_for_is_by_company_and_deterministic() -> None:
    assert T.split_for("0000320193") == T.split_for("320193") == T.split_for(320193)
    splits = [T.split_for(cik, 0.1, seed=7) for cik in range(20000)]
    assert 0.08 < splits.count("validation") / len(splits) < 0.12
    assert splits == [T.split_for(cik, 0.1, seed=7) for cik in range(20000)]
    assert splits != [T.split_for(cik, 0.1, seed=8) for cik in range(20000)]
    assert T.split_for("1", 0.0) == "train" and T.split_for("1", 1.0) == "validation"


def test_record_id_is_deterministic_and_distinct() -> None:
    assert T.record_id("acc", 1, 1, 1, "body") == T.record_id("acc", 1, 1, 1, "body")
    assert len({T.record_id("acc", 1, 1, 1, "body"), T.record_id("acc", 2, 1, 1, "body"),
                T.record_id("acc", 1, 1, 2, "body"), T.record_id("acc2", 1, 1, 1, "body")}) == 4


@pytest.mark.parametrize("name", [AAPL_10K, NVDA_10K])
def test_page_furniture_does_not_change_the_split(name: str, sections) -> None:
    from_page = T.split_risk_factors(T.clean_section(_lxml_section(name)))
    assert [f.heading for f in from_page] == [f.heading for f in T.split_risk_factors(sections[name])]
    assert not any("Form 10-K |" in f.body or "\n\nTable of Contents" in f.body for f in from_page)


def test_headings_without_a_period_are_found() -> None:
    body = "Demand for our products depends on consumer spending, which is volatile and hard to forecast. " * 3
    text = "\n\n".join(["RISKS RELATED TO OUR BUSINESS", "WE MAY NOT BE ABLE TO COMPETE EFFECTIVELY", body,
                        "Our results could fluctuate significantly from quarter to quarter", body])
    factors = T.split_risk_factors(text)
    assert [(f.heading, f.section) for f in factors] == [
        ("WE MAY NOT BE ABLE TO COMPETE EFFECTIVELY", "RISKS RELATED TO OUR BUSINESS"),
        ("Our results could fluctuate significantly from quarter to quarter", "RISKS RELATED TO OUR BUSINESS")]
