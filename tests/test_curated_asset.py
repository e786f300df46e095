"""curated_training_table on the aws path: fake Databricks workspace, moto S3 and secrets, local spark-submit."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from deltalake import DeltaTable

from aws_fixtures import BUCKET, CATALOG, application_id, secret_value, start_world
from conftest import SHARED_SAMPLES, free_port
from governed_ft_dagster.defs.assets.curated import curated_training_table
from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
from governed_ft_dagster.defs.partitions import raw_partitions
from governed_ft_dagster.catalog.base import Principal, VendedCredentials
from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.defs.resources.spark_jobs import LocalSparkResource

raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
REPO = Path(__file__).resolve().parents[1]
SHARED = SHARED_SAMPLES
JOB_SCRIPT = REPO / "job_scripts" / "preprocess_risk_factors.py"
PARTITIONS = ("2024|10-K", "2023|10-K", "2023|10-Q", "2024|10-Q")
RAW = f"{CATALOG}.raw.risk_factors"
CURATED = f"{CATALOG}.curated.risk_factor_instructions"
CURATED_LOCATION = f"s3://{BUCKET}/curated/tables/risk_factor_instructions"
pytestmark = pytest.mark.skipif(not (SHARED / "filings").is_dir(), reason="the shared SEC samples are not present")





@pytest.fixture
def world(monkeypatch):
    world, server = start_world(monkeypatch, free_port())
    yield world
    world.databricks.stop()
    server.stop()



def resources(world, edgar, spark_home, tiny_base) -> dict:
    return {"catalog": world.catalog_resource(), "edgar": edgar,
            "spark": LocalSparkResource(home=str(spark_home), s3a=True),
            "base_model": BaseModelResource(model_ref=str(tiny_base))}


def materialize_raw(world, edgar, partitions=PARTITIONS) -> None:
    for partition in partitions:
        result = dg.materialize([raw_risk_factors], partition_key=partition,
                                resources={"catalog": world.catalog_resource(), "edgar": edgar})
        assert result.success, partition


def materialize_curated(resource_map: dict, instance: dg.DagsterInstance | None = None):
    return dg.materialize([raw_risk_factors, curated_training_table], resources=resource_map, instance=instance,
                          selection=dg.AssetSelection.assets(curated_training_table), raise_on_error=False)


def s3_options(world) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": world.moto_url, "AWS_ALLOW_HTTP": "true"}


def spark_runs(home: Path) -> list[Path]:
    return sorted((home / "spark-jobs").glob("*")) if (home / "spark-jobs").is_dir() else []


def load_job():
    spec = importlib.util.spec_from_file_location("preprocess_job_under_test", JOB_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def job_argv(world, tiny_base, *extra: str) -> list[str]:
    access = world.catalog_resource().job_access(Principal.PREPROCESS)
    return [*access.as_args(), "--source-table", RAW, "--target-table", CURATED, "--target-location",
            CURATED_LOCATION, "--tokenizer-dir", str(tiny_base), "--run-id", "run-direct",
            "--s3-endpoint-url", world.moto_url, *extra]


def test_curated_table_is_written_through_vended_credentials_registered_and_granted(world, edgar, spark_home,
                                                                                    tiny_base):
    materialize_raw(world, edgar)
    raw = DeltaTable(f"s3://{BUCKET}/raw/tables/risk_factors", storage_options=s3_options(world))
    raw_version, raw_rows = raw.version(), raw.to_pyarrow_table().num_rows
    vended_before = len(world.databricks.vended)
    instance = dg.DagsterInstance.ephemeral()

    result = materialize_curated(resources(world, edgar, spark_home, tiny_base), instance)

    assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    metadata = result.asset_materializations_for_node("curated_training_table")[0].metadata
    table = world.databricks.tables[CURATED]
    assert table["storage_location"] == CURATED_LOCATION and table["owner"] == application_id(Principal.PREPROCESS)
    assert table["properties"]["governed_ft.source_table"] == RAW
    assert table["properties"]["governed_ft.source_version"] == str(raw_version)
    assert {c["name"] for c in table["columns"]} >= {"record_id", "cik", "messages", "n_tokens", "split"}
    assert world.databricks.holds(application_id(Principal.TRAIN), "table", CURATED, "SELECT")
    assert not world.databricks.holds(application_id(Principal.INGEST), "table", CURATED, "SELECT")

    curated = DeltaTable(CURATED_LOCATION, storage_options=s3_options(world))
    rows = curated.to_pyarrow_table().to_pylist()
    assert curated.metadata().configuration["governed_ft.source_version"] == str(raw_version)
    assert metadata["catalog_table"].value == CURATED and metadata["source_table"].value == RAW
    assert metadata["source_version"].value == raw_version and metadata["delta_version"].value == curated.version()
    assert metadata["rows_in"].value == raw_rows and metadata["rows_out"].value == len(rows) > 100
    assert sum(metadata["rejects"].value.values()) == metadata["rejects_total"].value > 0
    assert metadata["balanced"].value is True
    assert sum(s["records"] for s in metadata["splits"].value.values()) == len(rows)
    run_dir = spark_home / "spark-jobs" / metadata["job_run_id"].value
    assert metadata["job_run_kind"].value == "LocalSparkJobRun" and run_dir.is_dir()
    assert metadata["job_properties"].value["exit_code"] == "0"
    assert {r["source_version"] for r in rows} == {raw_version} and {r["run_id"] for r in rows} == {result.run_id}

    assert all(r["n_tokens"] <= 1024 for r in rows) and metadata["token_length"].value["max"] <= 1024
    from governed_ft_dagster.training.base_model import load_tokenizer

    tokenizer = load_tokenizer(tiny_base)
    for row in rows[:: max(1, len(rows) // 12)]:
        assert len(tokenizer.apply_chat_template(row["messages"], tokenize=True)["input_ids"]) == row["n_tokens"]
    companies = {split: {r["cik"] for r in rows if r["split"] == split} for split in ("train", "validation")}
    assert companies["train"] and companies["validation"] and not companies["train"] & companies["validation"]

    vended = world.databricks.vended[vended_before:]
    assert {v["principal"] for v in vended} == {application_id(Principal.PREPROCESS)}
    assert {(v["operation"], v["location"]) for v in vended} == {
        ("READ", f"s3://{BUCKET}/raw/tables/risk_factors"), ("PATH_CREATE_TABLE", CURATED_LOCATION)}
    log = (run_dir / "output.log").read_text(errors="replace")
    events = json.dumps([str(e) for e in result.all_events])
    for secret in [secret_value(Principal.PREPROCESS), *(v["secret_access_key"] for v in vended),
                   *(v["session_token"] for v in vended)]:
        assert secret not in log and secret not in events

    # Unchanged raw table and job inputs: the step succeeds without a job and without a materialization event.
    jobs_before = sorted((spark_home / "spark-jobs").iterdir())
    again = materialize_curated(resources(world, edgar, spark_home, tiny_base), instance)
    assert again.success and again.asset_materializations_for_node("curated_training_table") == []
    assert sorted((spark_home / "spark-jobs").iterdir()) == jobs_before
    assert [r.storage_id for r in instance.fetch_materializations(curated_training_table.key, limit=5).records] == [
        instance.fetch_materializations(curated_training_table.key, limit=1).records[0].storage_id]
    assert any("up to date" in (entry.user_message or "") for entry in instance.all_logs(again.run_id))

    # The next run finds the table registered: table credentials for READ_WRITE, no new registration.
    job = load_job()
    tables = job.resolve_tables(job.parse_args(job_argv(world, tiny_base)))
    assert tables.target_exists and tables.target == CURATED_LOCATION
    assert [v["operation"] for v in world.databricks.vended[-2:]] == ["READ", "READ_WRITE"]


def test_without_select_on_raw_the_asset_fails_before_any_spark_job(world, edgar, spark_home, tiny_base):
    materialize_raw(world, edgar, ("2024|10-K",))
    world.databricks.revoke("table", RAW, application_id(Principal.PREPROCESS), "SELECT")
    runs_before, vended_before = spark_runs(spark_home), len(world.databricks.vended)

    result = materialize_curated(resources(world, edgar, spark_home, tiny_base))

    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "preprocess" in failure and RAW in failure and "SELECT" in failure
    assert secret_value(Principal.PREPROCESS) not in failure
    assert spark_runs(spark_home) == runs_before
    assert world.databricks.vended[vended_before:] == []
    assert CURATED not in world.databricks.tables


def test_without_external_use_of_the_raw_schema_the_asset_fails_before_any_spark_job(world, edgar, spark_home,
                                                                                    tiny_base):
    materialize_raw(world, edgar, ("2024|10-K",))
    world.databricks.revoke("schema", f"{CATALOG}.raw", application_id(Principal.PREPROCESS), "EXTERNAL_USE_SCHEMA")
    runs_before, vended_before = spark_runs(spark_home), len(world.databricks.vended)

    result = materialize_curated(resources(world, edgar, spark_home, tiny_base))

    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "preprocess" in failure and f"EXTERNAL USE SCHEMA on schema {CATALOG}.raw" in failure
    assert spark_runs(spark_home) == runs_before and world.databricks.vended[vended_before:] == []


def test_a_refusal_inside_the_job_fails_the_asset_with_the_catalog_sentence(world, edgar, spark_home, tiny_base):
    materialize_raw(world, edgar, ("2024|10-K",))
    world.databricks.revoke("external_location", "governed_curated", application_id(Principal.PREPROCESS),
                            "CREATE_EXTERNAL_TABLE")
    vended_before = len(world.databricks.vended)

    result = materialize_curated(resources(world, edgar, spark_home, tiny_base))

    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.message
    refusal = [line for line in failure.splitlines() if "CatalogPermissionError" in line]
    assert len(refusal) == 1 and "Traceback" not in failure and "exited with code 1" in failure
    assert "preprocess" in refusal[0] and CURATED_LOCATION in refusal[0] and "CREATE EXTERNAL TABLE" in refusal[0]
    assert [v["operation"] for v in world.databricks.vended[vended_before:]] == ["READ"]
    assert CURATED not in world.databricks.tables
    assert secret_value(Principal.PREPROCESS) not in failure


def test_job_refused_by_the_catalog_prints_one_line_and_exits_1(world, tiny_base, capsys):
    world.databricks.add_table(RAW, f"s3://{BUCKET}/raw/tables/risk_factors", owner=application_id(Principal.INGEST))

    code = load_job().main(job_argv(world, tiny_base))

    err = capsys.readouterr().err
    refusal = [line for line in err.splitlines() if "CatalogPermissionError" in line]
    assert code == 1 and len(refusal) == 1 and "Traceback" not in err
    assert "preprocess" in refusal[0] and RAW in refusal[0] and "SELECT" in refusal[0]
    assert world.databricks.vended == [] and secret_value(Principal.PREPROCESS) not in err


class _Conf(dict):
    def set(self, key: str, value: str) -> None:
        self[key] = value


class _Client:
    """Vends credentials that expire a minute from now, then ones that last an hour."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def _creds(self, location: str, operation: str) -> VendedCredentials:
        self.calls.append((location, operation))
        ttl = 60 if len(self.calls) <= 2 else 3600
        n = len(self.calls)
        return VendedCredentials(location, operation, dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=ttl),
                                 f"ASIA{n}", f"secret-{n}", f"token-{n}")

    def get_table(self, full_name):
        return SimpleNamespace(storage_location=f"s3://{BUCKET}/raw/tables/risk_factors")

    def temporary_table_credentials(self, full_name, operation):
        return self._creds(self.get_table(full_name).storage_location, operation)

    def temporary_path_credentials(self, url, operation):
        return self._creds(url, operation)

    def table_exists(self, full_name):
        return False


