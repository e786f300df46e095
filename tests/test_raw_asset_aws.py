"""raw_risk_factors on the aws path: fake Databricks workspace for the catalog, moto for S3 and secrets."""

from __future__ import annotations

import json
import threading
import time

import dagster as dg
import pytest
from deltalake import DeltaTable

from aws_fixtures import BUCKET, CATALOG, application_id, secret_value, start_world
from conftest import SHARED_SAMPLES, free_port
from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
from governed_ft_dagster.defs.partitions import raw_partitions
from governed_ft_dagster.catalog.base import Principal

raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
SHARED = SHARED_SAMPLES


@pytest.fixture
def world(monkeypatch):
    world, server = start_world(monkeypatch, free_port())
    yield world
    world.databricks.stop()
    server.stop()



def materialize(world, edgar, partition: str):
    return dg.materialize([raw_risk_factors], partition_key=partition,
                          resources={"catalog": world.catalog_resource(), "edgar": edgar}, raise_on_error=False)


def raw_rows(world) -> list[dict]:
    options = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": world.moto_url, "AWS_ALLOW_HTTP": "true"}
    return DeltaTable(f"s3://{BUCKET}/raw/tables/risk_factors", storage_options=options).to_pyarrow_table().to_pylist()


def test_raw_asset_lands_json_merges_delta_and_registers_the_table(world, edgar):
    result = materialize(world, edgar, "2024|10-K")
    assert result.success
    metadata = result.asset_materializations_for_node("raw_risk_factors")[0].metadata
    rows = raw_rows(world)
    assert metadata["rows"].value == len(rows) > 0
    assert metadata["filings_in"].value == metadata["rows"].value + metadata["rejects"].value
    assert {r["form_type"] for r in rows} == {"10-K"} and {r["fiscal_year"] for r in rows} == {2024}
    apple = next(r for r in rows if r["accession_number"] == "0000320193-24-000123")
    assert apple["status"] == "extracted" and apple["risk_factors_text"].startswith("Item 1A")
    s3 = world.boto("s3")
    landing = json.loads(s3.get_object(Bucket=BUCKET, Key="raw/risk_factors/form_type=10-K/fiscal_year=2024/"
                                       "cik=0000320193/risk_factors.json")["Body"].read())
    assert landing["accession_number"] == apple["accession_number"] and landing["text_sha256"] == apple["text_sha256"]
    table = world.databricks.tables[f"{CATALOG}.raw.risk_factors"]
    assert table["storage_location"] == f"s3://{BUCKET}/raw/tables/risk_factors"
    assert table["owner"] == application_id(Principal.INGEST)
    assert world.databricks.holds(application_id(Principal.PREPROCESS), "table", f"{CATALOG}.raw.risk_factors", "SELECT")
    assert not world.databricks.holds(application_id(Principal.TRAIN), "table", f"{CATALOG}.raw.risk_factors", "SELECT")
    assert all(v["principal"] == application_id(Principal.INGEST) for v in world.databricks.vended)


def test_materializing_again_adds_no_rows(world, edgar):
    assert materialize(world, edgar, "2024|10-K").success
    before = sorted(r["accession_number"] for r in raw_rows(world))
    again = materialize(world, edgar, "2024|10-K")
    assert again.success
    assert sorted(r["accession_number"] for r in raw_rows(world)) == before
    assert again.asset_materializations_for_node("raw_risk_factors")[0].metadata["rows_inserted"].value == 0


def test_ingest_without_modify_on_raw_fails_before_any_write(world, edgar):
    world.databricks.revoke("schema", f"{CATALOG}.raw", application_id(Principal.INGEST), "MODIFY")
    result = materialize(world, edgar, "2024|10-K")
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "ingest" in failure and f"{CATALOG}.raw" in failure and "MODIFY" in failure
    assert world.databricks.vended == []
    assert "Contents" not in world.boto("s3").list_objects_v2(Bucket=BUCKET)
    assert secret_value(Principal.INGEST) not in failure


def test_raw_checks_hold_on_the_shared_filings(world, edgar):
    from governed_ft_dagster.defs.checks import raw_checks

    result = dg.materialize([raw_risk_factors, *raw_checks(raw_risk_factors.partitions_def)],
                            partition_key="2024|10-K",
                            resources={"catalog": world.catalog_resource(), "edgar": edgar})
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"raw_accessions_unique", "raw_located_share", "raw_text_lengths",
                                "raw_rows_cover_listing"}
    assert all(e.passed for e in evaluations.values()), {k: e.description for k, e in evaluations.items()}
    assert evaluations["raw_located_share"].metadata["share_located"].value >= 0.8
    assert {e.metadata["partition"].value for e in evaluations.values()} == {"2024|10-K"}
    assert all(e.partition == "2024|10-K" for e in evaluations.values())


