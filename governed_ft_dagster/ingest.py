"""Ingestion of one partition: list, download, extract, land and merge into the raw table (no Dagster)."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pyarrow as pa

from governed_ft_dagster.catalog.base import CatalogClient, RenewingCredentials
from governed_ft_dagster.edgar.client import EdgarHTTPError, FilingRef, FilingSource
from governed_ft_dagster.edgar.extract import DEFAULT_MAX_BYTES, EXTRACTOR_VERSION, extract_risk_factors
from governed_ft_dagster.edgar.landing import (
    AMENDMENT_COLUMNS,
    RAW_SCHEMA,
    build_record,
    catalog_columns,
    landing_key,
    supersessions,
)
from governed_ft_dagster.storage import (
    S3Endpoint,
    add_missing_columns,
    delta_version,
    join,
    merge_rows,
    put_json,
    read_delta,
    storage_options,
)

Log = Callable[[str], None]
FETCH_FAILED = "fetch_failed"
# When a filing's new row replaces its old one: its text, extraction or amendment pointers changed, and a fetch
# failure fills a gap, never replaces a row from the document (each term parenthesised: the merge's SQL parser binds
# IS DISTINCT FROM looser than OR).
CHANGED_WHEN = f"s.status != '{FETCH_FAILED}' AND (" + " OR ".join(f"({condition})" for condition in [
    "t.text_sha256 != s.text_sha256", "t.extractor_version != s.extractor_version", "t.status != s.status",
    *(f"t.{c} IS DISTINCT FROM s.{c}" for c in AMENDMENT_COLUMNS)]) + ")"


@dataclass(frozen=True)
class RawTarget:
    """Where the raw table and its landing zone live."""

    table: str
    table_location: str
    landing_root: str
    endpoint: S3Endpoint = S3Endpoint()
    table_properties: tuple[tuple[str, str], ...] = ()


@dataclass
class IngestReport:
    """Counts of one ingestion run; filings in = rows + rejects, and any reject fails the run."""

    filings_in: int = 0
    fetched: int = 0
    rows_by_status: Counter = field(default_factory=Counter)
    rejects: list[dict[str, str]] = field(default_factory=list)
    unknown_tickers: list[str] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)
    delta_version: int | None = None
    inserted: int = 0
    updated: int = 0
    table_created: bool = False
    superseded: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.rows_by_status.values())

    @property
    def wrote(self) -> bool:
        """Whether the run committed a version of the raw table (a re-run of unchanged filings commits none)."""
        return self.table_created or self.inserted > 0 or self.updated > 0

    def incomplete(self, partition: str, table: str) -> str | None:
        """One sentence naming what has no row in the table and why, or None when every listed filing has one."""
        listed = set(self.listed)
        filings = [r for r in self.rejects if r["key"] in listed]
        companies = [r for r in self.rejects if r["key"] not in listed]
        parts = []
        if filings:
            parts.append(f"{len(filings)} of the {len(listed)} filings listed for {partition} "
                         f"{'has' if len(filings) == 1 else 'have'} no row in {table}: {_named(filings)}")
        if companies:
            parts.append(f"{len(companies)} compan{'y' if len(companies) == 1 else 'ies'} could not be listed for "
                         f"{partition}, so their filings are missing: {_named(companies)}")
        if not parts:
            return None
        merged = (f"the {self.rows} other rows are merged (Delta version {self.delta_version})" if self.rows
                  else "nothing was merged")
        return "; ".join([*parts, merged, "fix the cause and run the partition again."])


def _named(rejects: list[dict[str, str]], shown: int = 5) -> str:
    named = "; ".join(f"{r['key']} ({r['reason']})" for r in rejects[:shown])
    return named + (f"; and {len(rejects) - shown} more" if len(rejects) > shown else "")


def list_filings(source: FilingSource, tickers: Sequence[str], form_type: str, fiscal_year: int,
                 include_amendments: bool, report: IngestReport, log: Log) -> list[FilingRef]:
    """Filings of the universe in one form and fiscal year; a company that fails to list is a reject."""
    resolution = source.resolve(tickers)
    report.unknown_tickers = sorted(getattr(resolution, "unknown", []) or [])
    if report.unknown_tickers:
        log(f"{len(report.unknown_tickers)} tickers are not in EDGAR's ticker list: {', '.join(report.unknown_tickers[:20])}")
    refs: list[FilingRef] = []
    for ticker, (cik, _name) in sorted(resolution.items()):
        try:
            refs.extend(source.filings(cik, forms=(form_type,), fiscal_years=(fiscal_year,),
                                       include_amendments=include_amendments, ticker=ticker))
        except Exception as exc:  # one company's listing failure must not fail the batch
            report.rejects.append({"key": f"{ticker} ({cik})", "reason": f"listing failed: {_short(exc)}"})
    unique = {ref.accession_number: ref for ref in refs}
    return [unique[key] for key in sorted(unique)]


def ingest(source: FilingSource, tickers: Sequence[str], form_type: str, fiscal_year: int, client: CatalogClient,
           target: RawTarget, log: Log, include_amendments: bool = True, max_bytes: int = DEFAULT_MAX_BYTES,
           now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> IngestReport:
    """Run one partition end to end with credentials vended to the ingest principal.

    Every listed filing ends as a row (a document EDGAR would not serve as a `fetch_failed` row) or as a reject
    naming it and its cause (a failed write of our own: the cache, the landing zone); the caller fails on rejects.
    """
    report = IngestReport()
    refs = list_filings(source, tickers, form_type, fiscal_year, include_amendments, report, log)
    report.filings_in = len(refs) + len(report.rejects)
    report.listed = [ref.accession_number for ref in refs]
    log(f"{len(refs)} {form_type} filings for fiscal year {fiscal_year} from {len(tickers)} tickers")
    source.prefetch(refs)
    landing = RenewingCredentials(lambda: client.temporary_path_credentials(target.landing_root, "PATH_READ_WRITE"))
    records: list[dict] = []
    started = time.monotonic()
    for index, ref in enumerate(refs, 1):
        record = _record(source, ref, target, landing, now().isoformat(timespec="seconds"), max_bytes, report)
        if record is not None:
            records.append(record)
            report.rows_by_status[record["status"]] += 1
        if index % 25 == 0 or index == len(refs):
            log(f"extracted {index}/{len(refs)} filings ({time.monotonic() - started:.1f} s)")
    if records:
        _merge(client, target, records, report)
        _verify_rows(client, target, form_type, fiscal_year, records, report)
    else:
        report.delta_version = _current_version(client, target)
    return report


def _record(source: FilingSource, ref: FilingRef, target: RawTarget, landing: RenewingCredentials,
            extracted_at: str, max_bytes: int, report: IngestReport) -> dict | None:
    """The filing's row, landed; None with a reject naming the filing when a step of our own failed."""
    try:
        document = source.download(ref).read_bytes()
    except EdgarHTTPError as exc:  # EDGAR's answer about this filing: a row, so the table shows it
        return build_record(ref, FETCH_FAILED, "", f"download failed: {_short(exc)}", EXTRACTOR_VERSION, extracted_at)
    except Exception as exc:  # e.g. the cache's disk is full
        report.rejects.append({"key": ref.accession_number, "reason": f"download failed: {_short(exc)}"})
        return None
    report.fetched += 1
    try:
        result = extract_risk_factors(document, ref.original_form, max_bytes=max_bytes)
        record = build_record(ref, result.status.value, result.text, result.reason, EXTRACTOR_VERSION, extracted_at)
    except Exception as exc:
        report.rejects.append({"key": ref.accession_number, "reason": f"extraction failed: {_short(exc)}"})
        return None
    try:
        put_json(join(target.landing_root, landing_key(ref)), record, landing.current(), target.endpoint)
    except Exception as exc:
        report.rejects.append({"key": ref.accession_number, "reason": f"landing failed: {_short(exc)}"})
        return None
    return record


