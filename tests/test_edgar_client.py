"""EdgarClient against a loopback server that serves the real SEC API samples."""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections import deque
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from governed_ft_dagster.edgar.client import (
    EdgarClient,
    EdgarConfigError,
    EdgarHTTPError,
    EdgarNotFoundError,
    FilingRef,
    FilingSource,
    LocalEdgarSource,
    earliest_filing_date,
    filing_refs,
    fiscal_period,
    parse_fiscal_year_end,
)
from governed_ft_dagster.edgar.universe import load_universe, sp500_tickers

SAMPLES = Path(
    os.environ.get("GOVERNED_FT_SEC_SAMPLES") or Path(__file__).resolve().parents[1].parent / "shared" / "sec_samples"
)
API = SAMPLES / "api"
UA = "Governed FT Tests tests@example.com"
APPLE_OLD_PAGE = "/submissions/CIK0000320193-submissions-001.json"
APPLE_10Q_PATH = "/Archives/edgar/data/320193/000032019323000077/aapl-20230701.htm"

pytestmark = pytest.mark.skipif(not API.is_dir(), reason=f"SEC samples not found at {SAMPLES}")


class _State:
    """Routes, recorded requests and injected failures of the fake EDGAR server."""

    def __init__(self) -> None:
        self.routes: dict[str, Path] = {
            "/files/company_tickers.json": API / "company_tickers.json",
            "/submissions/CIK0000320193.json": API / "CIK0000320193.submissions.json",
            APPLE_OLD_PAGE: API / "CIK0000320193-submissions-001.json",
            "/submissions/CIK0001318605.json": API / "CIK0001318605.submissions.json",
            APPLE_10Q_PATH: SAMPLES / "filings" / "AAPL_10-Q_2023-07-01_0000320193-23-000077.html",
        }
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str], float]] = []
        self.failures: dict[str, deque[tuple[int, dict[str, str]]]] = {}

    def fail(self, path: str, status: int, times: int, headers: dict[str, str] | None = None) -> None:
        self.failures.setdefault(path, deque()).extend([(status, headers or {})] * times)

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _, _ in self.requests]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        state: _State = self.server.state  # type: ignore[attr-defined]
        with state.lock:
            state.requests.append((self.path, dict(self.headers), time.monotonic()))
            queue = state.failures.get(self.path)
            failure = queue.popleft() if queue else None
        if failure:
            self._send(failure[0], b"injected failure", failure[1])
        elif self.path.startswith("/ping/"):
            self._send(200, b"pong")
        elif self.path in state.routes:
            body = state.routes[self.path].read_bytes()
            headers = {}
            if "gzip" in self.headers.get("Accept-Encoding", "") and self.path.endswith(".json"):
                body, headers = gzip.compress(body, mtime=0), {"Content-Encoding": "gzip"}
            self._send(200, body, headers)
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = _State()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, httpd.state  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def _client(base: str, tmp_path: Path, **kwargs) -> EdgarClient:
    options = {"max_rps": 1000.0, "backoff_base": 0.01, "max_retries": 3, "timeout": 5}
    options.update(kwargs)
    return EdgarClient(UA, base_url=base, data_url=base, cache_dir=tmp_path / "cache", **options)


# --- configuration ---------------------------------------------------------------------------------------------


def test_refuses_user_agent_without_contact_address(tmp_path, monkeypatch):
    monkeypatch.delenv("GOVERNED_FT_EDGAR_USER_AGENT", raising=False)
    for bad in ("Acme Research", "", None, "python-requests/2.32"):
        with pytest.raises(EdgarConfigError, match="GOVERNED_FT_EDGAR_USER_AGENT") as info:
            EdgarClient(bad, cache_dir=tmp_path)
        assert "contact address" in str(info.value)
    monkeypatch.setenv("GOVERNED_FT_EDGAR_USER_AGENT", "Acme Research ops@acme.com")
    assert EdgarClient(cache_dir=tmp_path).user_agent == "Acme Research ops@acme.com"


