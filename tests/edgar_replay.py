"""A local EDGAR replay server: SEC's paths and response shapes over a universe built from the shared real filings.

What it serves (www.sec.gov and data.sec.gov paths on one loopback port):
  /files/company_tickers.json                         {"0": {"cik_str", "ticker", "title"}, ...}
  /submissions/CIK##########.json                     the company's submissions, `filings.recent` and `files`
  /submissions/CIK##########-submissions-NNN.json     an older page (columns only), as listed in `files`
  /Archives/edgar/data/<cik>/<accession>/<document>   a primary document
The universe has N companies (S&P 500 tickers under new CIKs from 0009700001), each with its 10-Ks and 10-Qs for
the fiscal years asked, its other filings (8-K, DEF 14A, Form 4; one company in ten files 424B2s daily, so its
`recent` block ends within the period and the rest sits on an older page, as EDGAR pages long histories). Each
10-K and 10-Q is one of the real primary documents in `../shared/sec_samples/{filings,more}` in which, within each
run of text, every other pair of successive lower-case content words is swapped, seeded by the accession number:
two copies share about a tenth of their 5-word shingles, as risk factors of different companies do, so the curated
job's exact and near de-duplication keep every copy, while the words that decide an extraction's status (Item,
Risk Factors, "no material changes", "incorporated by reference", ...) stay in place.

How it refuses, from SEC's fair-access rules (sec.gov, "Accessing EDGAR Data" and the developer resources):
- "Current max request rate: 10 requests/second", per user "regardless of the number of machines used": every
  request from every client is counted in one sliding one-second window; a request that makes it hold more than
  10 is refused, and so is every request for `lockout_s` after it (SEC: "Request Rate Threshold Exceeded", access
  limited for 10 minutes, longer if the rate stays exceeded: a request above the rate during the lockout extends it).
- Automated tools must declare their traffic with a User-Agent naming the company or person and a contact address
  ("Sample Company Name AdminContact@<sample company domain>.com"); an undeclared one gets 403 ("Your Request
  Originates from an Undeclared Automated Tool").
Both refusals are 403, SEC's answer (`throttle_status=429` serves the other throttling status); a throttled one
carries `Retry-After` with the lockout's remaining seconds. Every request is recorded with its arrival time and
status; `/__replay__/stats` and `/__replay__/records` report them without being counted.

    python tests/edgar_replay.py --companies 500 [--port 0] [--lockout-s 600]   # prints its URL, serves until killed
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import collections
import datetime as dt
import functools
import gzip
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLES = Path(os.environ.get("GOVERNED_FT_SEC_SAMPLES", REPO.parent / "shared" / "sec_samples"))
FIRST_CIK = 9700001
SNAPSHOT = dt.date(2025, 3, 31)
HISTORY_FROM = dt.date(2021, 1, 1)
RECENT_MIN_ROWS = 1000
SWAP_SHARE = 0.5
SEC_MAX_RPS = 10
SEC_LOCKOUT_S = 600.0
CONTROL = "/__replay__/"

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_SAMPLE_FORM = re.compile(r"10-([kq])", re.I)
_TEXT = re.compile(rb">([^<]+)<")
_WORD = re.compile(rb"(?<![&#\w-])[a-z]{2,}(?![\w;-])")
# Words an extractor reads to decide a section's status or boundaries: they never move.
_KEEP = frozenset(word.encode() for word in """
a an and any appear appears as back be been below by can change changed changes company consider contained contents
continued corporation described developments disclosed discussed document except exhibit factor factors following
follows for form forth found has have herein holders in included incorporated index is its item material materially
modifications no none not of omitted on or other our page pages part presented provide proxy quarterly reference
refer reported reporting report required reserved return risk risks see set share shareholders smaller statement stock
stockholders supplement table than that the this to top under update updated updates annual applicable
""".split())


def declared(user_agent: str | None) -> bool:
    """SEC's rule for automated tools: the User-Agent names a company or person and gives a contact address."""
    words = (user_agent or "").split()
    emails = [w for w in words if _EMAIL.fullmatch(w.strip("<>()[],;"))]
    names = [w for w in words if w not in emails and re.search(r"[A-Za-z]{2,}", w) and "/" not in w]
    return bool(emails) and bool(names)