def landed_accessions(world) -> list[str]:
    s3 = world.boto("s3")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="raw/risk_factors/")
            for o in page.get("Contents", [])]
    return sorted(json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read())["accession_number"] for k in keys)


def failure_message(result) -> str:
    (failure,) = result.get_step_failure_events()
    return failure.event_specific_data.error.message


def test_a_catalog_stopped_mid_ingest_fails_the_run_and_the_rerun_loses_and_duplicates_nothing(world, edgar):
    fake, port = world.databricks, world.databricks.port
    resources = {"catalog": world.catalog_resource(retry_timeout_s=2), "edgar": edgar}
    run = lambda partition: dg.materialize([raw_risk_factors], partition_key=partition, resources=resources,  # noqa: E731
                                           raise_on_error=False)
    uc = "/api/2.1/unity-catalog"
    # Stopped after the first Delta commit, when the new table is being registered.
    crashed = fake.crash_on("POST", rf"{uc}/tables")
    first = run("2023|10-K")
    assert crashed.is_set() and not first.success
    assert "unreachable" in failure_message(first) or "could not reach" in failure_message(first).lower()
    assert f"{CATALOG}.raw.risk_factors" not in fake.tables and raw_rows(world)
    fake.start(port)
    assert run("2023|10-K").success
    # Stopped when the second partition asks for the table's credentials to merge.
    crashed = fake.crash_on("POST", r"/api/2\.0/unity-catalog/temporary-table-credentials")
    second = run("2024|10-K")
    assert crashed.is_set() and not second.success
    fake.start(port)
    assert run("2024|10-K").success
    rows = [r["accession_number"] for r in raw_rows(world)]
    assert len(rows) == len(set(rows)) and sorted(rows) == landed_accessions(world)
    again = run("2024|10-K")
    assert again.asset_materializations_for_node("raw_risk_factors")[0].metadata["rows_inserted"].value == 0


def test_a_catalog_back_within_the_retry_window_costs_the_run_nothing(world, edgar):
    fake, port = world.databricks, world.databricks.port
    crashed = fake.crash_on("POST", r"/api/2\.1/unity-catalog/tables")
    restart = threading.Thread(target=lambda: crashed.wait(30) and (time.sleep(1.0), fake.start(port)))
    restart.start()
    result = dg.materialize([raw_risk_factors], partition_key="2024|10-K", raise_on_error=False,
                            resources={"catalog": world.catalog_resource(retry_timeout_s=20), "edgar": edgar})
    restart.join()
    assert crashed.is_set() and result.success
    assert f"{CATALOG}.raw.risk_factors" in fake.tables
    rows = [r["accession_number"] for r in raw_rows(world)]
    assert len(rows) == len(set(rows)) and sorted(rows) == landed_accessions(world)


def test_landing_credentials_near_expiry_are_vended_again_during_the_ingest(world, edgar):
    world.databricks.credential_ttl_s = 600  # inside the 15-minute renewal window: every use renews
    result = materialize(world, edgar, "2024|10-K")
    assert result.success
    rows = result.asset_materializations_for_node("raw_risk_factors")[0].metadata["rows"].value
    landing = [v for v in world.databricks.vended if v["operation"] == "PATH_READ_WRITE"]
    assert rows > 1 and len(landing) == 1 + rows  # the up-front vend, then one per landed filing
    world.databricks.credential_ttl_s = 3600
    world.databricks.vended.clear()
    assert materialize(world, edgar, "2024|10-Q").success
    assert len([v for v in world.databricks.vended if v["operation"] == "PATH_READ_WRITE"]) == 1


def test_a_company_whose_listing_fails_fails_the_run_by_name_after_the_others_are_merged(world, edgar):
    from pathlib import Path

    (Path(edgar.local_root) / "submissions" / "CIK0000320193.json").write_text("{")  # Apple's listing: unreadable
    result = materialize(world, edgar, "2024|10-K")
    assert not result.success
    message = failure_message(result)
    assert "1 company could not be listed for 2024|10-K, so their filings are missing: AAPL (0000320193)" in message
    assert "invalid JSON" in message and "run the partition again" in message
    rows = raw_rows(world)
    assert rows and "0000320193" not in {r["cik"] for r in rows}  # the other companies' filings are kept
