"""Which raw partitions new EDGAR filings touch, scanned a slice of the universe at a time (no Dagster)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

from governed_ft_dagster.edgar.client import FilingRef, FilingSource

FORMS = ("10-K", "10-Q")


def partition_key(fiscal_year: int, form_type: str) -> str:
    """The raw asset's multi-partition key (dimensions in name order: fiscal_year|form_type)."""
    return f"{fiscal_year}|{form_type}"


@dataclass
class RefreshCursor:
    """Where the scan stopped and which accession numbers each company had when last seen."""

    offset: int = 0
    seen: dict[str, list[str]] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"offset": self.offset, "seen": self.seen}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | None) -> "RefreshCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(int(data.get("offset", 0)), {k: list(v) for k, v in data.get("seen", {}).items()})


@dataclass
class ScanResult:
    """Partitions to refresh, the new filings behind them, companies that could not be read, the next cursor."""

    partitions: list[str]
    new_filings: list[FilingRef]
    failures: list[str]
    cursor: RefreshCursor


def scan(source: FilingSource, tickers: Sequence[str], cursor: RefreshCursor, fiscal_years: Sequence[int],
         batch_size: int = 50, log: Callable[[str], None] = lambda _: None) -> ScanResult:
    """Scan the next batch of companies; a company seen for the first time sets its baseline and requests nothing."""
    companies = sorted(source.resolve(tickers).items(), key=lambda item: item[1][0])
    seen = {k: list(v) for k, v in cursor.seen.items()}
    if not companies:
        return ScanResult([], [], [], RefreshCursor(0, seen))
    start = cursor.offset % len(companies)
    batch = [companies[(start + i) % len(companies)] for i in range(min(batch_size, len(companies)))]
    partitions: set[str] = set()
    new: list[FilingRef] = []
    failures: list[str] = []
    for ticker, (cik, _name) in batch:
        try:
            refs = source.filings(cik, forms=FORMS, fiscal_years=fiscal_years, include_amendments=True, ticker=ticker)
        except Exception as exc:  # one company's feed failing must not stop the scan
            failures.append(f"{ticker}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
            continue
        known = set(seen.get(cik, []))
        current = sorted({ref.accession_number for ref in refs})
        if cik in seen:
            for ref in refs:
                if ref.accession_number not in known:
                    new.append(ref)
                    partitions.add(partition_key(ref.fiscal_year, ref.form_type))
        seen[cik] = current
    log(f"scanned {len(batch)} of {len(companies)} companies; {len(new)} new filings")
    return ScanResult(sorted(partitions), new, failures, RefreshCursor((start + len(batch)) % len(companies), seen))


@dataclass(frozen=True)
class RetrainPolicy:
    """When the adapter is retrained: only on demand, on a schedule, or once enough new curated records arrived."""

    kind: str
    min_new_records: int = 0
    cron: str = ""

    @classmethod
    def parse(cls, text: str) -> "RetrainPolicy":
        text = (text or "on_demand").strip()
        if text == "on_demand":
            return cls("on_demand")
        if text.startswith("new_data:") and text.split(":", 1)[1].isdigit():
            return cls("new_data", min_new_records=int(text.split(":", 1)[1]))
        if text.startswith("schedule:") and len(text.split(":", 1)[1].split()) == 5:
            return cls("schedule", cron=text.split(":", 1)[1])
        raise ValueError(f"GOVERNED_FT_RETRAIN_POLICY={text!r} is not a policy; use on_demand, "
                         "new_data:<records> or schedule:<cron>")


def retrain_due(policy: RetrainPolicy, trained_rows: int | None, current_rows: int) -> bool:
    """Whether the curated table grew enough since the rows the last adapter was trained on."""
    if policy.kind != "new_data":
        return False
    if trained_rows is None:
        return current_rows > 0
    return current_rows - trained_rows >= policy.min_new_records
