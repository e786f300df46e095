"""SEC EDGAR access: the live HTTP client and a local EDGAR-shaped folder behind one interface."""

from __future__ import annotations

import calendar
import email.utils
import json
import logging
import os
import random
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import requests

from governed_ft_dagster.atomic import atomic_write
from governed_ft_dagster.edgar.fair_access import FairAccessLimiter, file_lock

log = logging.getLogger(__name__)

USER_AGENT_ENV = "GOVERNED_FT_EDGAR_USER_AGENT"
DEFAULT_FORMS: tuple[str, ...] = ("10-K", "10-Q")
DEFAULT_FISCAL_YEARS = range(2023, 2025)
FISCAL_YEAR_END_SLACK_DAYS = 10
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PAGE_MEMO_SIZE = 16
# How long cached copies stay fresh: the main submissions page gains each new filing, the older pages and the
# ticker list change rarely.
SUBMISSIONS_MAX_AGE_S = 600.0
OLDER_PAGES_MAX_AGE_S = 7 * 24 * 3600.0
COMPANY_TICKERS_MAX_AGE_S = 24 * 3600.0
THROTTLED = (403, 429)
FAIR_ACCESS_FILE = "fair_access.state"
_TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class EdgarError(Exception):
    """Base class for EDGAR access failures."""


class EdgarConfigError(EdgarError, ValueError):
    """The client is misconfigured (e.g. no contact address in the User-Agent)."""


class EdgarHTTPError(EdgarError):
    """A request failed for good: carries the URL and the last HTTP status (None for connection errors)."""

    def __init__(self, url: str, status: int | None, detail: str = "") -> None:
        self.url = url
        self.status = status
        what = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"EDGAR request failed: {url} -> {what}" + (f" ({detail})" if detail else ""))


class EdgarNotFoundError(EdgarHTTPError):
    """The resource does not exist (HTTP 404, or a file missing from a local source)."""

    def __init__(self, url: str, detail: str = "") -> None:
        super().__init__(url, 404, detail)


def normalize_cik(cik: int | str) -> str:
    """Return the 10-digit zero-padded CIK."""
    digits = str(cik).strip().upper().removeprefix("CIK")
    if not digits.isdigit():
        raise ValueError(f"not a CIK: {cik!r}")
    return digits.zfill(10)


def normalize_ticker(ticker: str) -> str:
    """Upper-case a ticker in EDGAR's spelling (share classes with '-': BRK.B -> BRK-B)."""
    return ticker.strip().upper().replace(".", "-").replace("/", "-")


def parse_fiscal_year_end(value: str | None) -> str | None:
    """Return MMDD from '0930', '--09-30', '09-30', '9/30' or 'September 30' (None if unparseable)."""
    if not value:
        return None
    text = re.sub(r"[\s\u00a0]+", " ", value).strip().lstrip("-")
    if re.fullmatch(r"\d{4}", text):
        month, day = int(text[:2]), int(text[2:])
    elif m := re.fullmatch(r"(\d{1,2})[-/](\d{1,2})", text):
        month, day = int(m[1]), int(m[2])
    elif m := re.fullmatch(r"([A-Za-z]+)\.? (\d{1,2})", text):
        names = {n.lower(): i for i, n in enumerate(calendar.month_name) if n}
        names.update({n.lower(): i for i, n in enumerate(calendar.month_abbr) if n})
        month, day = names.get(m[1].lower(), 0), int(m[2])
    else:
        return None
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return f"{month:02d}{day:02d}"


def _nominal_year_end(year: int, mmdd: str) -> date:
    month = int(mmdd[:2])
    day = min(int(mmdd[2:]), calendar.monthrange(year, month)[1])
    return date(year, month, day)


def fiscal_period(report_date: date | str, fiscal_year_end: str | None, form_type: str) -> tuple[int, str, int | None]:
    """(fiscal_year, 'FY'|'Qn', quarter|None): FY = year of the first nominal fiscalYearEnd on/after report date - 10 days (absorbs 52/53-week years); Qn = quarters since the previous year end, rounded."""
    if isinstance(report_date, str):
        report_date = date.fromisoformat(report_date)
    mmdd = parse_fiscal_year_end(fiscal_year_end) or "1231"
    anchor = report_date - timedelta(days=FISCAL_YEAR_END_SLACK_DAYS)
    year = anchor.year
    if _nominal_year_end(year, mmdd) < anchor:
        year += 1
    if split_form(form_type)[0] != "10-Q":
        return year, "FY", None
    previous_end = _nominal_year_end(year - 1, mmdd)
    quarter = min(4, max(1, round((report_date - previous_end).days / 91.3125)))
    return year, f"Q{quarter}", quarter