def _verify_rows(client: CatalogClient, target: RawTarget, form_type: str, fiscal_year: int, merged: list[dict],
                 report: IngestReport) -> None:
    """Read the partition back: a merged filing the table does not hold becomes a reject."""
    creds = client.temporary_table_credentials(target.table, "READ")
    table, version = read_delta(target.table_location, storage_options(creds, target.endpoint), ["accession_number"],
                                where={"fiscal_year": fiscal_year, "form_type": form_type})
    present = set(table.column("accession_number").to_pylist())
    for record in merged:
        if record["accession_number"] not in present:
            report.rows_by_status[record["status"]] -= 1
            report.rejects.append({"key": record["accession_number"],
                                   "reason": f"merged but not in the table at Delta version {version}"})


def _merge(client: CatalogClient, target: RawTarget, records: list[dict], report: IngestReport,
           attempts: int = 5) -> None:
    for attempt in range(1, attempts + 1):
        exists = client.table_exists(target.table)
        creds = (client.temporary_table_credentials(target.table, "READ_WRITE") if exists
                 else client.temporary_path_credentials(target.table_location, "PATH_CREATE_TABLE"))
        options = storage_options(creds, target.endpoint)
        try:
            rows = with_supersessions(target.table_location, options, records, exists, report)
            result = merge_rows(target.table_location, pa.Table.from_pylist(rows, schema=RAW_SCHEMA),
                                "accession_number", options, CHANGED_WHEN, dict(target.table_properties))
            break
        except Exception as exc:
            if "commit" not in str(exc).lower() or attempt == attempts:
                raise
            time.sleep(0.2 * attempt)
    if not exists:
        client.register_external_table(target.table, target.table_location, catalog_columns(),
                                       properties={"governed_ft.layer": "raw"},
                                       comment="Risk Factors sections of SEC 10-K and 10-Q filings")
    report.delta_version, report.inserted, report.updated = result.version, result.inserted, result.updated
    report.table_created = result.created