def test_both_sources_satisfy_the_protocol(tmp_path):
    assert isinstance(EdgarClient(UA, cache_dir=tmp_path), FilingSource)
    assert isinstance(LocalEdgarSource(tmp_path), FilingSource)


# --- company lookup --------------------------------------------------------------------------------------------


def test_ticker_to_cik_and_resolve(server, tmp_path):
    base, state = server
    client = _client(base, tmp_path)
    mapping = client.ticker_to_cik()
    assert mapping["AAPL"] == "0000320193"
    assert mapping["TSLA"] == "0001318605"
    resolved = client.resolve(["aapl", "TSLA", "BRK.B", "NOSUCH1", "AAPL", "ZZZZQ"])
    assert resolved["AAPL"] == ("0000320193", "Apple Inc.")
    assert resolved["TSLA"][0] == "0001318605"
    assert "BRK-B" in resolved
    assert resolved.unknown == ["NOSUCH1", "ZZZZQ"]
    assert "NOSUCH1" in resolved.error_message() and "ZZZZQ" in resolved.error_message()
    with pytest.raises(Exception, match="NOSUCH1"):
        resolved.raise_for_unknown()
    # The JSON came gzip-encoded and was fetched once, however often it is used.
    assert state.paths().count("/files/company_tickers.json") == 1


# --- submissions, pagination and filtering ---------------------------------------------------------------------


def test_recent_page_covers_2023_2024_so_the_older_page_is_not_fetched(server, tmp_path):
    base, state = server
    refs = _client(base, tmp_path).filings("320193", fiscal_years=range(2023, 2025))
    assert APPLE_OLD_PAGE not in state.paths()
    by_acc = {r.accession_number: r for r in refs}
    # The snapshot ends in August 2023: only FY2023's three 10-Qs are in it.
    assert set(by_acc) == {"0000320193-23-000006", "0000320193-23-000064", "0000320193-23-000077"}
    q3 = by_acc["0000320193-23-000077"]
    assert (q3.form_type, q3.fiscal_year, q3.fiscal_period, q3.quarter) == ("10-Q", 2023, "Q3", 3)
    assert (q3.report_date, q3.filing_date) == ("2023-07-01", "2023-08-04")
    assert [by_acc[a].fiscal_period for a in ("0000320193-23-000006", "0000320193-23-000064")] == ["Q1", "Q2"]
    assert q3.url == f"{base}{APPLE_10Q_PATH}"
    assert q3.primary_document == "aapl-20230701.htm"
    assert (q3.cik, q3.ticker, q3.entity_name) == ("0000320193", "AAPL", "Apple Inc.")


def test_older_page_is_fetched_and_merged_when_the_period_needs_it(server, tmp_path):
    base, state = server
    client = _client(base, tmp_path)
    refs = client.filings(320193, fiscal_years=[2013])
    assert state.paths().count(APPLE_OLD_PAGE) == 1
    by_acc = {r.accession_number: r for r in refs}
    # FY2013 Q1 was filed 2013-01-24 (older page), Q2 on 2013-04-24 (recent page).
    assert by_acc["0001193125-13-022339"].fiscal_period == "Q1"
    assert by_acc["0001193125-13-022339"].report_date == "2012-12-29"
    assert by_acc["0001193125-13-168288"].fiscal_period == "Q2"
    assert {r.fiscal_year for r in refs} == {2013}
    merged = client.submissions(320193)
    assert len(merged["filings"]["recent"]["accessionNumber"]) == 1000 + 988
    assert len(merged["filings"]["recent"]["form"]) == 1000 + 988
    old = client.filings(320193, fiscal_years=[2011, 2012], forms=("10-K",))
    assert [(r.accession_number, r.fiscal_year) for r in old] == [
        ("0001193125-11-282113", 2011),
        ("0001193125-12-444068", 2012),
    ]