def earliest_filing_date(fiscal_years: Iterable[int], fiscal_year_end: str | None) -> date | None:
    """First date on which a filing for any of the fiscal years could have been made (start of the earliest one)."""
    years = list(fiscal_years)
    if not years:
        return None
    mmdd = parse_fiscal_year_end(fiscal_year_end) or "1231"
    return _nominal_year_end(min(years) - 1, mmdd) - timedelta(days=FISCAL_YEAR_END_SLACK_DAYS)


def split_form(form: str) -> tuple[str, bool]:
    """Split an EDGAR form string into (base form, is_amendment): '10-K/A' -> ('10-K', True)."""
    form = form.strip().upper()
    if form.endswith("/A"):
        return form[:-2], True
    return form, False


@dataclass(frozen=True)
class FilingRef:
    """One filing's primary document, as listed in a company's submissions."""

    cik: str
    ticker: str
    entity_name: str
    form_type: str
    is_amendment: bool
    original_form: str
    accession_number: str
    filing_date: str
    report_date: str
    fiscal_year: int
    fiscal_period: str
    quarter: int | None
    primary_document: str
    url: str

    @property
    def accession_nodash(self) -> str:
        """Accession number without dashes, as used in archive paths."""
        return self.accession_number.replace("-", "")

    @property
    def archive_path(self) -> str:
        """Path of the primary document relative to the site root (Archives/edgar/data/...)."""
        return archive_path(self.cik, self.accession_number, self.primary_document)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FilingRef:
        """Inverse of to_dict."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def archive_path(cik: int | str, accession_number: str, document: str) -> str:
    """Site-relative archive path of a filing document."""
    return f"Archives/edgar/data/{int(cik)}/{accession_number.replace('-', '')}/{document}"


def submissions_name(cik: int | str) -> str:
    """File name of a company's main submissions JSON."""
    return f"CIK{normalize_cik(cik)}.json"


class Resolution(dict[str, tuple[str, str]]):
    """Tickers found (ticker -> (cik, name)); the ones EDGAR does not know are in `.unknown`."""

    def __init__(self, found: Mapping[str, tuple[str, str]], unknown: Iterable[str] = ()) -> None:
        super().__init__(found)
        self.unknown: list[str] = list(unknown)

    def error_message(self) -> str | None:
        """A sentence naming the unknown tickers, or None when all were found."""
        if not self.unknown:
            return None
        return (
            f"{len(self.unknown)} ticker(s) not found in EDGAR's company_tickers.json: "
            f"{', '.join(self.unknown)}"
        )

    def raise_for_unknown(self) -> None:
        """Raise EdgarError listing the unknown tickers, if any."""
        if msg := self.error_message():
            raise EdgarError(msg)


