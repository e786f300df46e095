"""EmrServerlessResource request contract against moto (staged URIs only, Pipes over CloudWatch Logs) and a FAILED-run
stub; a small stand-in driver plays the job here, the real job from staged bytes runs in test_staged_emr.py."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import dagster as dg
import pytest
import requests
from moto.server import ThreadedMotoServer

from governed_ft_dagster.provision import staging
from governed_ft_dagster.defs.resources.spark_jobs import EmrServerlessResource, SparkJobResource, SparkJobSpec
from governed_ft_dagster.stack import versions

REGION = "us-east-1"
BUCKET = "governed-ft-code"
ROLE = "arn:aws:iam::123456789012:role/governed-ft-preprocess-job"
LOG_GROUP = "/governed-ft/emr-serverless"
CODE_PREFIX = f"s3://{BUCKET}/code/"

DRIVER = """
import sys

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    print("driver: plain stdout line")
    if sys.argv[1] == "fail":
        raise ValueError("planted failure 4417: raw table has no rows")
    pipes.report_asset_materialization(metadata={
        "rows_out": 42, "delta_version": 3, "asset_key_seen": pipes.asset_key, "args_seen": " ".join(sys.argv[1:]),
    })
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url():
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


class Aws:
    """Clients on moto, the requests the resource sent, and a stand-in for the EMR driver that writes CloudWatch logs."""

    def __init__(self, moto_url: str, session: boto3.Session, driver: Path):
        self.moto_url, self.session, self.driver = moto_url, session, driver
        self.start_requests: list[dict] = []
        self.put_keys: list[str] = []

    def client(self, service: str):
        return self.session.client(service, endpoint_url=self.moto_url)

    def record(self, **kwargs):
        name = kwargs["event_name"]
        if name.endswith("StartJobRun"):
            self.start_requests.append({"url_path": kwargs["params"]["url_path"], **json.loads(kwargs["params"]["body"])})
        elif name.endswith("PutObject"):
            self.put_keys.append(kwargs["params"]["url_path"])

    def run_driver(self, **kwargs):
        """What EMR does after StartJobRun: run the entry point with the driver env, ship stdout/stderr to CloudWatch."""
        request, response = self.start_requests[-1], kwargs["parsed"]
        submit = request["jobDriver"]["sparkSubmit"]
        env = dict(token.removeprefix("spark.emr-serverless.driverEnv.").split("=", 1)
                   for token in submit["sparkSubmitParameters"].split()
                   if token.startswith("spark.emr-serverless.driverEnv."))
        # Like Spark's PythonRunner: the Python driver's stderr is merged into stdout; the JVM's own log goes to stderr.
        proc = subprocess.run([sys.executable, str(self.driver), *submit["entryPointArguments"]],
                              env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=60)
        jvm_stderr = (f"ERROR Client: Application diagnostics message: User application exited with {proc.returncode}"
                      if proc.returncode else "INFO SparkContext: Successfully stopped SparkContext")
        cloudwatch = request["configurationOverrides"]["monitoringConfiguration"]["cloudWatchLoggingConfiguration"]
        # EMR Serverless names the driver's streams f"{prefix}/applications/{app}/jobs/{run}/SPARK_DRIVER/{stdout,stderr}"
        stream = (f"{cloudwatch['logStreamNamePrefix']}/applications/{response['applicationId']}"
                  f"/jobs/{response['jobRunId']}/SPARK_DRIVER")
        logs = self.client("logs")
        for name, text in (("stdout", proc.stdout), ("stderr", jvm_stderr)):
            logs.create_log_stream(logGroupName=cloudwatch["logGroupName"], logStreamName=f"{stream}/{name}")
            now = int(time.time() * 1000)
            events = [{"timestamp": now, "message": line} for line in text.splitlines() if line.strip()]
            if events:
                logs.put_log_events(logGroupName=cloudwatch["logGroupName"], logStreamName=f"{stream}/{name}",
                                    logEvents=events)


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path) -> Aws:
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(key, value)
    session = boto3.Session(region_name=REGION)
    # The resource calls boto3.client(), which uses the default session: its handlers see every request.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER))
    world = Aws(moto_url, session, driver)
    session.events.register("before-call.emr-serverless.StartJobRun", world.record)
    session.events.register("before-call.s3.PutObject", world.record)
    session.events.register("after-call.emr-serverless.StartJobRun", world.run_driver)
    world.client("s3").create_bucket(Bucket=BUCKET)
    world.client("logs").create_log_group(logGroupName=LOG_GROUP)
    return world