class Template:
    """A real document with its swappable word pairs, rendered as a distinct copy per seed."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        body = re.search(rb"<body", data, re.I)
        spans = []
        for segment in _TEXT.finditer(data, body.start() if body else 0):
            base = segment.start(1)
            words = [w.span() for w in _WORD.finditer(segment.group(1)) if w.group() not in _KEEP]
            for (a0, a1), (b0, b1) in zip(words[0::2], words[1::2]):
                spans.append((base + a0, base + a1, base + b0, base + b1))
        self.spans = np.array(spans, dtype=np.int64).reshape(-1, 4)

    def render(self, seed: int) -> bytes:
        """The document with a seeded half of its swappable pairs swapped."""
        chosen = self.spans[np.random.default_rng(seed).random(len(self.spans)) < SWAP_SHARE]
        view, pieces, position = memoryview(self.data), [], 0
        for a0, a1, b0, b1 in chosen.tolist():
            pieces += (view[position:a0], view[b0:b1], view[a1:b0], view[a0:a1])
            position = b1
        pieces.append(view[position:])
        return b"".join(pieces)


@dataclass(frozen=True)
class SourceDocument:
    """One real primary document the universe's 10-Ks or 10-Qs are copied from."""

    path: Path
    form: str


def source_documents(samples: Path = SHARED_SAMPLES) -> list[SourceDocument]:
    """The shared real 10-K and 10-Q primary documents, each once (the same bytes under two names count once)."""
    seen: set[str] = set()
    out = []
    for path in sorted([*(samples / "filings").glob("*.htm*"), *(samples / "more").glob("*.htm*")]):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        form = _SAMPLE_FORM.search(path.name)
        if form and digest not in seen:
            seen.add(digest)
            out.append(SourceDocument(path, f"10-{form[1].upper()}"))
    return out


@dataclass(frozen=True)
class Filing:
    """One row of a company's submissions."""

    accession: str
    filing_date: dt.date
    report_date: dt.date | None
    form: str
    document: str
    size: int
    source: int | None = None  # index of the source document of a 10-K or 10-Q


@dataclass
class Company:
    """A registrant of the universe."""

    cik: int
    ticker: str
    name: str
    fiscal_year_end: str
    filings: list[Filing] = field(default_factory=list)

    @property
    def cik10(self) -> str:
        return f"{self.cik:010d}"


def _other_filings(bank: bool) -> list[tuple[dt.date, str, str]]:
    """(date, form, document pattern) of the filings other than 10-K and 10-Q, from HISTORY_FROM to SNAPSHOT."""
    rows = []
    for ordinal in range(HISTORY_FROM.toordinal(), SNAPSHOT.toordinal() + 1):
        day = dt.date.fromordinal(ordinal)
        if bank:
            if day.weekday() < 5:  # a bank's structured notes: several 424B2s a business day
                rows += [(day, "424B2", f"{{stem}}-424b2_{day:%Y%m%d}{n}.htm") for n in range(4)]
        elif day.day == 15 and day.month % 3 == 2:
            rows.append((day, "8-K", f"{{stem}}-{day:%Y%m%d}x8k.htm"))
        elif day.month == 4 and day.day == 20:
            rows.append((day, "DEF 14A", f"{{stem}}-def14a{day:%Y}.htm"))
        elif day.day in (3, 17):
            rows.append((day, "4", f"xslF345X05/wk-form4_{day:%Y%m%d}.xml"))
    return rows


def _year_end(year: int, mmdd: str) -> dt.date:
    month = int(mmdd[:2])
    return dt.date(year, month, min(int(mmdd[2:]), calendar.monthrange(year, month)[1]))


def _months_after(day: dt.date, months: int) -> dt.date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def _tickers(count: int) -> list[str]:
    from governed_ft_dagster.edgar.universe import sp500_tickers

    tickers = sp500_tickers()[:count]
    return tickers + [f"RPL{i:04d}" for i in range(count - len(tickers))]


_OTHER_FILINGS = _other_filings(bank=False)
_BANK_FILINGS = _other_filings(bank=True)


