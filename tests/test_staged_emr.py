"""The real preprocessing job as EMR Serverless runs it: staged into moto S3 by `governed-ft aws stage`, started by the
resource, then run by spark-submit from exactly the staged bytes and request, reporting through CloudWatch Logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import time
from pathlib import Path

import boto3
import dagster as dg
import pytest
from click.testing import CliRunner

from aws_fixtures import BUCKET, CATALOG, secret_value, start_world
from conftest import SHARED_SAMPLES, free_port
from governed_ft_dagster.defs.assets.curated import curated_training_table
from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
from governed_ft_dagster.defs.partitions import raw_partitions
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.cli import main
from governed_ft_dagster.job_code import PY_FILES_SUFFIX, project_wheel
from governed_ft_dagster.provision import staging
from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.defs.resources.spark_jobs import EmrServerlessResource
from governed_ft_dagster.stack import spark_runtime

raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
REGION = "us-east-1"
CODE_BUCKET = "governed-ft-code"
CODE_PREFIX = f"s3://{CODE_BUCKET}/code/"
LOG_GROUP = "/governed-ft/emr-serverless"
ROLE = "arn:aws:iam::123456789012:role/governed-ft-preprocess-job"
PARTITIONS = ("2024|10-K", "2023|10-K")
pytestmark = pytest.mark.skipif(not (SHARED_SAMPLES / "filings").is_dir(), reason="the shared SEC samples are not present")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from lxml import html

    from governed_ft_dagster.training.base_model import build_tiny_base

    texts = [html.fromstring(p.read_bytes()).text_content() for p in sorted((SHARED_SAMPLES / "filings").glob("*.htm*"))]
    return build_tiny_base(texts, tmp_path_factory.mktemp("tiny-base") / "model")


class EmrRuntime:
    """What EMR Serverless does after StartJobRun, run here: fetch what the request names, unpack, spark-submit."""

    def __init__(self, session: boto3.Session, moto_url: str, spark_home: Path, work: Path):
        self.session, self.moto_url, self.work = session, moto_url, work
        # What the release ships: Spark on its Hadoop 3.4.1 with S3A on the AWS SDK for Java v2. Everything else the
        # job runs with (Delta, the S3A credentials provider, Python code and environment) comes from the request.
        self.release_home = spark_runtime.spark_home(spark_home, s3a=True)
        self.requests: list[dict] = []
        self.outputs: list[str] = []

    def client(self, service: str):
        return self.session.client(service, endpoint_url=self.moto_url)

    def record(self, **kwargs) -> None:
        self.requests.append(json.loads(kwargs["params"]["body"]))

    def fetch(self, uri: str, job_dir: Path) -> Path:
        bucket, key = staging.split_s3_uri(uri)
        local = job_dir / "s3" / bucket / key
        local.parent.mkdir(parents=True, exist_ok=True)
        self.client("s3").download_file(bucket, key, str(local))
        return local

    def run(self, **kwargs) -> None:
        request, response = self.requests[-1], kwargs["parsed"]
        job_dir = self.work / response["jobRunId"]
        job_dir.mkdir(parents=True)
        submit = request["jobDriver"]["sparkSubmit"]
        tokens = submit["sparkSubmitParameters"].split()
        conf = dict(tokens[i + 1].split("=", 1) for i, t in enumerate(tokens) if t == "--conf")
        for item in conf.get("spark.archives", "").split(","):
            uri, _, alias = item.partition("#")
            (job_dir / alias).mkdir()
            with tarfile.open(self.fetch(uri, job_dir)) as archive:
                archive.extractall(job_dir / alias, filter="fully_trusted")
        local = {}

        def to_local(match: re.Match) -> str:
            uri = match.group(0)
            if uri not in local:
                local[uri] = str(self.fetch(uri, job_dir))
            return local[uri]

        s3_uri = re.compile(r"s3://[^,#\s]+")
        command = [str(spark_runtime.spark_submit(self.release_home)), "--master", "local[2]",
                   *[s3_uri.sub(to_local, t) for t in tokens], s3_uri.sub(to_local, submit["entryPoint"]),
                   *submit["entryPointArguments"]]
        driver_env = {k.removeprefix("spark.emr-serverless.driverEnv."): v for k, v in conf.items()
                      if k.startswith("spark.emr-serverless.driverEnv.")}
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "JAVA_HOME", "HOME", "LANG", "TMPDIR")
               or k.startswith("AWS_")}
        env.update(SPARK_HOME=str(self.release_home), SPARK_CONF_DIR=str(self.release_conf(job_dir)),
                   SPARK_LOCAL_IP="127.0.0.1", **driver_env)
        # Like Spark's PythonRunner on EMR: the Python driver's stderr is merged into the driver's stdout.
        proc = subprocess.run(command, cwd=job_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=900)
        self.outputs.append(proc.stdout)
        (job_dir / "driver-output.log").write_text(proc.stdout)
        jvm = f"User application exited with {proc.returncode}" if proc.returncode else "Successfully stopped"
        self.ship_logs(request, response, {"stdout": proc.stdout, "stderr": jvm})

    def release_conf(self, job_dir: Path) -> Path:
        """spark-defaults of the 'release' run here: a loopback driver."""
        conf_dir = job_dir / "release-conf"
        conf_dir.mkdir()
        (conf_dir / "spark-defaults.conf").write_text(
            "spark.ui.enabled false\nspark.driver.host 127.0.0.1\nspark.driver.bindAddress 127.0.0.1\n"
            "spark.sql.shuffle.partitions 4\n")
        (conf_dir / "log4j2.properties").write_text(
            "rootLogger.level = warn\nrootLogger.appenderRef.stderr.ref = console\nappender.console.type = Console\n"
            "appender.console.name = console\nappender.console.target = SYSTEM_ERR\n"
            "appender.console.layout.type = PatternLayout\nappender.console.layout.pattern = %p %c{1}: %m%n%ex\n")
        return conf_dir

    def ship_logs(self, request: dict, response: dict, outputs: dict[str, str]) -> None:
        cloudwatch = request["configurationOverrides"]["monitoringConfiguration"]["cloudWatchLoggingConfiguration"]
        stream = (f"{cloudwatch['logStreamNamePrefix']}/applications/{response['applicationId']}"
                  f"/jobs/{response['jobRunId']}/SPARK_DRIVER")
        logs = self.client("logs")
        for name, text in outputs.items():
            logs.create_log_stream(logGroupName=cloudwatch["logGroupName"], logStreamName=f"{stream}/{name}")
            lines = [line for line in text.splitlines() if line.strip()]
            for start in range(0, len(lines), 500):
                now = int(time.time() * 1000)
                logs.put_log_events(logGroupName=cloudwatch["logGroupName"], logStreamName=f"{stream}/{name}",
                                    logEvents=[{"timestamp": now, "message": line} for line in lines[start:start + 500]])


@pytest.fixture
def world(monkeypatch):
    world, server = start_world(monkeypatch, free_port())
    yield world
    world.databricks.stop()
    server.stop()


@pytest.fixture
def emr(world, monkeypatch, spark_home, tmp_path) -> EmrRuntime:
    session = boto3.Session(region_name=REGION)
    # The resource calls boto3.client(), which uses the default session: its handlers see every request.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    runtime = EmrRuntime(session, world.moto_url, spark_home, tmp_path / "emr")
    session.events.register("before-call.emr-serverless.StartJobRun", runtime.record)
    session.events.register("after-call.emr-serverless.StartJobRun", runtime.run)
    runtime.client("s3").create_bucket(Bucket=CODE_BUCKET)
    runtime.client("logs").create_log_group(logGroupName=LOG_GROUP)
    return runtime


def stage(world, tiny_base: Path, spark_home: Path, monkeypatch) -> dict:
    monkeypatch.setenv("GOVERNED_FT_HOME", str(spark_home))
    result = CliRunner().invoke(main, ["aws", "stage", "--region", REGION, "--code-prefix", CODE_PREFIX,
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
                     staging.KIND_SOURCE, staging.KIND_JAR}
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