def parse_company_tickers(data: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Parse company_tickers.json into ticker -> (10-digit cik, company name)."""
    rows = data.values() if isinstance(data, Mapping) else data
    out: dict[str, tuple[str, str]] = {}
    for row in rows:
        ticker = normalize_ticker(str(row["ticker"]))
        out.setdefault(ticker, (normalize_cik(row["cik_str"]), str(row["title"])))
    return out


def resolve_tickers(index: Mapping[str, tuple[str, str]], tickers: Iterable[str]) -> Resolution:
    """Look tickers up in a company index; unknowns are collected, not raised."""
    found: dict[str, tuple[str, str]] = {}
    unknown: list[str] = []
    for raw in tickers:
        ticker = normalize_ticker(raw)
        if not ticker or ticker in found or ticker in unknown:
            continue
        if ticker in index:
            found[ticker] = index[ticker]
        else:
            unknown.append(ticker)
    return Resolution(found, unknown)


def pages_needed(submissions: Mapping[str, Any], since: date | None) -> list[str]:
    """Names of the older submissions pages that may hold filings made on or after `since` (all if None)."""
    files = submissions.get("filings", {}).get("files", []) or []
    names = []
    for entry in files:
        filing_to = entry.get("filingTo")
        if since is None or not filing_to or date.fromisoformat(filing_to) >= since:
            names.append(entry["name"])
    return names


def merge_submission_pages(recent: Mapping[str, list], pages: Iterable[Mapping[str, list]]) -> dict[str, list]:
    """Concatenate column-oriented submissions pages (columns missing in a page are filled with '')."""
    pages = [recent, *pages]
    columns: list[str] = []
    for page in pages:
        columns.extend(c for c in page if c not in columns)
    merged: dict[str, list] = {c: [] for c in columns}
    for page in pages:
        n = len(page.get("accessionNumber", [])) or max((len(v) for v in page.values()), default=0)
        for c in columns:
            values = list(page.get(c, []))
            merged[c].extend(values + [""] * (n - len(values)))
    return merged


def filing_refs(
    submissions: Mapping[str, Any],
    *,
    archive_base: str,
    forms: Iterable[str] = DEFAULT_FORMS,
    fiscal_years: Iterable[int] | None = DEFAULT_FISCAL_YEARS,
    include_amendments: bool = True,
    ticker: str | None = None,
) -> list[FilingRef]:
    """Build FilingRefs from a (merged) submissions JSON, filtered by base form and fiscal year."""
    cik = normalize_cik(submissions["cik"])
    name = str(submissions.get("name", ""))
    tickers = submissions.get("tickers") or []
    ticker = normalize_ticker(ticker) if ticker else (normalize_ticker(tickers[0]) if tickers else "")
    fye = submissions.get("fiscalYearEnd")
    wanted_forms = {split_form(f)[0] for f in forms}
    wanted_years = None if fiscal_years is None else set(fiscal_years)
    recent = submissions.get("filings", {}).get("recent", {})
    base = archive_base.rstrip("/")
    refs: dict[str, FilingRef] = {}
    for i, accession in enumerate(recent.get("accessionNumber", [])):
        original_form = str(recent["form"][i])
        form_type, is_amendment = split_form(original_form)
        if form_type not in wanted_forms or (is_amendment and not include_amendments):
            continue
        report_date = str(recent["reportDate"][i] or "")
        if not report_date:
            level = logging.WARNING if form_type in DEFAULT_FORMS else logging.DEBUG
            log.log(level, "skipping %s %s of CIK %s: no report date", original_form, accession, cik)
            continue
        fy, period, quarter = fiscal_period(report_date, fye, form_type)
        if wanted_years is not None and fy not in wanted_years:
            continue
        document = str(recent["primaryDocument"][i] or "")  # none listed: kept, so its row says so
        refs[accession] = FilingRef(
            cik=cik,
            ticker=ticker,
            entity_name=name,
            form_type=form_type,
            is_amendment=is_amendment,
            original_form=original_form,
            accession_number=accession,
            filing_date=str(recent["filingDate"][i]),
            report_date=report_date,
            fiscal_year=fy,
            fiscal_period=period,
            quarter=quarter,
            primary_document=document,
            url=f"{base}/{archive_path(cik, accession, document)}",
        )
    return sorted(refs.values(), key=lambda r: (r.report_date, r.filing_date, r.accession_number))


@runtime_checkable
class FilingSource(Protocol):
    """Where filings come from: the live EDGAR site or a local EDGAR-shaped folder."""

    def ticker_to_cik(self) -> dict[str, str]: ...

    def resolve(self, tickers: Iterable[str]) -> Resolution: ...

    def submissions(self, cik: int | str, since: date | None = None) -> dict[str, Any]: ...

    def filings(
        self,
        cik: int | str,
        forms: Iterable[str] = DEFAULT_FORMS,
        fiscal_years: Iterable[int] | None = DEFAULT_FISCAL_YEARS,
        include_amendments: bool = True,
        ticker: str | None = None,
    ) -> list[FilingRef]: ...

    def download(self, ref: FilingRef) -> Path: ...

    def prefetch(self, refs: Sequence[FilingRef]) -> None: ...


class _SubmissionsSource:
    """The EDGAR JSON logic shared by the HTTP client and the local source; subclasses supply raw reads."""

    archive_base: str

    def __init__(self) -> None:
        self._companies: dict[str, tuple[str, str]] | None = None
        self._pages: OrderedDict[str, Any] = OrderedDict()
        self._memo_lock = threading.Lock()

    def _read_company_tickers(self) -> Any:
        raise NotImplementedError

    def _read_submissions_page(self, name: str) -> Any:
        raise NotImplementedError

    def _page(self, name: str) -> Any:
        with self._memo_lock:
            if name in self._pages:
                self._pages.move_to_end(name)
                return self._pages[name]
        data = self._read_submissions_page(name)
        with self._memo_lock:
            self._pages[name] = data
            while len(self._pages) > _PAGE_MEMO_SIZE:
                self._pages.popitem(last=False)
        return data

    def companies(self) -> dict[str, tuple[str, str]]:
        """Ticker -> (10-digit cik, company name) from company_tickers.json."""
        if self._companies is None:
            self._companies = parse_company_tickers(self._read_company_tickers())
        return self._companies

    def ticker_to_cik(self) -> dict[str, str]:
        """Ticker -> 10-digit CIK."""
        return {t: cik for t, (cik, _) in self.companies().items()}

    def resolve(self, tickers: Iterable[str]) -> Resolution:
        """Ticker -> (cik, name) for the known tickers; the unknown ones are listed in `.unknown`."""
        return resolve_tickers(self.companies(), tickers)

    def submissions(self, cik: int | str, since: date | None = None) -> dict[str, Any]:
        """A company's submissions JSON with the older pages that reach `since` (all if None) merged into `recent`."""
        head = self._page(submissions_name(cik))
        older = [self._page(name) for name in pages_needed(head, since)]
        filings = dict(head.get("filings", {}))
        filings["recent"] = merge_submission_pages(filings.get("recent", {}), older)
        return {**head, "filings": filings}

    def filings(
        self,
        cik: int | str,
        forms: Iterable[str] = DEFAULT_FORMS,
        fiscal_years: Iterable[int] | None = DEFAULT_FISCAL_YEARS,
        include_amendments: bool = True,
        ticker: str | None = None,
    ) -> list[FilingRef]:
        """The company's filings of the given forms in the given fiscal years (None: all years)."""
        forms = tuple(forms)
        years = None if fiscal_years is None else sorted(set(fiscal_years))
        head = self._page(submissions_name(cik))
        since = None if years is None else earliest_filing_date(years, head.get("fiscalYearEnd"))
        refs = filing_refs(
            self.submissions(cik, since=since),
            archive_base=self.archive_base,
            forms=forms,
            fiscal_years=years,
            include_amendments=include_amendments,
            ticker=ticker,
        )
        return [r for r in refs if self._listable(r)]

    def _listable(self, ref: FilingRef) -> bool:
        return True

    def prefetch(self, refs: Sequence[FilingRef]) -> None:
        """Start fetching these filings' documents ahead of `download` (nothing to fetch for a local folder)."""


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class EdgarClient(_SubmissionsSource):
    """Live EDGAR client: fair-access User-Agent, one rate limit per state folder, cool-downs, shared caches."""

    def __init__(
        self,
        user_agent: str | None = None,
        base_url: str = "https://www.sec.gov",
        data_url: str = "https://data.sec.gov",
        cache_dir: Path | str | None = None,
        max_rps: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        timeout: float = 30,
        max_retry_after: float = 600.0,
        headroom: float = 0.01,
        throttle_cooldown: float = 30.0,
        submissions_max_age: float = SUBMISSIONS_MAX_AGE_S,
        prefetch_threads: int = 4,
        prefetch_ahead: int = 256,
    ) -> None:
        super().__init__()
        user_agent = (user_agent or os.environ.get(USER_AGENT_ENV, "")).strip()
        if not _EMAIL_RE.search(user_agent):
            raise EdgarConfigError(
                "SEC fair access requires a User-Agent with a contact address, e.g. "
                f"'Acme Research ops@acme.com'; set {USER_AGENT_ENV}"
                + (f" (got {user_agent!r})" if user_agent else "")
            )
        if max_rps <= 0:
            raise EdgarConfigError("max_rps must be positive")
        self.user_agent = user_agent
        self.base_url = base_url.rstrip("/")
        self.data_url = data_url.rstrip("/")
        self.archive_base = self.base_url
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(".governed_ft") / "edgar_cache"
        self.max_rps = max_rps
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.timeout = timeout
        self.max_retry_after = max_retry_after
        self.throttle_cooldown = throttle_cooldown
        self.submissions_max_age = submissions_max_age
        self.prefetch_threads = prefetch_threads
        self.prefetch_ahead = prefetch_ahead
        self.limiter = FairAccessLimiter(self.cache_dir / FAIR_ACCESS_FILE, max_rps=max_rps, headroom=headroom,
                                         hold_s=max(60.0, 2 * timeout))
        self._local = threading.local()
        self._prefetch: _Prefetch | None = None

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate"})
            self._local.session = session
        return session

    def _backoff(self, attempt: int) -> float:
        return self.backoff_base * (2**attempt) + random.uniform(0, self.backoff_base)

    def _throttle_delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.throttle_cooldown * (2**attempt), self.max_retry_after)

    def get(self, url: str) -> bytes:
        """GET within the shared limit (403/429 cool every process down; 5xx and connection errors back off)."""
        status: int | None = None
        detail = ""
        for attempt in range(self.max_retries + 1):
            try:
                with self.limiter.request():  # counts until the response began, as SEC sees the request
                    resp = self._session().get(url, timeout=self.timeout, stream=True)
                body = resp.content
            except _TRANSIENT_ERRORS as exc:
                status, detail = None, f"{type(exc).__name__}: {exc}"
                if attempt < self.max_retries:
                    time.sleep(self._backoff(attempt))
                continue
            if resp.status_code == 200:
                return body
            status, detail = resp.status_code, resp.reason or ""
            if resp.status_code == 404:
                raise EdgarNotFoundError(url, detail)
            if resp.status_code not in THROTTLED and resp.status_code < 500:
                raise EdgarHTTPError(url, resp.status_code, detail)
            if attempt == self.max_retries:
                break
            if resp.status_code in THROTTLED:
                delay = self.limiter.cool_down(
                    self._throttle_delay(attempt, _retry_after_seconds(resp.headers.get("Retry-After"))))
                log.warning("EDGAR refused %s with %s (SEC's answer above 10 requests/s or to an undeclared "
                            "User-Agent); every process of this deployment pauses %.1f s, then retry %d/%d",
                            url, status, delay, attempt + 1, self.max_retries)
            else:
                delay = self._backoff(attempt)
                retry_after = _retry_after_seconds(resp.headers.get("Retry-After"))
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self.max_retry_after))
                log.warning("EDGAR %s for %s; retry %d/%d in %.2fs", status, url, attempt + 1, self.max_retries,
                            delay)
                time.sleep(delay)
        if status in THROTTLED:
            detail += (f"; SEC refuses requests above 10 requests/s or without a declared User-Agent (name and "
                       f"contact address, {USER_AGENT_ENV})")
        raise EdgarHTTPError(url, status, f"gave up after {self.max_retries + 1} attempts; {detail}".rstrip("; "))

    def get_json(self, url: str) -> Any:
        """GET and parse JSON."""
        return _parse_json(self.get(url), url)

    def _cached_json(self, relative: str, url: str, max_age: float) -> Any:
        """JSON from the state folder's cache while younger than max_age, else fetched once for every process."""
        path = self.cache_dir / relative
        data = _fresh_json(path, max_age)
        if data is not None:
            return data
        with file_lock(path.with_name(f".{path.name}.lock")):
            data = _fresh_json(path, max_age)  # another process may have fetched it while this one waited
            if data is None:
                body = self.get(url)
                data = _parse_json(body, url)
                atomic_write(path, body)
        return data

    def _read_company_tickers(self) -> Any:
        return self._cached_json("files/company_tickers.json", f"{self.base_url}/files/company_tickers.json",
                                 COMPANY_TICKERS_MAX_AGE_S)

    def _read_submissions_page(self, name: str) -> Any:
        max_age = OLDER_PAGES_MAX_AGE_S if "-submissions-" in name else self.submissions_max_age
        return self._cached_json(f"submissions/{name}", f"{self.data_url}/submissions/{name}", max_age)

    def cached_path(self, ref: FilingRef) -> Path:
        """Where `download` keeps a filing's primary document (an EDGAR-shaped tree under cache_dir)."""
        return self.cache_dir / ref.archive_path

    def _fetch(self, ref: FilingRef) -> Path:
        _require_document(ref)
        path = self.cached_path(ref)
        if not path.is_file():
            atomic_write(path, self.get(f"{self.base_url}/{ref.archive_path}"))
        return path

    def prefetch(self, refs: Sequence[FilingRef]) -> None:
        """Download these documents in background threads, in order, at most prefetch_ahead ahead of `download`."""
        missing = [ref for ref in refs if not self.cached_path(ref).is_file()]
        if self._prefetch is not None:
            self._prefetch.stop()
        self._prefetch = (_Prefetch(self._fetch, missing, self.prefetch_threads, self.prefetch_ahead) if missing
                          else None)

    def download(self, ref: FilingRef) -> Path:
        """The primary document in the cache, fetched unless it is already there; returns its path."""
        if self._prefetch is not None and (path := self._prefetch.take(ref)) is not None:
            return path
        return self._fetch(ref)