class Universe:
    """N companies with their filings for the fiscal years asked (and one year either side), as of SNAPSHOT."""

    FISCAL_YEAR_ENDS = ("1231", "1231", "0930", "0630", "0331", "1231", "0131", "1231")

    def __init__(self, companies: int = 500, fiscal_years: tuple[int, ...] = (2023, 2024),
                 samples: Path = SHARED_SAMPLES) -> None:
        self.fiscal_years = tuple(sorted(fiscal_years))
        self.documents = source_documents(samples)
        self._templates: dict[int, Template] = {}
        self._template_lock = threading.Lock()
        pools = {form: [i for i, d in enumerate(self.documents) if d.form == form] for form in ("10-K", "10-Q")}
        if not pools["10-K"] or not pools["10-Q"]:
            raise FileNotFoundError(f"no 10-K and 10-Q primary documents under {samples}/filings and /more")
        titles = _titles(samples)
        self._sizes = [d.path.stat().st_size for d in self.documents]
        self.companies: list[Company] = []
        for index, ticker in enumerate(_tickers(companies)):
            company = Company(FIRST_CIK + index, ticker, titles.get(ticker, f"{ticker} Replay Holdings Inc."),
                              self.FISCAL_YEAR_ENDS[index % len(self.FISCAL_YEAR_ENDS)])
            company.filings = self._filings(company, index, pools)
            self.companies.append(company)
        self.by_cik = {c.cik: c for c in self.companies}
        self._archive = {(c.cik, f.accession.replace("-", ""), f.document): f
                         for c in self.companies for f in c.filings}

    def _filings(self, company: Company, index: int, pools: dict[str, list[int]]) -> list[Filing]:
        rows: list[tuple[dt.date, dt.date | None, str, str, int | None]] = []
        stem = company.ticker.lower().replace("-", "")
        for year in range(self.fiscal_years[0] - 1, self.fiscal_years[-1] + 2):
            end = _year_end(year, company.fiscal_year_end)
            previous = _year_end(year - 1, company.fiscal_year_end)
            pool = pools["10-K"]
            rows.append((end + dt.timedelta(days=55), end, "10-K", f"{stem}-{end:%Y%m%d}.htm",
                         pool[(index + year) % len(pool)]))
            for quarter in (1, 2, 3):
                report = _months_after(previous, 3 * quarter)
                pool = pools["10-Q"]
                rows.append((report + dt.timedelta(days=38), report, "10-Q", f"{stem}-{report:%Y%m%d}.htm",
                             pool[(3 * index + 5 * year + quarter) % len(pool)]))
        for day, form, document in _OTHER_FILINGS if index % 10 else _OTHER_FILINGS + _BANK_FILINGS:
            rows.append((day, day if form == "4" else None, form, document.format(stem=stem), None))
        rows = sorted((r for r in rows if r[0] <= SNAPSHOT), key=lambda r: (r[0], r[2], r[3]))
        filings, sequence = [], collections.Counter()
        sizes = self._sizes
        for filed, report, form, document, source in rows:
            sequence[filed.year] += 1
            accession = f"{company.cik:010d}-{filed.year % 100:02d}-{sequence[filed.year]:06d}"
            size = sizes[source] if source is not None else 4000 + len(document) * 97
            filings.append(Filing(accession, filed, report, form, document, size, source))
        return filings

    def in_period(self, form: str | None = None, fiscal_year: int | None = None) -> list[tuple[Company, Filing]]:
        """The 10-K and 10-Q filings the fiscal years cover, by the fiscal-year rule of the project's partitions."""
        out = []
        for company in self.companies:
            for filing in company.filings:
                if filing.source is None or (form and filing.form != form):
                    continue
                year = _fiscal_year(filing, company.fiscal_year_end)
                if year in self.fiscal_years and (fiscal_year is None or year == fiscal_year):
                    out.append((company, filing))
        return out

    def company_tickers(self) -> dict[str, dict]:
        return {str(i): {"cik_str": c.cik, "ticker": c.ticker, "title": c.name} for i, c in enumerate(self.companies)}

    @functools.lru_cache(maxsize=1024)
    def submissions(self, cik: int) -> tuple[dict, dict[str, dict]]:
        """The main submissions document and its older pages by name."""
        company = self.by_cik[cik]
        rows = sorted(company.filings, key=lambda f: (f.filing_date, f.accession), reverse=True)
        last_year = sum(1 for f in rows if f.filing_date > SNAPSHOT - dt.timedelta(days=365))
        recent, older = rows[:max(RECENT_MIN_ROWS, last_year)], rows[max(RECENT_MIN_ROWS, last_year):]
        pages, files = {}, []
        if older:
            name = f"CIK{company.cik10}-submissions-001.json"
            pages[name] = _columns(older)
            files.append({"name": name, "filingCount": len(older), "filingFrom": older[-1].filing_date.isoformat(),
                          "filingTo": older[0].filing_date.isoformat()})
        address = {"street1": "1 REPLAY PLAZA", "street2": None, "city": "WILMINGTON", "stateOrCountry": "DE",
                   "zipCode": "19801", "stateOrCountryDescription": "DE"}
        head = {
            "cik": str(company.cik), "entityType": "operating", "sic": "7372",
            "sicDescription": "Services-Prepackaged Software", "insiderTransactionForOwnerExists": 0,
            "insiderTransactionForIssuerExists": 1, "name": company.name, "tickers": [company.ticker],
            "exchanges": ["NYSE"], "ein": f"{company.cik % 10**9:09d}", "description": "", "website": "",
            "investorWebsite": "", "category": "Large accelerated filer", "fiscalYearEnd": company.fiscal_year_end,
            "stateOfIncorporation": "DE", "stateOfIncorporationDescription": "DE",
            "addresses": {"mailing": address, "business": address}, "phone": "302-555-0100", "flags": "",
            "formerNames": [], "filings": {"recent": _columns(recent), "files": files},
        }
        return head, pages

    def archive(self, cik: int, accession_nodash: str, document: str) -> tuple[int, Callable[[], bytes]] | None:
        """A filing's primary document as its length and how to render its bytes: a 10-K or 10-Q is its source
        document's copy for this accession, which swaps words and so keeps the source's length."""
        filing = self._archive.get((cik, accession_nodash, document))
        if filing is None:
            return None
        if filing.source is None:
            stub = f"<html><body><p>{filing.form} {filing.accession}</p></body></html>".encode()
            return len(stub), lambda: stub
        template = self.template(filing.source)
        return len(template.data), lambda: template.render(int(accession_nodash))

    def template(self, source: int) -> Template:
        with self._template_lock:
            if source not in self._templates:
                self._templates[source] = Template(self.documents[source].path.read_bytes())
            return self._templates[source]


