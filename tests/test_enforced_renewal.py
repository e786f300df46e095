"""Vended credentials that run out during a job, with the storage enforcing their end: used after it they are refused;
renewed by the job it goes on, losing nothing and writing nothing twice.

- The raw ingest (delta-rs and boto3 in the orchestrator): each landing write renews first (RenewingCredentials).
- The curated Spark job: S3A in the driver and in a separate executor JVM (local-cluster) asks the driver's credential
  endpoint, which vends again before the credentials end, so reads and writes go on inside a phase longer than the
  credentials' lifetime.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator

import dagster as dg
import pytest
from botocore.exceptions import ClientError
from deltalake import DeltaTable
from moto.server import ThreadedMotoServer

import aws_fixtures
from aws_fixtures import DATA_BUCKET, REGION, EnforcedWorld, build_enforced_world, enforcing, keys_of
from conftest import free_port
from governed_ft_dagster.defs.assets.curated import curated_training_table
from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
from governed_ft_dagster.defs.partitions import raw_partitions
from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.defs.resources.spark_jobs import LocalSparkResource

raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
PARTITION = "2024|10-K"
LANDING = f"arn:aws:s3:::{DATA_BUCKET}/raw/risk_factors/"
RAW_LOCATION = f"s3://{DATA_BUCKET}/raw/tables/risk_factors"
CURATED_KEY = "curated/tables/risk_factor_instructions"
CURATED_LOCATION = f"s3://{DATA_BUCKET}/{CURATED_KEY}"
# The Spark job's credentials last 6 seconds, as the catalog reports them and the storage enforces them; its read phase
# (read and curate the raw table) takes more than twice that (asserted), its write phase is measured and printed.
LIFETIME_S = 6


@pytest.fixture
def world(monkeypatch) -> Iterator[EnforcedWorld]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server._port}"
    world = build_enforced_world(url, monkeypatch)
    try:
        with enforcing(url):
            yield world
    finally:
        world.databricks.stop()
        server.stop()


def ingest(world: EnforcedWorld, edgar) -> dg.ExecuteInProcessResult:
    return dg.materialize([raw_risk_factors], partition_key=PARTITION, raise_on_error=False,
                          resources={"catalog": world.catalog_resource(), "edgar": edgar})


def admin_options(world: EnforcedWorld) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": world.admin["aws_access_key_id"], "AWS_REGION": REGION,
            "AWS_SECRET_ACCESS_KEY": world.admin["aws_secret_access_key"], "AWS_ENDPOINT_URL": world.moto_url,
            "AWS_ALLOW_HTTP": "true"}


def raw_accessions(world: EnforcedWorld) -> list[str]:
    table = DeltaTable(RAW_LOCATION, storage_options=admin_options(world))
    return sorted(r["accession_number"] for r in table.to_pyarrow_table(columns=["accession_number"]).to_pylist())


def landing_vends(world: EnforcedWorld) -> list[dict]:
    return [v for v in world.databricks.vended if v["operation"] == "PATH_READ_WRITE"]


def expired_refusals() -> list[tuple[str, str, str]]:
    return [r for r in aws_fixtures.REFUSALS if r[1] == "expired"]


def test_a_landing_credential_past_its_end_is_refused_and_the_renewing_ingest_goes_on(world, edgar):
    # Each landing session ends right after its first write. Reported valid for an hour, the job keeps it.
    aws_fixtures.EXPIRE_AFTER_ONE_WRITE.add(LANDING)
    try:
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
        materialized = result.asset_materializations_for_node("raw_risk_factors")[0]
        renewed = {k: v.value for k, v in materialized.metadata.items()}
    finally:
        aws_fixtures.EXPIRE_AFTER_ONE_WRITE.discard(LANDING)
    assert renewed["rejects"] == 0 and renewed["rows"] == kept["filings_in"]
    assert len(expired_refusals()) == expired_before
    assert len(landing_vends(world)) == 1 + renewed["rows"]
    assert len({v["access_key_id"] for v in landing_vends(world)}) == len(landing_vends(world))
    accessions = raw_accessions(world)
    assert len(accessions) == len(set(accessions)) == renewed["rows"]  # nothing lost, nothing written twice
    assert renewed["rows_inserted"] == renewed["rows"] - 1 and renewed["rows_updated"] == 0


def test_credentials_shorter_than_a_phase_are_renewed_inside_it_by_the_driver_and_the_executor(
        world, edgar, spark_home, tiny_base, capsys):
    ingest(world, edgar)  # the raw table, with credentials of the default hour
    world.databricks.credential_ttl_s = LIFETIME_S
    first_vend, expired_before = len(world.databricks.vended), len(expired_refusals())
    aws_fixtures.ALLOWED_S3.clear()
    spark = LocalSparkResource(home=str(spark_home), s3a=True, master="local-cluster[1,2,1024]")

    result = dg.materialize(
        [raw_risk_factors, curated_training_table], selection=dg.AssetSelection.assets(curated_training_table),
        resources={"catalog": world.catalog_resource(), "edgar": edgar, "spark": spark,
                   "base_model": BaseModelResource(model_ref=str(tiny_base))}, raise_on_error=False)

    assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("curated_training_table")[0]
                .metadata.items()}
    vends = world.databricks.vended[first_vend:]
    operation = {v["access_key_id"]: v["operation"] for v in vends}
    keys_by_jvm: dict[tuple[str, str], set[str]] = defaultdict(set)
    for key, _, process in aws_fixtures.ALLOWED_S3:
        assert key in operation  # every S3 request signed with credentials vended during the run
        if not process:
            continue  # not S3A: the orchestrator's own look at the raw table's version (delta-rs)
        keys_by_jvm[(process, "read" if operation[key] == "READ" else "write")].add(key)
    with capsys.disabled():
        print(f"\ncredential lifetime {LIFETIME_S} s; read phase {metadata['read_seconds']} s, write phase "
              f"{metadata['write_seconds']} s; vends {metadata['credentials_vended']}; distinct keys per JVM and "
              f"phase {sorted((phase, len(keys)) for (_, phase), keys in keys_by_jvm.items())}")

    assert metadata["read_seconds"] > 2 * LIFETIME_S  # the read phase outlives its first credentials twice over
    assert len(expired_refusals()) == expired_before  # no request was made with a credential past its end
    # Both JVMs (driver, executor) read on with renewed credentials inside the read phase, and both wrote with
    # credentials from the endpoint (the only place an executor can have them from).
    readers = {process: keys for (process, phase), keys in keys_by_jvm.items() if phase == "read"}
    writers = {process: keys for (process, phase), keys in keys_by_jvm.items() if phase == "write"}
    assert len(readers) == 2 and all(len(keys) >= 2 for keys in readers.values())
    assert len(writers) == 2 and set(writers) == set(readers)

    log = world.boto("s3").list_objects_v2(Bucket=DATA_BUCKET, Prefix=f"{CURATED_KEY}/_delta_log/")["Contents"]
    commits = [o["Key"].rsplit("/", 1)[1] for o in log if o["Key"].endswith(".json")]
    assert commits == ["00000000000000000000.json"]  # one commit
    curated = DeltaTable(CURATED_LOCATION, storage_options=admin_options(world))
    ids = [r["record_id"] for r in curated.to_pyarrow_table(columns=["record_id"]).to_pylist()]
    assert len(ids) == len(set(ids)) == metadata["rows_out"] > 0  # nothing lost, nothing written twice

    # The job's first credentials really ended: the storage refuses them now, as AWS refuses an expired session.
    first = next(v for v in vends if v["operation"] == "READ")
    s3 = world.boto("s3", keys_of({"AccessKeyId": first["access_key_id"], "SecretAccessKey": first["secret_access_key"],
                                   "SessionToken": first["session_token"]}))
    with pytest.raises(ClientError, match="ExpiredToken"):
        s3.list_objects_v2(Bucket=DATA_BUCKET, Prefix="raw/tables/risk_factors/")
