"""Vended credentials that run out during a job, with the storage enforcing: used after their end they are refused;
renewed by the job (RenewingCredentials) it goes on, losing nothing and writing nothing twice."""

from __future__ import annotations

from typing import Iterator

import dagster as dg
import pytest
from deltalake import DeltaTable
from moto.server import ThreadedMotoServer

import aws_fixtures
from aws_fixtures import DATA_BUCKET, REGION, EnforcedWorld, build_enforced_world, enforcing
from conftest import free_port
from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
from governed_ft_dagster.defs.partitions import raw_partitions

raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
PARTITION = "2024|10-K"
LANDING = f"arn:aws:s3:::{DATA_BUCKET}/raw/risk_factors/"


@pytest.fixture
def world(monkeypatch) -> Iterator[EnforcedWorld]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server._port}"
    world = build_enforced_world(url, monkeypatch)
    aws_fixtures.EXPIRE_AFTER_ONE_WRITE.add(LANDING)
    try:
        with enforcing(url):
            yield world
    finally:
        aws_fixtures.EXPIRE_AFTER_ONE_WRITE.discard(LANDING)
        world.databricks.stop()
        server.stop()


def ingest(world: EnforcedWorld, edgar) -> dg.ExecuteInProcessResult:
    return dg.materialize([raw_risk_factors], partition_key=PARTITION, raise_on_error=False,
                          resources={"catalog": world.catalog_resource(), "edgar": edgar})


def raw_accessions(world: EnforcedWorld) -> list[str]:
    options = {"AWS_ACCESS_KEY_ID": world.admin["aws_access_key_id"], "AWS_REGION": REGION,
               "AWS_SECRET_ACCESS_KEY": world.admin["aws_secret_access_key"], "AWS_ENDPOINT_URL": world.moto_url,
               "AWS_ALLOW_HTTP": "true"}
    table = DeltaTable(f"s3://{DATA_BUCKET}/raw/tables/risk_factors", storage_options=options)
    return sorted(r["accession_number"] for r in table.to_pyarrow_table(columns=["accession_number"]).to_pylist())


def landing_vends(world: EnforcedWorld) -> list[dict]:
    return [v for v in world.databricks.vended if v["operation"] == "PATH_READ_WRITE"]


def expired_refusals() -> list[tuple[str, str, str]]:
    return [r for r in aws_fixtures.REFUSALS if r[1] == "expired"]


def test_a_landing_credential_past_its_end_is_refused_and_the_renewing_ingest_goes_on(world, edgar):
    # Each landing session ends right after its first write. Reported valid for an hour, the job keeps it.
    world.databricks.credential_ttl_s = 3600
    expired_before = len(expired_refusals())
    failed = ingest(world, edgar)
    assert not failed.success  # a filing that could not be landed has no row: the run fails, naming each one
    (failure,) = failed.get_step_failure_events()
    kept = {k: v.value for k, v in failure.step_failure_data.user_failure_data.metadata.items()}
    refused = [r["reason"] for r in kept["rejects_sample"]]
    assert kept["filings_in"] >= 3 and len(landing_vends(world)) == 1
    assert kept["rows"] == 1 and len(refused) == kept["filings_in"] - 1
    message = failure.event_specific_data.error.message
    assert f"{len(refused)} of the {kept['filings_in']} filings listed for {PARTITION} have no row" in message
    assert all(r["key"] in message for r in kept["rejects_sample"][:5]) and "landing failed" in message
    assert all("ExpiredToken" in reason for reason in refused), refused
    assert len(expired_refusals()) - expired_before == len(refused)
    assert len(raw_accessions(world)) == 1

    # Reported as ending within the renewal window: the job vends again before every write and goes on.
    world.databricks.credential_ttl_s = 600
    world.databricks.vended.clear()
    expired_before = len(expired_refusals())
    result = ingest(world, edgar)
    assert result.success
    renewed = {k: v.value for k, v in result.asset_materializations_for_node("raw_risk_factors")[0].metadata.items()}
    assert renewed["rejects"] == 0 and renewed["rows"] == kept["filings_in"]
    assert len(expired_refusals()) == expired_before
    assert len(landing_vends(world)) == 1 + renewed["rows"]
    assert len({v["access_key_id"] for v in landing_vends(world)}) == len(landing_vends(world))
    accessions = raw_accessions(world)
    assert len(accessions) == len(set(accessions)) == renewed["rows"]  # nothing lost, nothing written twice
    assert renewed["rows_inserted"] == renewed["rows"] - 1 and renewed["rows_updated"] == 0