@pytest.fixture
def code(aws, tmp_path) -> dict[str, Path]:
    """A job script and a project zip, staged with the environment and jars at their content keys (placeholders:
    moto runs nothing, the stand-in driver does)."""
    script = tmp_path / "repo" / "job_scripts" / "preprocess.py"
    script.parent.mkdir(parents=True)
    script.write_text("print('the real job runs on EMR')\n")
    project_zip = tmp_path / "dist" / "governed_ft_dagster.zip"
    project_zip.parent.mkdir()
    project_zip.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    s3 = aws.client("s3")
    uris = [staging.code_uri(CODE_PREFIX, staging.KIND_SCRIPT, staging.sha256_file(script), script.name),
            staging.code_uri(CODE_PREFIX, staging.KIND_WHEEL, staging.sha256_file(project_zip), project_zip.name),
            staging.env_uri(CODE_PREFIX), *(staging.jar_uri(CODE_PREFIX, name) for name in versions.EMR_JARS),
            staging.provider_jar_uri(CODE_PREFIX)]
    for uri in uris:
        s3.put_object(Bucket=BUCKET, Key=staging.split_s3_uri(uri)[1], Body=uri.encode())
    aws.put_keys.clear()
    return {"script": script, "project_zip": project_zip, "staged": uris}


def _resource(moto_url: str, code: dict[str, Path], **overrides) -> EmrServerlessResource:
    config = dict(region=REGION, application_name="governed-ft-test", create_application_if_missing=True,
                  execution_role_arn=ROLE, code_prefix=CODE_PREFIX, log_group=LOG_GROUP,
                  endpoint_url=moto_url, poll_interval_s=0.05)
    return EmrServerlessResource(**{**config, **overrides})


def _materialize(resource: EmrServerlessResource, code: dict[str, Path], args: list[str]):
    @dg.asset
    def curated_training_table(context: dg.AssetExecutionContext, spark: SparkJobResource) -> dg.MaterializeResult:
        result = spark.run(context, SparkJobSpec(script=str(code["script"]), args=args, name="preprocess-risk-factors",
                                                 py_files=[str(code["project_zip"])], env={"GOVERNED_FT_STAGE": "curated"}))
        assert result.materialize_result is not None
        return dg.MaterializeResult(metadata={**result.materialize_result.metadata, "job_kind": result.kind,
                                              **{f"job/{k}": v for k, v in result.properties.items()}})

    return dg.materialize([curated_training_table], resources={"spark": resource}, raise_on_error=False)


