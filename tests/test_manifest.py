"""The training-data manifest, its fingerprint, impact queries over manifests, amendments, retention arithmetic and
reading a vacuumed Delta version: pure functions and delta-rs on local folders, no server."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from governed_ft_dagster.edgar.landing import supersessions
from governed_ft_dagster.lineage import manifest as m
from governed_ft_dagster.retention import RetentionError, interval, table_properties, version_retention
from governed_ft_dagster.storage import TableVersionGone, read_version

MODEL = "main.ml.risk_model"


def record(accession: str, ordinal: int, split: str, cik: str = "0000000001", text: str = "body",
           **extra) -> dict:
    return {"record_id": f"{accession}-{ordinal}", "accession_number": accession, "cik": cik, "split": split,
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": f"{text} {ordinal}"},
                         {"role": "assistant", "content": "heading"}], "text_sha256": "ab" * 32, **extra}


TRAIN = [record("0000000001-24-000001", i, "train") for i in range(3)] + \
        [record("0000000002-24-000007", 1, "train", cik="0000000002")]
VALIDATION = [record("0000000003-24-000002", i, "validation", cik="0000000003") for i in range(2)]


def build(train=TRAIN, validation=VALIDATION, **kwargs) -> dict:
    return m.build_manifest(train, validation, table="main.curated.records", delta_version=4,
                            source_table="main.raw.filings", source_version=9, **kwargs)


def test_the_fingerprint_is_one_hash_over_the_record_hashes_in_canonical_order():
    manifest = build()
    # Written out independently of the code under test: canonical JSON of the five fields, sha256 each, ordered by
    # (split, accession, record id), one sha256 over the concatenated digests.
    digests = []
    for r in sorted(TRAIN + VALIDATION, key=lambda r: (r["split"], r["accession_number"], r["record_id"])):
        canonical = json.dumps({k: r[k] for k in ("record_id", "accession_number", "cik", "split", "messages")},
                               sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        digests.append(hashlib.sha256(canonical).digest())
    assert manifest["fingerprint"] == "sha256:" + hashlib.sha256(b"".join(digests)).hexdigest()
    assert m.fingerprint(list(reversed(TRAIN + VALIDATION))) == manifest["fingerprint"]  # read order is irrelevant
    assert manifest["counts"] == {"records": 6, "train": 4, "validation": 2, "filings": 3, "companies": 3}
    assert set(manifest["splits"]["train"]) == {"0000000001-24-000001", "0000000002-24-000007"}
    entry = manifest["splits"]["validation"]["0000000003-24-000002"]
    assert entry["cik"] == "0000000003" and len(entry["records"]) == 2 and entry["text_sha256"] == "ab" * 8
    assert m.loads(m.dumps(manifest)) == manifest
    assert m.filings_by_company(manifest)["train"] == {"0000000001": ["0000000001-24-000001"],
                                                       "0000000002": ["0000000002-24-000007"]}


def test_compare_names_each_record_added_removed_or_changed_by_filing():
    manifest = build()
    assert m.compare(manifest, TRAIN + VALIDATION).match
    changed = [dict(r) for r in TRAIN + VALIDATION]
    changed[1] = {**changed[1], "messages": [*changed[1]["messages"][:2], {"role": "assistant", "content": "edited"}]}
    del changed[4]
    changed.append(record("0000000002-24-000007", 9, "train", cik="0000000002"))
    changed.append(record("0000000009-24-000001", 0, "test_only"))  # another split is not training data
    difference = m.compare(manifest, changed)
    assert not difference.match
    assert difference.changed == {"0000000001-24-000001": ["0000000001-24-000001-1"]}
    assert difference.removed == {"0000000003-24-000002": ["0000000003-24-000002-0"]}
    assert difference.added == {"0000000002-24-000007": ["0000000002-24-000007-9"]}
    assert any("1 record changed: 0000000001-24-000001-1" in line for line in difference.lines())
    # a record moved to the other split is a change of that split's records, named as such
    moved = [dict(r) for r in TRAIN + VALIDATION]
    moved[0] = {**moved[0], "split": "validation"}
    assert m.compare(manifest, moved).removed == {"0000000001-24-000001": ["0000000001-24-000001-0"]}


def test_impact_lists_every_version_by_filing_or_company_and_marks_superseded_text():
    original, amendment = "0000000001-24-000001", "0000000001-24-000050"
    v1 = build()
    v2 = build(train=[record(amendment, 0, "train", amends_accession=original), *TRAIN[3:]])
    manifests = [(MODEL, "1", v1), (MODEL, "2", v2)]

    by_original = m.impact(manifests, accession=original).as_dict()
    assert [(u["version"], u["accession_number"], u["split"]) for u in by_original["uses"]] == [
        ("1", original, "train"), ("2", amendment, "train")]
    assert by_original["uses"][0]["trained_on_superseded_text"] and by_original["uses"][0]["superseded_by"] == [
        amendment]
    assert by_original["uses"][1]["amends"] == original and not by_original["uses"][1]["trained_on_superseded_text"]
    assert by_original["superseded"] == {original: [amendment]}
    assert m.impact(manifests, accession=amendment).as_dict()["model_versions"] == [
        {"model": MODEL, "version": "1"}, {"model": MODEL, "version": "2"}]

    by_company = m.impact(manifests, cik="2").as_dict()
    assert by_company["query"] == {"cik": "0000000002"}
    assert [(u["version"], u["records"]) for u in by_company["uses"]] == [("1", 1), ("2", 1)]
    assert m.impact(manifests, cik="0000000777").as_dict()["uses"] == []
    with pytest.raises(m.ManifestError):
        m.impact(manifests, accession=original, cik="1")


def test_raw_fingerprint_covers_identity_status_text_and_supersession():
    rows = [{"accession_number": "a", "cik": "1", "status": "extracted", "text_sha256": "x", "superseded_by": None,
             "risk_factors_text": "not hashed"}, {"accession_number": "b", "cik": "1", "status": "not_found",
                                                  "text_sha256": "y", "superseded_by": None}]
    fingerprint = m.raw_fingerprint(rows)
    assert m.raw_fingerprint(list(reversed(rows))) == fingerprint
    assert m.raw_fingerprint([{**rows[0], "risk_factors_text": "other"}, rows[1]]) == fingerprint
    for key, value in (("status", "error"), ("text_sha256", "z"), ("superseded_by", "c")):
        assert m.raw_fingerprint([{**rows[0], key: value}, rows[1]]) != fingerprint


def filing(accession: str, filed: str, status: str = "extracted", amendment: bool = False,
           report: str = "2024-12-31", form: str = "10-K") -> dict:
    return {"cik": "0000000001", "form_type": form, "report_date": report, "filing_date": filed,
            "accession_number": accession, "is_amendment": amendment, "status": status}


def test_an_amendment_with_its_own_risk_factors_supersedes_the_filing_it_amends():
    rows = [filing("A-1", "2025-02-10"), filing("A-2", "2025-04-28", "not_found", amendment=True),
            filing("A-3", "2025-06-01", amendment=True), filing("A-4", "2025-08-01", amendment=True),
            filing("B-1", "2024-02-10", report="2023-12-31"),
            filing("Q-1", "2025-05-01", "no_material_changes", report="2025-03-31", form="10-Q"),
            filing("Q-2", "2025-06-01", amendment=True, report="2025-03-31", form="10-Q")]
    amends, superseded = supersessions(rows)
    assert amends == {"A-2": "A-1", "A-3": "A-1", "A-4": "A-1", "Q-2": "Q-1"}
    # the latest amendment with a section supersedes the original and the earlier one; a Part III-only
    # amendment (not_found) supersedes nothing and is superseded by nothing; another year is untouched
    assert superseded == {"A-1": "A-4", "A-3": "A-4", "Q-1": "Q-2"}


def test_retention_properties_and_the_moment_a_version_may_be_removed():
    assert table_properties(3650) == {"delta.logRetentionDuration": "interval 3650 days",
                                      "delta.deletedFileRetentionDuration": "interval 3650 days"}
    assert interval("interval 1 weeks") == dt.timedelta(days=7) and interval("30 days") == dt.timedelta(days=30)
    with pytest.raises(RetentionError):
        table_properties(0)
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    times = {0: t0, 1: t0 + dt.timedelta(days=10), 2: t0 + dt.timedelta(days=40)}
    # Delta's defaults: files removed at version 1 may go 7 days later; the log entry of version 0 after 30 days.
    assert version_retention("t", 0, times, {}).expires == t0 + dt.timedelta(days=17)
    long = table_properties(3650)
    kept = version_retention("t", 1, times, long)
    assert kept.expires == t0 + dt.timedelta(days=10 + 3650) and "log entry" in kept.reason
    assert version_retention("t", 2, times, {}).expires is None  # the latest version is never removed
    gone = version_retention("t", 0, {1: times[1], 2: times[2]}, long)
    assert gone.days_left(t0) < 0 and "log entry is gone" in gone.reason


def test_read_version_reports_a_vacuumed_version_as_gone(tmp_path):
    location = str(tmp_path / "table")
    write_deltalake(location, pa.table({"a": [1, 2]}))
    write_deltalake(location, pa.table({"a": [3]}), mode="overwrite")
    assert read_version(location, {}, 0).to_pylist() == [{"a": 1}, {"a": 2}]
    DeltaTable(location).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with pytest.raises(TableVersionGone, match="deleted by VACUUM"):
        read_version(location, {}, 0)
    assert read_version(location, {}, 1).to_pylist() == [{"a": 3}]
    with pytest.raises(TableVersionGone, match="created anew: its latest version is"):
        read_version(location, {}, 7)


def test_an_amendment_arriving_alone_updates_the_stored_row_it_supersedes(tmp_path):
    from governed_ft_dagster.edgar.landing import RAW_SCHEMA
    from governed_ft_dagster.ingest import CHANGED_WHEN as changed
    from governed_ft_dagster.ingest import IngestReport, with_supersessions
    from governed_ft_dagster.storage import merge_rows, read_delta

    def row(accession: str, filed: str, amendment: bool = False) -> dict:
        return {**{f.name: None for f in RAW_SCHEMA}, **filing(accession, filed, amendment=amendment),
                "fiscal_year": 2024, "risk_factors_text": f"text of {accession}", "text_sha256": accession,
                "extractor_version": "1", "ticker": "TST"}

    location = str(tmp_path / "raw")
    first = with_supersessions(location, {}, [row("A-1", "2025-02-10")], False, IngestReport())
    merge_rows(location, pa.Table.from_pylist(first, schema=RAW_SCHEMA), "accession_number", {}, changed)
    report = IngestReport()
    batch = with_supersessions(location, {}, [row("A-3", "2025-06-01", amendment=True)], True, report)
    assert [(r["accession_number"], r["superseded_by"], r["amends_accession"]) for r in batch] == [
        ("A-3", None, "A-1"), ("A-1", "A-3", None)]
    assert batch[1]["risk_factors_text"] == "text of A-1"  # the stored row whole, not only its keys
    merged = merge_rows(location, pa.Table.from_pylist(batch, schema=RAW_SCHEMA), "accession_number", {}, changed)
    assert (merged.inserted, merged.updated, report.superseded) == (1, 1, {"A-1": "A-3"})
    rows, _ = read_delta(location, {}, columns=["accession_number", "status", "superseded_by"])
    assert sorted(rows.to_pylist(), key=lambda r: r["accession_number"]) == [
        {"accession_number": "A-1", "status": "extracted", "superseded_by": "A-3"},
        {"accession_number": "A-3", "status": "extracted", "superseded_by": None}]