def test_s3a_gets_vended_credentials_only_from_the_driver_endpoint_renewed_near_expiry(tiny_base):
    import requests

    job = load_job()
    args = job.parse_args(["--source-table", RAW, "--target-table", CURATED, "--target-location", CURATED_LOCATION,
                           "--tokenizer-dir", str(tiny_base), "--run-id", "r",
                           "--s3-endpoint-url", "http://127.0.0.1:9", "--storage-region", "us-east-1"])
    client = _Client()
    tables = job.CatalogTables(client, args)
    conf = _Conf()
    spark = SimpleNamespace(_jsc=SimpleNamespace(hadoopConfiguration=lambda: conf),
                            conf=SimpleNamespace(get=lambda key, default=None: "127.0.0.1"))
    bucket = f"fs.s3a.bucket.{BUCKET}."
    try:
        tables.before_read(spark)
        assert conf[bucket + "s3.client.factory.impl"] == "governedft.s3a.VendedCredentialsClientFactory"
        assert conf["fs.s3a.aws.credentials.provider"] == conf[bucket + "aws.credentials.provider"] == \
            "software.amazon.awssdk.auth.credentials.AnonymousCredentialsProvider"
        assert conf["fs.s3a.classloader.isolation"] == "false"
        assert conf[bucket + "endpoint"] == "http://127.0.0.1:9" and conf[bucket + "path.style.access"] == "true"
        assert not [k for k in conf if k.startswith("fs.s3a.") and not k.startswith(bucket) and k not in (
            "fs.s3a.aws.credentials.provider", "fs.s3a.impl.disable.cache", "fs.s3a.classloader.isolation")]
        # No key, secret or session token in the Hadoop configuration that travels to the executors.
        assert not [v for v in conf.values() if v.startswith(("ASIA", "secret-", "token-"))]
        read_url, token = conf[bucket + "governed-ft.credentials.url"], conf[bucket + "governed-ft.credentials.token"]
        assert read_url.startswith("http://127.0.0.1:") and conf[bucket + "governed-ft.credentials.renew-within-seconds"] \
            == "900"
        served = requests.get(read_url, headers={"Authorization": token}, timeout=10).json()
        # Vended for a minute, inside the renewal window: vended again before they were used.
        assert (served["AccessKeyId"], served["SecretAccessKey"], served["Token"]) == ("ASIA3", "secret-3", "token-3")
        assert requests.get(read_url, timeout=10).status_code == 401
        assert requests.get(read_url, headers={"Authorization": token + "0"}, timeout=10).status_code == 401

        tables.before_write(spark, tables.target)
        write_url = conf[bucket + "governed-ft.credentials.url"]
        assert write_url != read_url and conf[bucket + "governed-ft.credentials.token"] == token
        assert requests.get(write_url, headers={"Authorization": token}, timeout=10).json()["AccessKeyId"] == "ASIA4"
        assert client.calls[-1] == (CURATED_LOCATION, "PATH_CREATE_TABLE")
        tables.before_write(spark, tables.target)
        assert len(client.calls) == 4 and tables.detach_before_write
        assert requests.get(read_url, headers={"Authorization": token}, timeout=10).json()["AccessKeyId"] == "ASIA3"
        assert len(client.calls) == 4  # an hour left: served as held
    finally:
        tables.close()
    assert job.spark_path(CURATED_LOCATION) == f"s3a://{BUCKET}/curated/tables/risk_factor_instructions"
    assert "secret" not in repr(tables.vended)