def test_start_job_run_request_names_only_staged_uris_and_pipes_over_cloudwatch(aws, code):
    resource = _resource(aws.moto_url, code)
    args = ["--source-table", "governed_ft.raw.risk_factors", "--target-table", "governed_ft.curated.training"]

    started = time.monotonic()
    first = _materialize(resource, code, args)
    first_s = time.monotonic() - started
    second = _materialize(_resource(aws.moto_url, code), code, args)

    assert first.success and second.success
    emr = aws.client("emr-serverless")
    apps = emr.list_applications()["applications"]
    assert [a["name"] for a in apps] == ["governed-ft-test"]
    app = emr.get_application(applicationId=apps[0]["id"])["application"]
    assert app["releaseLabel"] == versions.EMR_RELEASE_LABEL and app["tags"] == {"governed-ft": "true"}

    assert len(aws.start_requests) == 2
    request = aws.start_requests[0]
    assert set(request) == {"url_path", "clientToken", "executionRoleArn", "name", "jobDriver", "configurationOverrides",
                            "tags", "executionTimeoutMinutes"}
    assert request["url_path"] == f"/applications/{app['applicationId']}/jobruns" == aws.start_requests[1]["url_path"]
    assert request["executionRoleArn"] == ROLE
    assert request["name"] == "preprocess-risk-factors"
    submit = request["jobDriver"]["sparkSubmit"]
    assert submit["entryPoint"].startswith(f"s3://{BUCKET}/code/") and submit["entryPoint"].endswith("/preprocess.py")
    assert submit["entryPointArguments"] == args
    tokens = submit["sparkSubmitParameters"].split()
    conf = [tokens[i + 1] for i, t in enumerate(tokens) if t == "--conf"]
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in conf
    assert "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog" in conf
    assert "spark.emr-serverless.driverEnv.GOVERNED_FT_STAGE=curated" in conf
    assert "spark.executorEnv.GOVERNED_FT_STAGE=curated" in conf
    assert {c.split("=", 1)[0] for c in conf} >= {"spark.emr-serverless.driverEnv.DAGSTER_PIPES_CONTEXT",
                                                  "spark.emr-serverless.driverEnv.DAGSTER_PIPES_MESSAGES"}
    jars = tokens[tokens.index("--jars") + 1].split(",")
    py_files = tokens[tokens.index("--py-files") + 1].split(",")
    archives = next(c for c in conf if c.startswith("spark.archives=")).split("=", 1)[1]
    assert archives == staging.env_uri(CODE_PREFIX) + "#environment"
    assert "spark.emr-serverless.driverEnv.PYSPARK_PYTHON=./environment/bin/python" in conf
    assert "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python" in conf
    assert sorted([submit["entryPoint"], *jars, *py_files, staging.env_uri(CODE_PREFIX)]) == sorted(code["staged"])
    assert "--packages" not in tokens
    assert request["configurationOverrides"] == {"monitoringConfiguration": {"cloudWatchLoggingConfiguration": {
        "enabled": True, "logGroupName": LOG_GROUP, "logStreamNamePrefix": "governed-ft"}}}
    assert request["tags"]["governed-ft"] == "true" and request["tags"]["governed-ft/job"] == "preprocess-risk-factors"
    assert request["tags"]["dagster/run-id"] == first.run_id
    assert request["executionTimeoutMinutes"] == 120

    # The resource uploads nothing: staging is the job of `governed-ft aws stage`.
    assert aws.put_keys == []
    assert aws.start_requests[1]["jobDriver"]["sparkSubmit"]["entryPoint"] == submit["entryPoint"]

    metadata = first.asset_materializations_for_node("curated_training_table")[0].metadata
    assert metadata["rows_out"].value == 42 and metadata["delta_version"].value == 3
    assert metadata["asset_key_seen"].value == "curated_training_table"
    assert metadata["args_seen"].value == " ".join(args)
    assert metadata["job_kind"].value == "EMRServerlessJobRun"
    run_id = metadata["job/job_run_id"].value
    assert metadata["job/job_run_arn"].value.endswith(f"/jobruns/{run_id}")
    assert metadata["job/release_label"].value == versions.EMR_RELEASE_LABEL
    assert metadata["job/log_stream"].value == f"governed-ft/applications/{app['applicationId']}/jobs/{run_id}/SPARK_DRIVER"
    assert metadata["job/console_url"].value == (
        f"https://{REGION}.console.aws.amazon.com/emr/home?region={REGION}"
        f"#/serverless-applications/{app['applicationId']}/job-runs/{run_id}")
    assert first_s < 20, f"a moto run took {first_s:.1f} s: a CloudWatch wait is not short-circuited"


def test_a_file_that_was_not_staged_is_refused_before_the_job_starts(aws, code, tmp_path):
    changed = tmp_path / "changed" / "preprocess.py"
    changed.parent.mkdir()
    changed.write_text("print('edited after staging')\n")
    resource = _resource(aws.moto_url, code, application_id="00existingapp")
    with pytest.raises(dg.Failure, match=r"job script preprocess.py is not staged at s3://.*; run `governed-ft aws stage`"):
        resource.start_job_run_request(SparkJobSpec(script=str(changed)), "00existingapp")
    aws.client("s3").delete_object(Bucket=BUCKET, Key=staging.split_s3_uri(staging.env_uri(CODE_PREFIX))[1])
    with pytest.raises(dg.Failure, match="the EMR Python environment is not staged"):
        resource.start_job_run_request(SparkJobSpec(script=str(code["script"])), "00existingapp")
    assert aws.start_requests == [] and aws.put_keys == []


