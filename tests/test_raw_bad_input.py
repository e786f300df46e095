"""A thousand malformed, truncated, mis-encoded and mutated real filings through the raw asset: nothing crashes, nothing is lost."""

from __future__ import annotations

import json
import random

import dagster as dg
import pytest
from deltalake import DeltaTable

from aws_fixtures import BUCKET, start_world
from conftest import SHARED_SAMPLES, free_port
from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
from governed_ft_dagster.defs.partitions import raw_partitions
from governed_ft_dagster.defs.resources.edgar import EdgarResource

raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
COMPANIES = 1000
FIRST_CIK = 9_970_001


def mutate(rng: random.Random, originals: list[bytes], index: int) -> bytes | None:
    """One bad document; None means the document is missing from the archive."""
    doc = originals[index % len(originals)]
    kind = index % 10
    if kind == 0:
        return doc[: rng.randrange(0, 200_000)]
    if kind == 1:
        start = rng.randrange(0, len(doc) // 2)
        return doc[:start] + doc[start + rng.randrange(1, 400_000):][:300_000]
    if kind == 2:
        return doc[:150_000].decode("utf-8", "replace").encode("utf-16")
    if kind == 3:
        return doc[:150_000].decode("utf-8", "replace").encode("cp1252", "replace")
    if kind == 4:
        return b""
    if kind == 5:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 5000)))
    if kind == 6:
        cut = rng.randrange(0, 150_000)
        return doc[:cut] + b"<div><table><tr><td>" * rng.randrange(1, 500) + doc[cut:150_000]
    if kind == 7:
        return b"<html><body><p>Item 1A. Risk Factors</p>" + b"<p>" * 1000
    if kind == 8:
        return None
    return doc[:120_000].replace(b"Risk Factors", b"R\xffisk \x00Factors")


@pytest.fixture
def bad_edgar(tmp_path) -> EdgarResource:
    rng = random.Random(7)
    originals = [p.read_bytes()[:600_000] for p in sorted((SHARED_SAMPLES / "filings").glob("*.html"))]
    root = tmp_path / "edgar"
    tickers = {}
    for i in range(COMPANIES):
        cik = f"{FIRST_CIK + i:010d}"
        accession = f"{cik}-24-{i:06d}"
        document = f"doc{i}.htm"
        tickers[str(i)] = {"cik_str": FIRST_CIK + i, "ticker": f"BAD{i}", "title": f"Bad Input {i} Inc"}
        feed = {"cik": cik, "name": f"Bad Input {i} Inc", "tickers": [f"BAD{i}"], "fiscalYearEnd": "1231",
                "filings": {"recent": {"accessionNumber": [accession], "form": ["10-K"], "reportDate": ["2024-12-31"],
                                        "filingDate": ["2025-02-20"], "primaryDocument": [document]}, "files": []}}
        (root / "submissions").mkdir(parents=True, exist_ok=True)
        (root / "submissions" / f"CIK{cik}.json").write_text(json.dumps(feed))
        body = mutate(rng, originals, i)
        if body is not None:
            target = root / "Archives" / "edgar" / "data" / str(FIRST_CIK + i) / accession.replace("-", "") / document
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
    huge = root / "Archives" / "edgar" / "data" / str(FIRST_CIK) / f"{FIRST_CIK:010d}24000000" / "doc0.htm"
    huge.write_bytes(b"<html><body>" + b"<p>Item 1A. Risk Factors padding</p>" * 3_000_000 + b"</body></html>")
    (root / "files").mkdir()
    (root / "files" / "company_tickers.json").write_text(json.dumps(tickers))
    return EdgarResource(source="folder", cache_dir=str(tmp_path / "cache"), local_root=str(root),
                         list_missing_documents=True)


def test_a_thousand_bad_filings_each_end_as_a_row(monkeypatch, bad_edgar):
    world, server = start_world(monkeypatch, free_port())
    try:
        result = dg.materialize([raw_risk_factors], partition_key="2024|10-K",
                                resources={"catalog": world.catalog_resource(), "edgar": bad_edgar})
        assert result.success
        metadata = result.asset_materializations_for_node("raw_risk_factors")[0].metadata
        options = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                   "AWS_ENDPOINT_URL": world.moto_url, "AWS_ALLOW_HTTP": "true"}
        rows = DeltaTable(f"s3://{BUCKET}/raw/tables/risk_factors", storage_options=options).to_pyarrow_table().to_pylist()
    finally:
        world.databricks.stop()
        server.stop()
    assert metadata["filings_in"].value == len(rows) == COMPANIES and metadata["rejects"].value == 0
    assert sorted(metadata["listed_accessions"].value) == sorted(r["accession_number"] for r in rows)
    missing = [r for r in rows if r["status"] == "fetch_failed"]  # the documents EDGAR's archive does not have
    assert len(missing) == COMPANIES // 10
    assert all(r["status_reason"].startswith("download failed: ") and not r["risk_factors_text"] for r in missing)
    statuses = {r["status"] for r in rows}
    assert statuses <= {"extracted", "no_material_changes", "incorporated_by_reference", "not_found", "error",
                        "fetch_failed"}
    errors = [r for r in rows if r["status"] == "error"]
    assert errors and all(r["status_reason"] for r in errors)
    huge = next(r for r in rows if r["accession_number"] == f"{FIRST_CIK:010d}-24-000000")
    assert huge["status"] == "error" and "larger than the limit" in huge["status_reason"]