_KEY_COLUMNS = ["accession_number", "cik", "form_type", "report_date", "filing_date", "is_amendment", "status",
                *AMENDMENT_COLUMNS]


def with_supersessions(location: str, options: dict[str, str], records: list[dict], exists: bool,
                       report: IngestReport) -> list[dict]:
    """The batch with each row's amendment pointers, plus the partition's stored rows whose pointers change."""
    stored: dict[str, dict] = {}
    if exists:
        add_missing_columns(location, options, RAW_SCHEMA)
        partition = {"fiscal_year": records[0]["fiscal_year"], "form_type": records[0]["form_type"]}
        rows, _ = read_delta(location, options, columns=_KEY_COLUMNS, where=partition)
        stored = {row["accession_number"]: row for row in rows.to_pylist()}
    batch = {record["accession_number"]: record for record in records}
    amends, superseded = supersessions({**stored, **batch}.values())
    pointers = {accession: {"amends_accession": amends.get(accession), "superseded_by": superseded.get(accession)}
                for accession in {**stored, **batch}}
    out = [{**record, **pointers[accession]} for accession, record in batch.items()]
    moved = sorted(a for a, row in stored.items() if a not in batch
                   and any(row.get(k) != v for k, v in pointers[a].items()))
    if moved:  # rows of an earlier run (another universe) that an amendment in this batch supersedes
        rows, _ = read_delta(location, options, where=None, filters=[("accession_number", "in", moved)])
        out += [{**row, **pointers[row["accession_number"]]} for row in rows.to_pylist()]
    report.superseded = {a: superseded[a] for a in sorted(superseded)}
    return out


def _current_version(client: CatalogClient, target: RawTarget) -> int | None:
    if not client.table_exists(target.table):
        return None
    creds = client.temporary_table_credentials(target.table, "READ")
    return delta_version(target.table_location, storage_options(creds, target.endpoint))


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
