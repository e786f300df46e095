"""The new-filings sensor and the EDGAR refresh schedule."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import dagster as dg

from conftest import SHARED_SAMPLES
from governed_ft_dagster.defs.schedules import edgar_refresh_schedule
from governed_ft_dagster.edgar.sample_corpus import mirror_shared_samples
from governed_ft_dagster.refresh import RefreshCursor
from governed_ft_dagster.defs.resources.edgar import EdgarResource
from governed_ft_dagster.defs.sensors import new_filings_sensor
from governed_ft_dagster.settings import load_settings

SETTINGS = load_settings({})


def add_filing(root: Path, cik: str, accession: str, form: str, report_date: str, document: str) -> None:
    """Append one filing to a company's submissions feed, as EDGAR does when it is accepted."""
    path = root / "submissions" / f"CIK{cik}.json"
    feed = json.loads(path.read_text())
    recent = feed["filings"]["recent"]
    for column in recent:
        recent[column].insert(0, "")
    recent["accessionNumber"][0], recent["form"][0] = accession, form
    recent["reportDate"][0], recent["filingDate"][0], recent["primaryDocument"][0] = report_date, "2024-11-01", document
    path.write_text(json.dumps(feed))
    target = root / "Archives" / "edgar" / "data" / str(int(cik)) / accession.replace("-", "") / document
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("<html><body><p>PART II</p><p>Item 1A. Risk Factors</p><p>New risk.</p></body></html>")


def tick(edgar: EdgarResource, cursor: str | None):
    context = dg.build_sensor_context(cursor=cursor, resources={"edgar": edgar})
    result = new_filings_sensor(SETTINGS)(context)
    return result, context.cursor


def test_sensor_requests_exactly_the_new_partition_then_nothing(tmp_path):
    root = tmp_path / "edgar"
    mirror_shared_samples(SHARED_SAMPLES, root)
    edgar = EdgarResource(source="folder", cache_dir=str(tmp_path / "cache"), local_root=str(root))
    baseline, cursor = tick(edgar, None)
    assert isinstance(baseline, dg.SkipReason)
    assert set(RefreshCursor.loads(cursor).seen) >= {"0000320193", "0001045810"}
    add_filing(root, "0000320193", "0000320193-24-000200", "10-Q", "2024-06-29", "aapl-20240629.htm")
    requests, cursor = tick(edgar, cursor)
    assert [r.partition_key for r in requests] == ["2024|10-Q"]
    assert "0000320193-24-000200" in requests[0].run_key
    again, cursor = tick(edgar, cursor)
    assert isinstance(again, dg.SkipReason)


def test_sensor_scans_a_slice_per_tick_and_wraps(tmp_path):
    root = tmp_path / "edgar"
    mirror_shared_samples(SHARED_SAMPLES, root)
    edgar = EdgarResource(source="folder", cache_dir=str(tmp_path / "cache"), local_root=str(root), sensor_batch_size=2)
    companies = len(edgar.default_universe())
    cursor = None
    offsets = []
    for _ in range(companies):
        _, cursor = tick(edgar, cursor)
        offsets.append(RefreshCursor.loads(cursor).offset)
    assert offsets[0] == 2 and max(offsets) < companies
    assert len(RefreshCursor.loads(cursor).seen) == len({cik for cik in edgar.filing_source().resolve(edgar.default_universe()).values()})


def test_schedule_requests_every_raw_partition():
    context = dg.build_schedule_context(scheduled_execution_time=datetime.datetime(2026, 1, 5, 6))
    requests = edgar_refresh_schedule(SETTINGS)(context)
    assert sorted(r.partition_key for r in requests) == ["2023|10-K", "2023|10-Q", "2024|10-K", "2024|10-Q"]
    assert len({r.run_key for r in requests}) == 4