def _fiscal_year(filing: Filing, fiscal_year_end: str) -> int:
    """The fiscal year a filing reports on: the year of the first fiscal year end on or after its report date."""
    year = filing.report_date.year
    return year if _year_end(year, fiscal_year_end) >= filing.report_date else year + 1


def _columns(rows: list[Filing]) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in (
        "accessionNumber", "filingDate", "reportDate", "acceptanceDateTime", "act", "form", "fileNumber",
        "filmNumber", "items", "size", "isXBRL", "isInlineXBRL", "primaryDocument", "primaryDocDescription")}
    for f in rows:
        periodic = f.source is not None
        cols["accessionNumber"].append(f.accession)
        cols["filingDate"].append(f.filing_date.isoformat())
        cols["reportDate"].append(f.report_date.isoformat() if f.report_date else "")
        cols["acceptanceDateTime"].append(f"{f.filing_date.isoformat()}T16:05:00.000Z")
        cols["act"].append("34" if periodic or f.form == "8-K" else "")
        cols["form"].append(f.form)
        cols["fileNumber"].append("001-99999" if periodic or f.form == "8-K" else "")
        cols["filmNumber"].append(str(20_000_000 + int(f.accession[-6:])) if periodic else "")
        cols["items"].append("2.02,9.01" if f.form == "8-K" else "")
        cols["size"].append(f.size)
        cols["isXBRL"].append(int(periodic))
        cols["isInlineXBRL"].append(int(periodic))
        cols["primaryDocument"].append(f.document)
        cols["primaryDocDescription"].append(f.form if f.form != "4" else "FORM 4")
    return cols


def _titles(samples: Path) -> dict[str, str]:
    try:
        rows = json.loads((samples / "api" / "company_tickers.json").read_bytes()).values()
    except OSError:
        return {}
    return {str(r["ticker"]).upper(): str(r["title"]) for r in rows}


@dataclass(frozen=True)
class Record:
    """One request as the server saw it."""

    at: float
    status: int
    path: str
    user_agent: str