class _Prefetch:
    """Background downloads in list order, at most `ahead` not yet taken; `take` waits for one that has started."""

    def __init__(self, fetch: Callable[[FilingRef], Path], refs: Sequence[FilingRef], threads: int,
                 ahead: int) -> None:
        self._fetch = fetch
        self._order = deque(refs)
        self._pending = {ref.accession_number for ref in refs}
        self._started: dict[str, tuple[threading.Event, list]] = {}
        self._lock = threading.Lock()
        self._room = threading.Semaphore(max(1, ahead))
        self._stopped = False
        for _ in range(max(1, min(threads, len(refs)))):
            threading.Thread(target=self._work, daemon=True, name="edgar-prefetch").start()

    def _next(self) -> tuple[FilingRef, threading.Event, list] | None:
        with self._lock:
            while self._order and self._order[0].accession_number not in self._pending:
                self._order.popleft()
            if self._stopped or not self._order:
                return None
            ref = self._order.popleft()
            self._pending.discard(ref.accession_number)
            event, outcome = self._started[ref.accession_number] = (threading.Event(), [])
            return ref, event, outcome

    def _work(self) -> None:
        while True:
            self._room.acquire()
            item = self._next()
            if item is None:
                self._room.release()
                return
            ref, event, outcome = item
            try:
                outcome.append(self._fetch(ref))
            except BaseException as exc:  # handed to the consumer by take()
                outcome.append(exc)
            event.set()

    def take(self, ref: FilingRef) -> Path | None:
        """The prefetched document's path (raising what its download raised); None if no worker has started it."""
        with self._lock:
            if ref.accession_number in self._pending:
                self._pending.discard(ref.accession_number)
                return None
            entry = self._started.pop(ref.accession_number, None)
        if entry is None:
            return None
        event, outcome = entry
        event.wait()
        self._room.release()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def stop(self) -> None:
        """Start nothing more (a download under way finishes)."""
        with self._lock:
            self._stopped = True


