"""Landing records: one JSON document per filing at the raw layout, and the raw table's schema."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

import pyarrow as pa

from governed_ft_dagster.catalog.base import ColumnInfo
from governed_ft_dagster.edgar.client import FilingRef

LANDING_PREFIX = "raw/risk_factors"

RAW_SCHEMA = pa.schema([
    pa.field("cik", pa.string(), nullable=False),
    pa.field("ticker", pa.string()),
    pa.field("entity_name", pa.string()),
    pa.field("form_type", pa.string(), nullable=False),
    pa.field("is_amendment", pa.bool_()),
    pa.field("fiscal_year", pa.int32(), nullable=False),
    pa.field("fiscal_period", pa.string()),
    pa.field("quarter", pa.int32()),
    pa.field("accession_number", pa.string(), nullable=False),
    pa.field("filing_date", pa.string()),
    pa.field("report_date", pa.string()),
    pa.field("source_url", pa.string()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("status_reason", pa.string()),
    pa.field("risk_factors_text", pa.string()),
    pa.field("text_sha256", pa.string()),
    pa.field("extractor_version", pa.string()),
    pa.field("extracted_at", pa.string()),
    pa.field("amends_accession", pa.string()),
    pa.field("superseded_by", pa.string()),
])
AMENDMENT_COLUMNS = ("amends_accession", "superseded_by")

_SPARK_TYPES = {pa.string(): ("STRING", "string"), pa.bool_(): ("BOOLEAN", "boolean"), pa.int32(): ("INT", "int"),
                pa.int64(): ("LONG", "bigint")}


def catalog_columns(schema: pa.Schema = RAW_SCHEMA) -> list[ColumnInfo]:
    """The schema as catalog column descriptions."""
    return [ColumnInfo(f.name, *_SPARK_TYPES[f.type], position=i, nullable=f.nullable) for i, f in enumerate(schema)]


def landing_key(ref: FilingRef) -> str:
    """Path of a filing's landing JSON under LANDING_PREFIX: form_type=…/fiscal_year=…/[quarter=…/]cik=…/."""
    parts = [f"form_type={ref.form_type}", f"fiscal_year={ref.fiscal_year}"]
    if ref.form_type == "10-Q" and ref.quarter is not None:
        parts.append(f"quarter={ref.quarter}")
    parts.append(f"cik={ref.cik}")
    name = "risk_factors.json" if not ref.is_amendment else f"risk_factors_{ref.accession_nodash}.json"
    return "/".join(parts + [name])


def build_record(ref: FilingRef, status: str, text: str, reason: str | None, extractor_version: str,
                 extracted_at: str) -> dict[str, Any]:
    """The landing record of one filing; its keys are the raw table's columns."""
    return {
        "cik": ref.cik, "ticker": ref.ticker, "entity_name": ref.entity_name, "form_type": ref.form_type,
        "is_amendment": ref.is_amendment, "fiscal_year": ref.fiscal_year, "fiscal_period": ref.fiscal_period,
        "quarter": ref.quarter, "accession_number": ref.accession_number, "filing_date": ref.filing_date,
        "report_date": ref.report_date, "source_url": ref.url, "status": status, "status_reason": reason,
        "risk_factors_text": text, "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "extractor_version": extractor_version, "extracted_at": extracted_at,
        "amends_accession": None, "superseded_by": None,
    }


def supersessions(rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """(amendment → the filing it amends, filing → the amendment whose Risk Factors supersede its own).

    An amendment amends the original report of the same company, form and period (report date). Its Risk Factors
    supersede the original's, and those of any earlier amendment, only when it has its own section (status
    extracted): a Part III-only 10-K/A leaves the original's section current. The latest such amendment (by filing
    date, then accession number) supersedes all the others."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("report_date"):
            groups.setdefault((str(row["cik"]), str(row["form_type"]), str(row["report_date"])), []).append(row)
    amends: dict[str, str] = {}
    superseded: dict[str, str] = {}
    for group in groups.values():
        ordered = sorted(group, key=lambda r: (str(r.get("filing_date") or ""), str(r["accession_number"])))
        originals = [r for r in ordered if not r.get("is_amendment")]
        amendments = [r for r in ordered if r.get("is_amendment")]
        for amendment in amendments:
            earlier = [r for r in originals if _filed(r) <= _filed(amendment)] or originals
            if earlier:
                amends[str(amendment["accession_number"])] = str(earlier[-1]["accession_number"])
        replacing = [r for r in amendments if r.get("status") == "extracted"]
        if not replacing:
            continue
        latest = str(replacing[-1]["accession_number"])
        for row in originals + replacing[:-1]:
            superseded[str(row["accession_number"])] = latest
    return amends, superseded


def _filed(row: Mapping[str, Any]) -> tuple[str, str]:
    return str(row.get("filing_date") or ""), str(row["accession_number"])
