"""The synthetic EDGAR-shaped sample corpus and the mirror of the real shared samples."""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from governed_ft_dagster.edgar.client import LocalEdgarSource, archive_path, parse_company_tickers
from governed_ft_dagster.edgar.sample_corpus import (
    MANIFEST_NAME,
    SampleManifest,
    build_sample_corpus,
    mirror_shared_samples,
)

SAMPLES = Path(
    os.environ.get("GOVERNED_FT_SEC_SAMPLES") or Path(__file__).resolve().parents[1].parent / "shared" / "sec_samples"
)
needs_samples = pytest.mark.skipif(not (SAMPLES / "api").is_dir(), reason=f"SEC samples not found at {SAMPLES}")
YEARS = (2023, 2024)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SampleManifest:
    return build_sample_corpus(tmp_path_factory.mktemp("corpus") / "edgar", companies=12, fiscal_years=YEARS, seed=0)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _norm(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").replace("\u00a0", " ").split()).lower()


def test_same_seed_is_byte_identical_and_another_seed_differs(corpus, tmp_path):
    first = _tree(corpus.root)
    again = build_sample_corpus(tmp_path / "again", companies=12, fiscal_years=YEARS, seed=0)
    assert _tree(again.root) == first
    other = _tree(build_sample_corpus(tmp_path / "other", companies=12, fiscal_years=YEARS, seed=1).root)
    assert other.keys() != first.keys() or other != first
    common = set(other) & set(first)
    assert sum(other[k] != first[k] for k in common) >= len(common) // 2


def test_layout_is_edgar_shaped(corpus):
    root = corpus.root
    tickers = json.loads((root / "files" / "company_tickers.json").read_bytes())
    assert [row["ticker"] for row in tickers.values()] == corpus.tickers
    assert len(corpus.companies) == 12 and len(set(corpus.tickers)) == 12
    for company in corpus.companies:
        assert int(company.cik) >= 9900001
        data = json.loads((root / "submissions" / f"CIK{company.cik}.json").read_bytes())
        assert data["cik"] == str(int(company.cik)) and data["tickers"] == [company.ticker]
        assert re.fullmatch(r"\d{4}", data["fiscalYearEnd"])
        recent = data["filings"]["recent"]
        assert len({len(v) for v in recent.values()}) == 1
        for acc, doc, size in zip(recent["accessionNumber"], recent["primaryDocument"], recent["size"]):
            path = root / archive_path(company.cik, acc, doc)
            assert path.is_file() and path.stat().st_size == size
    for filing in corpus.filings:
        acc = filing.accession_number
        assert re.fullmatch(r"\d{10}-\d{2}-\d{6}", acc)
        expected = f"Archives/edgar/data/{int(filing.cik)}/{acc.replace('-', '')}/{filing.primary_document}"
        assert filing.archive_path == expected and (root / expected).is_file()
    assert len(corpus.by_accession()) == len(corpus.filings)
    saved = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert saved["root"] == "." and len(saved["filings"]) == len(corpus.filings)


@needs_samples
def test_schema_matches_real_submissions_and_names_do_not_collide(corpus):
    real = json.loads((SAMPLES / "api" / "CIK0000320193.submissions.json").read_bytes())
    ours = json.loads((corpus.root / "submissions" / f"CIK{corpus.companies[0].cik}.json").read_bytes())
    assert list(ours) == list(real)
    assert list(ours["filings"]["recent"]) == list(real["filings"]["recent"])
    assert set(ours["filings"]["files"][0]) == set(real["filings"]["files"][0])
    real_index = parse_company_tickers(json.loads((SAMPLES / "api" / "company_tickers.json").read_bytes()))
    real_ciks = {cik for cik, _ in real_index.values()}
    assert not set(corpus.tickers) & set(real_index)
    assert not {c.cik for c in corpus.companies} & real_ciks


def test_local_source_lists_the_period_with_fiscal_years_and_quarters(corpus):
    source = LocalEdgarSource(corpus.root)
    resolved = source.resolve(corpus.tickers + ["NOPE"])
    assert resolved.unknown == ["NOPE"] and len(resolved) == 12
    expected = {f.accession_number: f for f in corpus.in_period()}
    listed = {}
    for ticker, (cik, name) in resolved.items():
        for ref in source.filings(cik, fiscal_years=YEARS):
            assert (ref.ticker, ref.entity_name) == (ticker, name)
            listed[ref.accession_number] = ref
    assert set(listed) == set(expected)
    for acc, ref in listed.items():
        truth = expected[acc]
        assert (ref.fiscal_year, ref.fiscal_period) == (truth.fiscal_year, truth.fiscal_period), truth
        assert ref.original_form == truth.form and ref.is_amendment == truth.form.endswith("/A")
        assert source.download(ref) == corpus.root / truth.archive_path
    per_company = Counter((r.cik, r.fiscal_year, r.fiscal_period) for r in listed.values() if not r.is_amendment)
    assert set(per_company.values()) == {1}
    assert len(per_company) == 12 * len(YEARS) * 4
    assert sorted(r.original_form for r in listed.values() if r.is_amendment) == ["10-K/A", "10-K/A", "10-Q/A"]
    # The prior year's 10-K (filed inside the calendar period) and 8-Ks are filtered out.
    older = [f for f in corpus.filings if f.fiscal_year == YEARS[0] - 1]
    assert len(older) == 12 and not {f.accession_number for f in older} & set(listed)
    everything = source.filings(corpus.companies[0].cik, forms=("10-K", "10-Q", "8-K"), fiscal_years=None)
    assert {r.form_type for r in everything} == {"10-K", "10-Q", "8-K"}
    week_based = [c for c in corpus.companies if c.week_based]
    assert week_based and any(c.fiscal_year_end not in ("0930", "0131", "1231") for c in week_based)


def test_older_submissions_page_is_read_only_when_needed(corpus):
    cik = corpus.companies[0].cik
    head = json.loads((corpus.root / "submissions" / f"CIK{cik}.json").read_bytes())
    (page,) = head["filings"]["files"]

    class Recording(LocalEdgarSource):
        def __init__(self, root: Path) -> None:
            super().__init__(root)
            self.read: list[str] = []

        def _read_submissions_page(self, name: str):
            self.read.append(name)
            return super()._read_submissions_page(name)

    late = Recording(corpus.root)
    late_refs = late.filings(cik, fiscal_years=[YEARS[-1]])
    assert page["name"] not in late.read and len(late_refs) == 4
    early = Recording(corpus.root)
    early_refs = early.filings(cik, fiscal_years=YEARS)
    assert page["name"] in early.read
    old_rows = json.loads((corpus.root / "submissions" / page["name"]).read_bytes())["accessionNumber"]
    assert set(old_rows) & {r.accession_number for r in early_refs}


def test_documents_have_filing_structure(corpus):
    root = corpus.root
    normal = [f for f in corpus.filings if f.defect is None]
    annual = [f for f in normal if f.form == "10-K" and f.risk_factor_headings]
    assert len(annual) >= 20
    variants = Counter()
    for filing in annual:
        text = (root / filing.archive_path).read_text(encoding="ascii")
        assert "xmlns:ix=" in text and "<ix:header>" in text and 'style="display:none"' in text
        assert "TABLE OF CONTENTS" in text and 'href="#item-1a"' in text
        assert "page-break-after:always" in text and "| " + str(filing.fiscal_year) + " Form 10-K |" in text
        for item in ("1B.", "1C.", "7A.", "9A."):
            assert f"Item {item}" in text
        assert 3 <= len(filing.risk_factor_headings)
        for heading in filing.risk_factor_headings:
            assert html.escape(heading, quote=False) in text
        if "ITEM 1A. RISK FACTORS" in text:
            variants["upper"] += 1
        if ">ITEM 1A.</span></div><div><span" in text:
            variants["two_line"] += 1
        if re.search(r"Item 1A\.</span></td>", text):
            variants["table"] += 1
        if re.search(r"&#160;&#160;Ri</span><span[^>]*>sk Factors", text):
            variants["split"] += 1
        if "<b>Item 1A &#8212; Risk Factors</b>" in text:
            variants["dash"] += 1
    assert len(variants) == 5, variants
    quarterly = Counter(f.expected_status for f in normal if f.form == "10-Q")
    assert quarterly["no_material_changes"] >= 5 and quarterly["extracted"] >= 5 and quarterly["not_found"] >= 1
    for filing in (f for f in normal if f.form == "10-Q" and f.expected_status == "extracted"):
        text = (root / filing.archive_path).read_text(encoding="ascii")
        assert "PART II \u2014 OTHER INFORMATION".replace("\u2014", "&#8212;") in text
        assert len(filing.risk_factor_headings) >= 2


def test_defective_documents_are_flagged(corpus):
    root = corpus.root
    defects = {f.defect: f for f in corpus.filings if f.defect}
    assert set(defects) == {"empty", "truncated", "cp1252", "no_risk_factors", "incorporated_by_reference"}
    assert (root / defects["empty"].archive_path).read_bytes() == b""
    assert defects["empty"].expected_status == "error"
    truncated = (root / defects["truncated"].archive_path).read_bytes()
    assert b"</html>" not in truncated and b"Risk Factors" in truncated
    cp1252 = (root / defects["cp1252"].archive_path).read_bytes()
    with pytest.raises(UnicodeDecodeError):
        cp1252.decode("utf-8")
    assert b"\x93" in cp1252 and b"charset=windows-1252" in cp1252
    missing = (root / defects["no_risk_factors"].archive_path).read_text(encoding="ascii")
    assert not re.search(r"Item\s*1A|ITEM\s*1A|Risk Factors|RISK FACTORS", missing)
    assert defects["no_risk_factors"].expected_status == "not_found"
    amendment = next(f for f in corpus.filings if f.form == "10-K/A" and f.expected_status == "not_found")
    assert "Item 1A" not in (root / amendment.archive_path).read_text()
    assert corpus.by_accession()[amendment.amends].form == "10-K"


def test_amendments_restate_the_risk_factors_of_the_filing_they_amend(corpus):
    from governed_ft_dagster.edgar.extract import extract_risk_factors

    restating = [f for f in corpus.filings if f.form.endswith("/A") and f.expected_status == "extracted"]
    assert sorted(f.form for f in restating) == ["10-K/A", "10-Q/A"]
    for amendment in restating:
        original = corpus.by_accession()[amendment.amends]
        assert (original.cik, original.report_date, original.form) == (amendment.cik, amendment.report_date,
                                                                       amendment.form.removesuffix("/A"))
        assert original.filing_date < amendment.filing_date
        text = (corpus.root / amendment.archive_path).read_text(encoding="ascii")
        assert f"Amendment No. 1 on Form {amendment.form}" in text and "in its entirety" in text
        found = extract_risk_factors((corpus.root / amendment.archive_path).read_bytes(), amendment.form)
        assert found.status.value == "extracted"
        # one risk factor added, one revised: the amended section is not the original's
        before = extract_risk_factors((corpus.root / original.archive_path).read_bytes(), original.form).text
        assert "We have revised this risk factor" in found.text and "We have revised" not in before
        assert len(amendment.risk_factor_headings) > len(original.risk_factor_headings) or \
            original.expected_status == "no_material_changes"


def test_small_corpus_still_places_defects_on_distinct_filings(tmp_path):
    manifest = build_sample_corpus(tmp_path / "small", companies=2, fiscal_years=(2024,), seed=3)
    keyed = [(f.cik, f.form, f.fiscal_year, f.fiscal_period) for f in manifest.filings if f.defect]
    assert len(keyed) == len(set(keyed)) >= 3
    assert {f.fiscal_year for f in manifest.in_period()} == {2024}


def test_extractor_agrees_with_the_manifest(corpus):
    extract = pytest.importorskip("governed_ft_dagster.edgar.extract")
    mismatches = []
    for filing in corpus.filings:
        result = extract.extract_risk_factors((corpus.root / filing.archive_path).read_bytes(), filing.form)
        status = getattr(result.status, "value", result.status)
        if status != filing.expected_status:
            mismatches.append((filing.accession_number, filing.form, filing.defect, filing.expected_status, status,
                               result.reason))
            continue
        if status == "extracted":
            text = _norm(result.text)
            for heading in filing.risk_factor_headings:
                assert _norm(heading) in text, (filing.accession_number, heading)
            assert "unresolved staff comments" not in text and "unregistered sales of equity" not in text
            assert "table of contents" not in text
    assert not mismatches, mismatches


@needs_samples
def test_mirror_of_shared_samples(tmp_path):
    root = tmp_path / "mirror"
    manifest = mirror_shared_samples(SAMPLES, root)
    assert len(manifest.filings) == 9
    source = LocalEdgarSource(root)
    listed = {}
    for cik in {f.cik for f in manifest.filings}:
        for ref in source.filings(cik, fiscal_years=None):
            listed[ref.accession_number] = ref
    assert set(listed) == {f.accession_number for f in manifest.filings}
    aapl_10k = listed["0000320193-24-000123"]
    assert (aapl_10k.form_type, aapl_10k.fiscal_year, aapl_10k.fiscal_period) == ("10-K", 2024, "FY")
    aapl_10q = listed["0000320193-23-000077"]
    assert (aapl_10q.fiscal_year, aapl_10q.fiscal_period, aapl_10q.primary_document) == (2023, "Q3", "aapl-20230701.htm")
    assert aapl_10q.filing_date == "2023-08-04"
    synthetic = {f.ticker: f for f in manifest.filings if f.synthetic_accession}
    assert set(synthetic) == {"ORCL", "WFC"}
    for filing in synthetic.values():
        assert filing.accession_number.startswith("0009999999-") and "synthetic accession" in filing.note
    again = mirror_shared_samples(SAMPLES, tmp_path / "again")
    assert [f.accession_number for f in again.filings] == [f.accession_number for f in manifest.filings]
    for filing in manifest.filings:
        ref = listed[filing.accession_number]
        doc = source.download(ref)
        assert doc.read_bytes() == Path(filing.source).read_bytes()
        body = doc.read_text(encoding="utf-8", errors="replace")
        # The DEI facts inside each real document are the independent truth for the fiscal-period rule.
        fy = re.search(r'name="dei:DocumentFiscalYearFocus"[^>]*>(\d{4})<', body)[1]
        fp = re.search(r'name="dei:DocumentFiscalPeriodFocus"[^>]*>(\w+)<', body)[1]
        assert (ref.fiscal_year, ref.fiscal_period) == (int(fy), fp), filing.source
    assert {f.ticker for f in manifest.filings} == {"AAPL", "GE", "JNJ", "NVDA", "ORCL", "V", "WFC"}
    assert len(list((root / "submissions").glob("CIK*.json"))) >= 8


def test_corpus_served_over_http_reads_like_the_local_source(corpus, tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from governed_ft_dagster.edgar.client import EdgarClient

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(corpus.root)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        client = EdgarClient("Governed FT Tests tests@example.com", base_url=base, data_url=base,
                             cache_dir=tmp_path / "cache", max_rps=1000.0)
        local = LocalEdgarSource(corpus.root, archive_base=base)
        cik = client.resolve([corpus.tickers[1]])[corpus.tickers[1]][0]
        remote_refs = client.filings(cik)
        assert remote_refs == local.filings(cik)
        for ref in remote_refs:
            assert client.download(ref).read_bytes() == local.download(ref).read_bytes()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_generated_corpus_follows_the_configured_fiscal_years(tmp_path):
    from governed_ft_dagster.defs.resources.edgar import EdgarResource

    def filings_by_year(years: list[int]) -> dict[int, int]:
        edgar = EdgarResource(source="sample", cache_dir=str(tmp_path / "cache"), local_root=str(tmp_path / "sample"),
                              sample_fiscal_years=years)
        source = edgar.filing_source()
        counts: dict[int, int] = {}
        for cik in source.ticker_to_cik().values():
            for ref in source.filings(cik, forms=("10-K", "10-Q"), fiscal_years=(2023, 2024, 2025)):
                counts[ref.fiscal_year] = counts.get(ref.fiscal_year, 0) + 1
        return counts

    only_2025 = filings_by_year([2025])  # the year before the period is generated too, to exercise period filtering
    assert only_2025.get(2025, 0) >= 24 and 2023 not in only_2025
    default = filings_by_year([2023, 2024])
    assert default.get(2023, 0) >= 24 and default.get(2024, 0) >= 24 and 2025 not in default