def test_form_and_amendment_filtering(server, tmp_path):
    base, _ = server
    client = _client(base, tmp_path)
    refs = client.filings("0001318605", fiscal_years=[2021, 2022])
    assert {r.form_type for r in refs} == {"10-K", "10-Q"}
    amendments = [r for r in refs if r.is_amendment]
    assert [(r.accession_number, r.original_form, r.form_type, r.fiscal_year) for r in amendments] == [
        ("0001564590-22-016871", "10-K/A", "10-K", 2021)
    ]
    assert all(r.original_form == r.form_type for r in refs if not r.is_amendment)
    assert {(r.fiscal_year, r.fiscal_period) for r in refs if r.fiscal_year == 2022} == {
        (2022, "Q1"), (2022, "Q2"), (2022, "Q3")
    }
    without = client.filings("0001318605", fiscal_years=[2021, 2022], include_amendments=False)
    assert len(without) == len(refs) - 1 and not any(r.is_amendment for r in without)
    quarterly = client.filings("0001318605", forms=("10-Q",), fiscal_years=[2021, 2022])
    assert quarterly and {r.form_type for r in quarterly} == {"10-Q"}
    everything = client.filings("0001318605", forms=("10-K", "10-Q", "8-K"), fiscal_years=[2022])
    assert "8-K" in {r.form_type for r in everything}


def test_a_filing_listed_without_a_primary_document_is_kept_and_its_download_fails_without_a_request(
        server, tmp_path):
    base, state = server
    submissions = {"cik": "9990001", "name": "No Document Inc", "tickers": ["NODOC"], "fiscalYearEnd": "1231",
                   "filings": {"recent": {"accessionNumber": ["0009990001-25-000001"], "form": ["10-K"],
                                          "reportDate": ["2024-12-31"], "filingDate": ["2025-02-20"],
                                          "primaryDocument": [""]}}}
    (ref,) = filing_refs(submissions, archive_base=base, fiscal_years=[2024])
    assert (ref.accession_number, ref.fiscal_year, ref.primary_document) == ("0009990001-25-000001", 2024, "")
    client = _client(base, tmp_path)
    client.prefetch([ref])  # in a background thread: its failure is handed to download
    with pytest.raises(EdgarNotFoundError, match="no primary document"):
        client.download(ref)
    with pytest.raises(EdgarNotFoundError, match="no primary document"):
        LocalEdgarSource(tmp_path / "edgar").download(ref)
    assert state.paths() == []


def test_default_archive_url_is_the_sec_site():
    ref = FilingRef("0000320193", "AAPL", "Apple Inc.", "10-K", False, "10-K", "0000320193-24-000123",
                    "2024-11-01", "2024-09-28", 2024, "FY", None, "aapl-20240928.htm", "")
    assert ref.archive_path == "Archives/edgar/data/320193/000032019324000123/aapl-20240928.htm"
    assert FilingRef.from_dict(ref.to_dict()) == ref


@pytest.mark.parametrize(
    ("report", "fye", "form", "expected"),
    [
        ("2024-09-28", "0930", "10-K", (2024, "FY", None)),  # AAPL 0000320193-24-000123, 52/53-week year
        ("2024-09-28", "0928", "10-K", (2024, "FY", None)),
        ("2022-09-24", "0930", "10-K", (2022, "FY", None)),
        ("2023-07-01", "0930", "10-Q", (2023, "Q3", 3)),  # AAPL 0000320193-23-000077
        ("2022-12-31", "0930", "10-Q", (2023, "Q1", 1)),
        ("2024-01-28", "0128", "10-K", (2024, "FY", None)),  # NVDA
        ("2023-07-30", "0128", "10-Q", (2024, "Q2", 2)),  # NVDA
        ("2024-08-31", "0531", "10-Q", (2025, "Q1", 1)),  # ORCL
        ("2023-07-02", "1231", "10-Q", (2023, "Q2", 2)),  # JNJ
        ("2024-01-01", "1231", "10-K", (2023, "FY", None)),  # year ending on the Sunday nearest Dec 31
        ("2021-12-31", "1231", "10-K/A", (2021, "FY", None)),
        ("2024-06-30", None, "10-Q", (2024, "Q2", 2)),
    ],
)
def test_fiscal_period(report, fye, form, expected):
    assert fiscal_period(report, fye, form) == expected