def _require_document(ref: FilingRef) -> None:
    if not ref.primary_document:
        raise EdgarNotFoundError(ref.url, "EDGAR's submissions list no primary document for this filing")


def _parse_json(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise EdgarError(f"EDGAR returned invalid JSON from {url}: {exc}") from exc


def _fresh_json(path: Path, max_age: float) -> Any:
    """The cached JSON at path if it is younger than max_age seconds and parses, else None."""
    try:
        if time.time() - path.stat().st_mtime > max_age:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


class LocalEdgarSource(_SubmissionsSource):
    """An EDGAR-shaped folder (files/, submissions/, Archives/edgar/data/) read like the live site."""

    def __init__(self, root: Path | str, archive_base: str | None = None, only_available: bool = True) -> None:
        super().__init__()
        self.root = Path(root)
        self.archive_base = archive_base or self.root.resolve().as_uri()
        self.only_available = only_available

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            raise EdgarNotFoundError(str(path), "no such file in the local EDGAR source") from None
        except ValueError as exc:
            raise EdgarError(f"invalid JSON in {path}: {exc}") from exc

    def _read_company_tickers(self) -> Any:
        return self._read_json(self.root / "files" / "company_tickers.json")

    def _read_submissions_page(self, name: str) -> Any:
        return self._read_json(self.root / "submissions" / name)

    def _listable(self, ref: FilingRef) -> bool:
        return not self.only_available or (self.root / ref.archive_path).is_file()

    def download(self, ref: FilingRef) -> Path:
        """Path of the primary document inside the folder (nothing is copied)."""
        _require_document(ref)
        path = self.root / ref.archive_path
        if not path.is_file():
            raise EdgarNotFoundError(str(path), "no such file in the local EDGAR source")
        return path
