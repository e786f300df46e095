"""The real preprocessing job as EMR Serverless runs it: staged into moto S3 by `governed-ft aws stage`, started by the
resource, then run by spark-submit from exactly the staged bytes and request, reporting through CloudWatch Logs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from aws_fixtures import BUCKET, CATALOG, secret_value, start_world
from conftest import SHARED_SAMPLES, free_port
from job_runtimes import EmrRuntime, hooked_session
from governed_ft_dagster.defs.assets.curated import curated_training_table
from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
from governed_ft_dagster.defs.partitions import raw_partitions
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.cli import main
from governed_ft_dagster.job_code import PY_FILES_SUFFIX, project_wheel
from governed_ft_dagster.provision import staging
from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.defs.resources.spark_jobs import EmrServerlessResource

raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
REGION = "us-east-1"
CODE_BUCKET = "governed-ft-code"
CODE_PREFIX = f"s3://{CODE_BUCKET}/code/"
LOG_GROUP = "/governed-ft/emr-serverless"
ROLE = "arn:aws:iam::123456789012:role/governed-ft-preprocess-job"
PARTITIONS = ("2024|10-K", "2023|10-K")
pytestmark = pytest.mark.skipif(not (SHARED_SAMPLES / "filings").is_dir(), reason="the shared SEC samples are not present")




@pytest.fixture
def world(monkeypatch):
    world, server = start_world(monkeypatch, free_port())
    yield world
    world.databricks.stop()
    server.stop()


@pytest.fixture
def emr(world, monkeypatch, spark_home, tmp_path) -> EmrRuntime:
    runtime = EmrRuntime(world.moto_url, tmp_path / "emr", spark_home)
    hooked_session(monkeypatch, runtime)
    runtime.client("s3").create_bucket(Bucket=CODE_BUCKET)
    runtime.client("logs").create_log_group(logGroupName=LOG_GROUP)
    return runtime


def stage(world, tiny_base: Path, spark_home: Path, monkeypatch) -> dict:
    monkeypatch.setenv("GOVERNED_FT_HOME", str(spark_home))
    result = CliRunner().invoke(main, ["aws", "stage", "--only", "emr", "--region", REGION, "--code-prefix", CODE_PREFIX,
                                       "--tokenizer-dir", str(tiny_base), "--endpoint-url", world.moto_url, "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def materialize(world, edgar, tiny_base: Path):
    for partition in PARTITIONS:
        assert dg.materialize([raw_risk_factors], partition_key=partition,
                              resources={"catalog": world.catalog_resource(), "edgar": edgar}).success
    spark = EmrServerlessResource(region=REGION, application_name="governed-ft-test", create_application_if_missing=True,
                                  execution_role_arn=ROLE, code_prefix=CODE_PREFIX, log_group=LOG_GROUP,
                                  endpoint_url=world.moto_url, poll_interval_s=0.05)
    resources = {"catalog": world.catalog_resource(), "edgar": edgar, "spark": spark,
                 "base_model": BaseModelResource(model_ref=str(tiny_base))}
    return dg.materialize([raw_risk_factors, curated_training_table], resources=resources, raise_on_error=False,
                          selection=dg.AssetSelection.assets(curated_training_table))


def test_the_real_job_runs_from_the_staged_bytes_and_reports_through_cloudwatch(world, emr, edgar, spark_home,
                                                                                tiny_base, monkeypatch):
    staged = stage(world, tiny_base, spark_home, monkeypatch)
    kinds = {a["kind"] for a in staged["artifacts"]}
    assert kinds == {staging.KIND_WHEEL, staging.KIND_SCRIPT, staging.KIND_ENV, staging.KIND_TOKENIZER,
                     staging.KIND_JAR}
    assert all(a["action"] == "uploaded" and a["uri"].startswith(CODE_PREFIX) and len(a["sha256"]) == 64
               for a in staged["artifacts"])
    again = stage(world, tiny_base, spark_home, monkeypatch)
    assert [a["action"] for a in again["artifacts"]] == ["present"] * len(staged["artifacts"])

    result = materialize(world, edgar, tiny_base)

    assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    [request] = emr.requests
    submit = request["jobDriver"]["sparkSubmit"]
    expected = staged["job_parameters"]["emr_serverless_start_job_run"]
    assert submit["entryPoint"] == expected["entryPoint"]
    # dagster-aws appends only its Pipes context and message settings to the staged parameters.
    assert submit["sparkSubmitParameters"].startswith(expected["sparkSubmitParameters"] + " ")
    pipes_tail = submit["sparkSubmitParameters"][len(expected["sparkSubmitParameters"]):].split()
    assert {t.split("=", 1)[0] for t in pipes_tail if t != "--conf"} == {
        "spark.emr-serverless.driverEnv.DAGSTER_PIPES_CONTEXT", "spark.emr-serverless.driverEnv.DAGSTER_PIPES_MESSAGES"}
    code = re.findall(r"s3://[^,#\s]+", submit["sparkSubmitParameters"] + " " + submit["entryPoint"])
    assert len(code) == 7 and all(u.startswith(CODE_PREFIX) for u in code)
    assert staging.provider_jar_uri(CODE_PREFIX) in code  # the S3A credentials provider, built from source
    assert "--packages" not in submit["sparkSubmitParameters"] and "pypi" not in json.dumps(request)
    tokenizer_arg = submit["entryPointArguments"][submit["entryPointArguments"].index("--tokenizer-dir") + 1]
    assert tokenizer_arg == staging.TOKENIZER_ALIAS
    for principal in Principal:
        assert secret_value(principal) not in json.dumps(request)
    metadata = result.asset_materializations_for_node("curated_training_table")[0].metadata
    assert metadata["job_run_kind"].value == "EMRServerlessJobRun"
    assert metadata["rows_out"].value > 0 and metadata["delta_version"].value == 0
    # The release's Hadoop (3.4.1-amzn-2 on emr-7.10.0) with S3A on SDK v2 of its 2.31 line; pyspark 3.5.3 (EMR: 3.5.5).
    assert metadata["runtime"].value == {"spark": "3.5.3", "hadoop": "3.4.1", "aws_sdk_java": "2.31.16"}
    assert metadata["catalog_table"].value == f"{CATALOG}.curated.risk_factor_instructions"
    assert world.boto("s3").list_objects_v2(Bucket=BUCKET, Prefix="curated/tables/")["KeyCount"] > 0


def test_an_artifact_left_out_of_staging_stops_the_job_before_it_starts(world, emr, edgar, spark_home, tiny_base,
                                                                        monkeypatch):
    staged = stage(world, tiny_base, spark_home, monkeypatch)
    [tokenizer] = [a for a in staged["artifacts"] if a["kind"] == staging.KIND_TOKENIZER]
    emr.client("s3").delete_object(Bucket=CODE_BUCKET, Key=staging.split_s3_uri(tokenizer["uri"])[1])

    result = materialize(world, edgar, tiny_base)

    assert not result.success and emr.requests == []
    message = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "is not staged at " + tokenizer["uri"] in message and "governed-ft aws stage" in message


def test_the_job_imports_only_what_was_staged(world, emr, edgar, spark_home, tiny_base, monkeypatch, tmp_path):
    staged = stage(world, tiny_base, spark_home, monkeypatch)
    [wheel] = [a for a in staged["artifacts"] if a["kind"] == staging.KIND_WHEEL]
    import zipfile

    # The same key, bytes without one module: the job must fail though the orchestrator's own copy is complete.
    whole = project_wheel(tmp_path / "wheel", PY_FILES_SUFFIX)
    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(partial, "w") as target:
        for item in source.infolist():
            if item.filename != "governed_ft_dagster/preprocess/text.py":
                target.writestr(item, source.read(item))
    emr.client("s3").upload_file(str(partial), CODE_BUCKET, staging.split_s3_uri(wheel["uri"])[1])

    result = materialize(world, edgar, tiny_base)

    assert not result.success and len(emr.requests) == 1
    # Imported from the staged copy the runtime fetched, not from the orchestrator's installation.
    assert re.search(r"cannot import name 'text' from 'governed_ft_dagster.preprocess' \(\S+/s3/" + CODE_BUCKET
                     + r"/code/wheels/\w+/governed_ft_dagster-\S+\.zip/governed_ft_dagster/preprocess/__init__.py\)",
                     emr.outputs[0])