def test_parse_fiscal_year_end_formats():
    for value, mmdd in [("0930", "0930"), ("--09-28", "0928"), ("September\u00a028", "0928"), ("12/31", "1231"),
                        ("1/28", "0128"), ("December 31", "1231"), ("12-31", "1231")]:
        assert parse_fiscal_year_end(value) == mmdd
    assert parse_fiscal_year_end("soon") is None
    assert str(earliest_filing_date([2024, 2023], "0930")) == "2022-09-20"


# --- HTTP behaviour --------------------------------------------------------------------------------------------


def test_every_request_sends_user_agent_and_accept_encoding(server, tmp_path):
    base, state = server
    client = _client(base, tmp_path)
    client.filings("320193", fiscal_years=[2013])
    client.ticker_to_cik()
    assert len(state.requests) == 3
    for _, headers, _ in state.requests:
        assert headers["User-Agent"] == UA
        assert "gzip" in headers["Accept-Encoding"] and "deflate" in headers["Accept-Encoding"]


def test_retry_on_429_honours_retry_after(server, tmp_path):
    base, state = server
    state.fail("/files/company_tickers.json", 429, 1, {"Retry-After": "1"})
    assert _client(base, tmp_path).ticker_to_cik()["AAPL"] == "0000320193"
    times = [t for p, _, t in state.requests if p == "/files/company_tickers.json"]
    assert len(times) == 2
    assert times[1] - times[0] >= 0.95


def test_retry_on_503_then_success(server, tmp_path):
    base, state = server
    state.fail("/submissions/CIK0001318605.json", 503, 2)
    data = _client(base, tmp_path).submissions("1318605", since=date(2020, 1, 1))
    assert data["name"] == "Tesla, Inc."
    assert state.paths().count("/submissions/CIK0001318605.json") == 3


def test_final_failure_names_url_and_status(server, tmp_path):
    base, state = server
    state.fail("/submissions/CIK0001318605.json", 503, 10)
    with pytest.raises(EdgarHTTPError) as info:
        _client(base, tmp_path, max_retries=2).submissions("1318605")
    assert info.value.status == 503
    assert "/submissions/CIK0001318605.json" in str(info.value) and "503" in str(info.value)
    assert state.paths().count("/submissions/CIK0001318605.json") == 3


def test_404_is_not_retried(server, tmp_path):
    base, state = server
    with pytest.raises(EdgarNotFoundError) as info:
        _client(base, tmp_path).submissions("0000000001")
    assert info.value.status == 404
    assert state.paths() == ["/submissions/CIK0000000001.json"]


def test_connection_errors_are_retried_then_reported(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}", tmp_path, max_retries=1, timeout=1)
    with pytest.raises(EdgarHTTPError, match="no response") as info:
        client.ticker_to_cik()
    assert info.value.status is None and str(port) in str(info.value)


def test_rate_limit_is_process_wide(server, tmp_path):
    base, state = server
    clients = [_client(base, tmp_path, max_rps=10.0) for _ in range(3)]
    counts = (9, 8, 8)

    def fire(client: EdgarClient, n: int, k: int) -> None:
        for i in range(n):
            client.get(f"{base}/ping/{k}-{i}")

    threads = [threading.Thread(target=fire, args=(c, n, k)) for k, (c, n) in enumerate(zip(clients, counts))]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    times = sorted(t for p, _, t in state.requests if p.startswith("/ping/"))
    assert len(times) == 25
    window_max = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    print(f"rate limit: 25 requests in {elapsed:.3f}s, max {window_max} in any 1 s window")
    assert elapsed >= 2.4
    assert elapsed < 6.0
    assert window_max <= 10