class FairAccessGate:
    """SEC's fair-access rules over every request of every client: declared User-Agent, 10 per sliding second."""

    def __init__(self, max_requests: int = SEC_MAX_RPS, window_s: float = 1.0, lockout_s: float = SEC_LOCKOUT_S,
                 throttle_status: int = 403) -> None:
        self.max_requests, self.window_s, self.lockout_s = max_requests, window_s, lockout_s
        self.throttle_status = throttle_status
        self.records: list[Record] = []
        self._window: collections.deque[float] = collections.deque()
        self._locked_until = 0.0
        self._lock = threading.Lock()

    def admit(self, at: float, path: str, user_agent: str | None) -> tuple[int, dict[str, str]]:
        """The status (200 to serve, else the refusal) and headers for a request arriving at `at`."""
        with self._lock:
            self._window.append(at)
            while self._window and self._window[0] <= at - self.window_s:
                self._window.popleft()
            if len(self._window) > self.max_requests:  # above the rate: (re)starts the lockout
                self._locked_until = max(self._locked_until, at + self.lockout_s)
            headers: dict[str, str] = {}
            if not declared(user_agent):
                status = 403
            elif at < self._locked_until:
                status = self.throttle_status
                headers["Retry-After"] = str(max(1, math.ceil(self._locked_until - at)))
            else:
                status = 200
            self.records.append(Record(at, status, path, user_agent or ""))
            return status, headers

    def stats(self) -> dict:
        """Requests made and refused, and the most requests that arrived within any one window."""
        with self._lock:
            records = list(self.records)
        times = sorted(r.at for r in records)
        return {"requests": len(records), "refused": sum(r.status != 200 for r in records),
                "served": sum(r.status == 200 for r in records),
                "max_in_window": max_in_window(times, self.window_s),
                "first": times[0] if times else None, "last": times[-1] if times else None}


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """The most arrivals within any half-open window of window_s seconds (times sorted)."""
    return max((bisect.bisect_left(times, t + window_s) - i for i, t in enumerate(times)), default=0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "EdgarReplayServer"

    def do_GET(self) -> None:  # noqa: N802
        at = time.time()
        path = self.path.split("?", 1)[0]
        if path.startswith(CONTROL):
            return self._control(path[len(CONTROL):])
        status, headers = self.server.gate.admit(at, path, self.headers.get("User-Agent"))
        if status != 200:
            reason = ("Request Rate Threshold Exceeded" if status != 403 or "Retry-After" in headers
                      else "Your Request Originates from an Undeclared Automated Tool")
            return self._send(status, f"<html><body><h1>{reason}</h1></body></html>".encode(), "text/html", headers)
        if (document := self.server.document(path)) is not None:
            # As a static file server answers: the headers first, then the bytes (rendered meanwhile here).
            length, render = document
            self._send_headers(200, "text/html", {"Content-Length": str(length)})
            return self.wfile.write(render())
        body, kind = self.server.resolve(path)
        if body is None:
            return self._send(404, b"<html><body>Not Found</body></html>", "text/html")
        if kind == "application/json" and "gzip" in self.headers.get("Accept-Encoding", ""):
            return self._send(200, gzip.compress(body, 1, mtime=0), kind, {"Content-Encoding": "gzip"})
        self._send(200, body, kind)

    def _control(self, what: str) -> None:
        gate = self.server.gate
        if what == "stats":
            body = json.dumps(gate.stats()).encode()
        elif what == "records":
            body = json.dumps([[r.at, r.status, r.path] for r in list(gate.records)]).encode()
        else:
            return self._send(404, b"unknown control path", "text/plain")
        self._send(200, body, "application/json")

    def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self._send_headers(status, kind, {**(headers or {}), "Content-Length": str(len(body))})
        self.wfile.write(body)

    def _send_headers(self, status: int, kind: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


class EdgarReplayServer(ThreadingHTTPServer):
    """The replay server on a loopback port; `url` serves both www.sec.gov's and data.sec.gov's paths."""

    daemon_threads = True
    _SUBMISSIONS = re.compile(r"^/submissions/(CIK(\d{10})(?:-submissions-\d{3})?\.json)$")
    _ARCHIVE = re.compile(r"^/Archives/edgar/data/(\d+)/(\d{18})/(.+)$")

    def __init__(self, universe: Universe, gate: FairAccessGate | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"the replay server binds loopback only, not {host}")
        super().__init__((host, port), _Handler)
        self.universe = universe
        self.gate = gate or FairAccessGate()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def resolve(self, path: str) -> tuple[bytes | None, str]:
        if path == "/files/company_tickers.json":
            return json.dumps(self.universe.company_tickers()).encode(), "application/json"
        if m := self._SUBMISSIONS.match(path):
            cik = int(m[2])
            if cik not in self.universe.by_cik:
                return None, ""
            head, pages = self.universe.submissions(cik)
            data = head if m[1] == f"CIK{m[2]}.json" else pages.get(m[1])
            return (json.dumps(data).encode() if data is not None else None), "application/json"
        return None, ""

    def document(self, path: str) -> tuple[int, Callable[[], bytes]] | None:
        """A primary document's length and renderer, or None when the path is not one the universe serves."""
        m = self._ARCHIVE.match(path)
        return self.universe.archive(int(m[1]), m[2], m[3]) if m else None

    def start(self) -> "EdgarReplayServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companies", type=int, default=500)
    parser.add_argument("--fiscal-years", default="2023,2024")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lockout-s", type=float, default=SEC_LOCKOUT_S)
    parser.add_argument("--throttle-status", type=int, default=403, choices=(403, 429))
    args = parser.parse_args(argv)
    universe = Universe(args.companies, tuple(int(y) for y in args.fiscal_years.split(",")))
    for index in range(len(universe.documents)):
        universe.template(index)
    server = EdgarReplayServer(universe, FairAccessGate(lockout_s=args.lockout_s,
                                                        throttle_status=args.throttle_status), port=args.port)
    print(f"{server.url} companies={len(universe.companies)} filings={len(universe.in_period())}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