def test_secret_looking_env_is_refused_before_anything_starts(aws, code):
    resource = _resource(aws.moto_url, code)
    with pytest.raises(dg.Failure, match="DATABRICKS_CLIENT_SECRET"):
        resource.run(None, SparkJobSpec(script=str(code["script"]), env={"DATABRICKS_CLIENT_SECRET": "x",
                                                                          "TOKENIZER_DIR": "/t"}))
    assert aws.start_requests == [] and aws.put_keys == []


class _FailedRunStub(BaseHTTPRequestHandler):
    """EMR Serverless StartJobRun / GetJobRun / GetApplication for a run that goes RUNNING, then FAILED."""

    runs: dict = {}
    polls = 0

    def _reply(self, body: dict, status: int = 200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        app = self.path.split("/")[2]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.runs["00stubrun1"] = body
        self._reply({"applicationId": app, "jobRunId": "00stubrun1",
                     "arn": f"arn:aws:emr-serverless:{REGION}:123456789012:/applications/{app}/jobruns/00stubrun1"})

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 2:
            return self._reply({"application": {"applicationId": parts[1], "name": "stub", "type": "Spark",
                                                "releaseLabel": versions.EMR_RELEASE_LABEL, "state": "STARTED"}})
        if len(parts) == 4 and parts[3] in self.runs:
            type(self).polls += 1
            state = "RUNNING" if self.polls < 2 else "FAILED"
            return self._reply({"jobRun": {
                "applicationId": parts[1], "jobRunId": parts[3], "name": self.runs[parts[3]]["name"],
                "arn": f"arn:aws:emr-serverless:{REGION}:123456789012:/applications/{parts[1]}/jobruns/{parts[3]}",
                "state": state, "releaseLabel": versions.EMR_RELEASE_LABEL,
                "executionRole": self.runs[parts[3]]["executionRoleArn"],
                "stateDetails": "Job failed, please check complete logs in configured logging destination. ExitCode: 1."
                                if state == "FAILED" else "",
                "jobDriver": self.runs[parts[3]]["jobDriver"],
                "configurationOverrides": self.runs[parts[3]]["configurationOverrides"],
                "totalExecutionDurationSeconds": 41,
                "billedResourceUtilization": {"vCPUHour": 0.05, "memoryGBHour": 0.2, "storageGBHour": 0.0},
            }})
        self._reply({"message": f"no route {self.path}"}, 404)

    def log_message(self, *args):
        pass


def test_failed_run_fails_the_asset_with_state_reason_and_log_location(aws, code):
    stub = ThreadingHTTPServer(("127.0.0.1", 0), _FailedRunStub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        resource = _resource(aws.moto_url, code, application_id="00stubapp", create_application_if_missing=False,
                             endpoint_urls={"emr-serverless": f"http://127.0.0.1:{stub.server_address[1]}"})
        started = time.monotonic()
        result = _materialize(resource, code, ["fail"])
        elapsed = time.monotonic() - started
    finally:
        stub.shutdown()

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    stream = "governed-ft/applications/00stubapp/jobs/00stubrun1/SPARK_DRIVER"
    assert failure.description.startswith("EMR Serverless job run 00stubrun1 (preprocess-risk-factors) ended in state "
                                          "FAILED: Job failed, please check complete logs")
    assert f"CloudWatch log group {LOG_GROUP}, streams {stream}/stdout and {stream}/stderr" in failure.description
    assert (f"https://{REGION}.console.aws.amazon.com/emr/home?region={REGION}"
            f"#/serverless-applications/00stubapp/job-runs/00stubrun1") in failure.description
    assert "ValueError: planted failure 4417: raw table has no rows" in failure.description
    assert "User application exited with 1" in failure.description
    assert "__dagster_pipes_version" not in failure.description
    assert failure.metadata["billed_vCPUHour"].value == "0.05" and failure.metadata["duration_s"].value == "41"
    assert _FailedRunStub.polls >= 2
    assert elapsed < 20, f"the failed run took {elapsed:.1f} s to surface"