def test_download_is_cached(server, tmp_path):
    base, state = server
    client = _client(base, tmp_path)
    ref = next(r for r in client.filings("320193") if r.accession_number == "0000320193-23-000077")
    path = client.download(ref)
    assert path == tmp_path / "cache" / "Archives/edgar/data/320193/000032019323000077/aapl-20230701.htm"
    assert path.read_bytes() == (SAMPLES / "filings" / "AAPL_10-Q_2023-07-01_0000320193-23-000077.html").read_bytes()
    before = len(state.requests)
    again = _client(base, tmp_path)  # a new client (a re-run) reuses the cache on disk
    assert again.download(ref) == path
    assert len(state.requests) == before
    assert [p.name for p in path.parent.iterdir()] == ["aapl-20230701.htm"]


def test_local_source_reads_the_same_layout(tmp_path):
    root = tmp_path / "edgar"
    (root / "files").mkdir(parents=True)
    (root / "submissions").mkdir()
    (root / "files" / "company_tickers.json").write_bytes((API / "company_tickers.json").read_bytes())
    (root / "submissions" / "CIK0000320193.json").write_bytes((API / "CIK0000320193.submissions.json").read_bytes())
    (root / "submissions" / "CIK0000320193-submissions-001.json").write_bytes(
        (API / "CIK0000320193-submissions-001.json").read_bytes()
    )
    doc = root / APPLE_10Q_PATH.lstrip("/")
    doc.parent.mkdir(parents=True)
    doc.write_bytes(b"<html>q3</html>")
    source = LocalEdgarSource(root, archive_base="https://www.sec.gov")
    assert source.resolve(["AAPL"])["AAPL"][0] == "0000320193"
    refs = source.filings("320193", fiscal_years=range(2023, 2025))
    assert [r.accession_number for r in refs] == ["0000320193-23-000077"]  # only what the folder holds
    assert refs[0].url == "https://www.sec.gov" + APPLE_10Q_PATH
    assert source.download(refs[0]) == doc
    listed = LocalEdgarSource(root, only_available=False).filings("320193", fiscal_years=[2013])
    assert len(listed) == 4
    with pytest.raises(EdgarNotFoundError):
        LocalEdgarSource(root).download(listed[0])


# --- universe --------------------------------------------------------------------------------------------------


def test_universe_specs(tmp_path):
    sp = sp500_tickers()
    assert 495 <= len(sp) <= 510 and len(set(sp)) == len(sp)
    assert load_universe(None) == sp == load_universe("sp500") == load_universe("SP500")
    assert "BRK-B" in sp and "BF-B" in sp and "BRK.B" not in sp
    assert load_universe("aapl, msft,BRK.B,AAPL") == ["AAPL", "MSFT", "BRK-B"]
    assert load_universe(["nvda", "brk-b", "NVDA"]) == ["NVDA", "BRK-B"]
    assert load_universe("TSLA") == ["TSLA"]
    listing = tmp_path / "tickers.txt"
    listing.write_text("# my universe\nAAPL\n\nbrk.b  # Berkshire\nMSFT\naapl\n", encoding="utf-8")
    assert load_universe(str(listing)) == load_universe(listing) == ["AAPL", "BRK-B", "MSFT"]
    with pytest.raises(FileNotFoundError):
        load_universe(str(tmp_path / "missing.txt"))


def test_packaged_sp500_resolves_against_edgar(tmp_path):
    root = tmp_path / "edgar"
    (root / "files").mkdir(parents=True)
    (root / "files" / "company_tickers.json").write_bytes((API / "company_tickers.json").read_bytes())
    resolved = LocalEdgarSource(root).resolve(load_universe("sp500"))
    assert resolved.unknown == []
    assert len({cik for cik, _ in resolved.values()}) >= 495
