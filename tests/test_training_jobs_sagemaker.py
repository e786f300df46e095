"""SageMakerTrainingResource and PipesSageMakerClient against moto in server mode and a SageMaker status stub.

The real training script's run from the staged bytes is tests/test_staged_sagemaker.py. Here the request's shape and
the failure states: where a failing container is needed, a hook plays it with a tiny stand-in script (unpacks the
staged sourcedir.tar.gz, runs it with the request's Environment and hyperparameters, ships its output to CloudWatch).
"""

import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

import boto3
import dagster as dg
import pytest
import requests
from dagster_pipes import decode_param
from moto.server import ThreadedMotoServer

from conftest import free_port
from governed_ft_dagster.defs.resources.pipes_sagemaker import (
    LOG_GROUP,
    PIPES_CONTEXT_PATH,
    PipesSageMakerClient,
    PipesSageMakerContextInjector,
    PipesSageMakerMessageReader,
)
from governed_ft_dagster.defs.resources.training_jobs import (
    SageMakerTrainingResource,
    TrainingJobResource,
    TrainingJobResult,
    TrainingJobSpec,
)
from governed_ft_dagster.job_code import source_tarball
from governed_ft_dagster.provision import staging
from governed_ft_dagster.storage import extract_tar
from test_training_jobs_local import HYPERPARAMETERS, SECRET_NAME, materialize, metadata, run_log, spec_for, write_code

REGION = "us-east-1"
GOVERNED_BUCKET = "governed-lake"
JOBS_BUCKET = "governed-ft-jobs"
ROLE = "arn:aws:iam::123456789012:role/governed-ft-train-job"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/governed-ft-train:all-packages"  # python_env="image"
PLANTED_SECRET = "planted-train-client-secret-7d41e0"
LOG_LINK = ("https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
            "#logsV2:log-groups/log-group/$252Faws$252Fsagemaker$252FTrainingJobs")
CreateHook = Callable[[dict], None]


def boto(service: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


@pytest.fixture
def moto_url(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(key)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
    for bucket in (GOVERNED_BUCKET, JOBS_BUCKET):
        boto("s3", url).create_bucket(Bucket=bucket)
    boto("secretsmanager", url).create_secret(Name=SECRET_NAME, SecretString=json.dumps(
        {"client_id": "train-app-id", "client_secret": PLANTED_SECRET}))
    yield url
    server.stop()


class Requests(list):
    """CreateTrainingJob request bodies as sent on the wire; hooks run on each before the call goes out."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: list[CreateHook] = []

    def capture(self, params: dict, **_: Any) -> None:
        body = json.loads(params["body"])
        self.append(body)
        for hook in self.hooks:
            hook(body)


@pytest.fixture
def created(monkeypatch) -> Requests:
    """Registers on the default boto3 session, so every client the resource makes carries the hook."""
    session = boto3.Session(region_name=REGION)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    requests_seen = Requests()
    session.events.register("before-call.sagemaker.CreateTrainingJob", requests_seen.capture)
    return requests_seen


def play_container(request: dict, endpoint: str, workdir: Path) -> dict:
    """Run the job's entry point the way SageMaker's toolkit does and ship its output to CloudWatch Logs."""
    name = request["TrainingJobName"]
    hps = {key: json.loads(value) for key, value in request["HyperParameters"].items()}
    user_hps = {key: value for key, value in hps.items() if not key.startswith("sagemaker_")}
    bucket, _, key = hps["sagemaker_submit_directory"][len("s3://"):].partition("/")
    code = workdir / name / "code"
    code.mkdir(parents=True)
    tarball = boto("s3", endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        extract_tar(tar, code)
    model_dir, output = workdir / name / "model", workdir / name / "output"
    model_dir.mkdir()
    env = {**os.environ, **request["Environment"], "TRAINING_JOB_NAME": name, "SM_MODEL_DIR": str(model_dir),
           "SM_OUTPUT_DIR": str(output), "SM_OUTPUT_DATA_DIR": str(output / "data"), "SM_NUM_GPUS": "4",
           "SM_NUM_CPUS": "64", "SM_CURRENT_HOST": "algo-1", "SM_HPS": json.dumps(user_hps),
           "SM_CHANNELS": json.dumps([c["ChannelName"] for c in request.get("InputDataConfig", [])])}
    argv = [item for k in sorted(user_hps) for item in (f"--{k}", str(user_hps[k]))]
    argv += ["--checkpoint_dir", str(workdir / name / "checkpoints")]
    ran = subprocess.run([sys.executable, hps["sagemaker_program"], *argv], cwd=code, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    logs = boto("logs", endpoint)
    try:
        logs.create_log_group(logGroupName=LOG_GROUP)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"{name}/algo-1-{int(time.time())}"
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    events = [{"timestamp": now, "message": line} for line in ran.stdout.splitlines() if line]
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)
    seen_file = output / "data" / "seen.json"
    return json.loads(seen_file.read_text()) if seen_file.exists() else {}


def stage_source(spec: TrainingJobSpec, endpoint: str) -> str:
    """Put the spec's sourcedir.tar.gz where `governed-ft aws stage` puts a source folder; its URI."""
    uri = staging.source_uri(f"s3://{JOBS_BUCKET}/code", source_tarball(spec.source_dir))
    bucket, key = staging.split_s3_uri(uri)
    boto("s3", endpoint).put_object(Bucket=bucket, Key=key, Body=source_tarball(spec.source_dir))
    return uri


def resource(moto_url: Optional[str], **overrides: Any) -> SageMakerTrainingResource:
    config: dict[str, Any] = dict(
        region=REGION, role_arn=ROLE, image_uri=IMAGE, python_env="image", checkpoint_s3_uri=f"s3://{JOBS_BUCKET}/checkpoints",
        output_s3_uri=f"s3://{GOVERNED_BUCKET}/ml/training-output/", code_s3_prefix=f"s3://{JOBS_BUCKET}/code",
        endpoint_url=moto_url, poll_interval_s=0.2, tags={"project": "governed-ft"})
    return SageMakerTrainingResource(**{**config, **overrides})


def test_create_request_names_the_staged_source_and_carries_no_secret(tmp_path, moto_url, created, monkeypatch):
    import dagster._core.pipes.utils as pipes_utils

    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    code = tmp_path / "code"
    spec = spec_for(write_code(code), code)
    staged = stage_source(spec, moto_url)
    train = resource(moto_url, use_spot=True, max_runtime_s=7200, max_wait_s=10800,
                     subnets=["subnet-0a1b2c3d"], security_group_ids=["sg-0123abcd"])
    result = materialize(spec, train, dg.DagsterInstance.ephemeral())
    assert result.success

    [request] = created
    raw = json.dumps(request)
    assert PLANTED_SECRET not in raw
    env = request.pop("Environment")
    hps = request.pop("HyperParameters")
    tags = {tag["Key"]: tag["Value"] for tag in request.pop("Tags")}
    assert request == {
        "TrainingJobName": "tiny-train-1",
        "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "OutputDataConfig": {"S3OutputPath": f"s3://{GOVERNED_BUCKET}/ml/training-output/"},
        "ResourceConfig": {"InstanceType": "ml.g5.16xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100},
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 10800},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": f"s3://{JOBS_BUCKET}/checkpoints/tiny-train-1/", "LocalPath": "/opt/ml/checkpoints"},
        "VpcConfig": {"Subnets": ["subnet-0a1b2c3d"], "SecurityGroupIds": ["sg-0123abcd"]},
    }
    assert hps == {**{k: json.dumps(v) for k, v in HYPERPARAMETERS.items()},
                   "sagemaker_program": '"job_scripts/tiny_train.py"', "sagemaker_submit_directory": json.dumps(staged),
                   "sagemaker_container_log_level": "20", "sagemaker_job_name": '"tiny-train-1"',
                   "sagemaker_region": '"us-east-1"'}
    assert set(env) == {"GOVERNED_FT_PRINCIPAL_SECRET_ID", "DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    assert env["GOVERNED_FT_PRINCIPAL_SECRET_ID"] == SECRET_NAME
    assert all(len(value) <= 512 for value in env.values())
    assert decode_param(env["DAGSTER_PIPES_MESSAGES"]) == {"stdio": "stdout"}
    context = decode_param(env["DAGSTER_PIPES_CONTEXT"])["data"]
    assert context["asset_keys"] == ["finetuned_lora_model"]
    assert context["extras"] == {"training_job_name": "tiny-train-1", "kind": "SageMakerTrainingJob"}
    assert tags["project"] == "governed-ft" and tags["dagster/run-id"] == result.run_id
    meta = metadata(result)
    assert meta["model_artifacts"] == f"s3://{GOVERNED_BUCKET}/ml/training-output/tiny-train-1/output/model.tar.gz"
    # Nothing was uploaded for the job: the code prefix holds what staging put there and nothing else.
    listed = boto("s3", moto_url).list_objects_v2(Bucket=JOBS_BUCKET, Prefix="code/")["Contents"]
    assert [f"s3://{JOBS_BUCKET}/{item['Key']}" for item in listed] == [staged]


def test_a_changed_source_folder_is_not_staged_and_nothing_starts(tmp_path, moto_url, created):
    code = tmp_path / "code"
    spec = spec_for(write_code(code), code)
    stage_source(spec, moto_url)
    (code / "job_scripts" / "notes.txt").write_text("edited after staging")
    result = materialize(spec, resource(moto_url))
    assert not result.success and created == []
    [failure] = [event for event in result.all_events if event.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("SageMaker training job tiny-train-1 cannot start: the SageMaker source_dir of "
                                  "job_scripts/tiny_train.py is not staged at s3://governed-ft-jobs/code/sagemaker-source/")
    assert "run `governed-ft aws stage`" in description


def test_defaults_and_a_rerun_gets_a_fresh_name_but_the_same_checkpoints(tmp_path, moto_url, created, monkeypatch):
    import dagster._core.pipes.utils as pipes_utils

    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    code = tmp_path / "code"
    spec = spec_for(write_code(code), code)
    outcomes: list[TrainingJobResult] = []

    @dg.asset(name="finetuned_lora_model")
    def model(context: dg.AssetExecutionContext, training: TrainingJobResource) -> dg.MaterializeResult:
        outcomes.append(training.run(context, spec))
        return dg.MaterializeResult()

    stage_source(spec, moto_url)
    for _ in range(2):
        assert dg.materialize([model], resources={"training": resource(moto_url, stream_logs=False)}).success
    assert [o.run_id for o in outcomes] == ["tiny-train-1", "tiny-train-1-r2"]
    assert [o.kind for o in outcomes] == ["SageMakerTrainingJob"] * 2
    assert [o.materialize_result for o in outcomes] == [None, None]
    first, second = created
    assert first["ResourceConfig"]["InstanceType"] == "ml.g5.16xlarge"
    assert first["EnableManagedSpotTraining"] is False
    assert first["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert "VpcConfig" not in first and "InputDataConfig" not in first
    assert first["CheckpointConfig"] == second["CheckpointConfig"]
    assert first["HyperParameters"]["sagemaker_submit_directory"] == second["HyperParameters"]["sagemaker_submit_directory"]
    assert second["HyperParameters"]["sagemaker_job_name"] == '"tiny-train-1-r2"'
    assert outcomes[0].properties["job_arn"].endswith(":training-job/tiny-train-1")
    assert outcomes[0].properties["instance_type"] == "ml.g5.16xlarge"
    assert outcomes[0].properties["log_link"].startswith(LOG_LINK)
    assert PLANTED_SECRET not in json.dumps([o.properties for o in outcomes])


def test_oversized_environment_is_refused_before_anything_is_launched(tmp_path, moto_url, created):
    code = tmp_path / "code"
    script = write_code(code)
    spec = TrainingJobSpec(script=str(script), source_dir=str(code), job_name="tiny-train-big",
                           env={"NOTES": "x" * 600})
    stage_source(spec, moto_url)

    @dg.asset(name="finetuned_lora_model")
    def model(context: dg.AssetExecutionContext, training: TrainingJobResource) -> dg.MaterializeResult:
        return training.run(context, spec).materialize_result or dg.MaterializeResult()

    with pytest.raises(dg.DagsterInvariantViolationError, match=r"Environment\[NOTES\] is 600 characters"):
        dg.materialize([model], resources={"training": resource(moto_url)})
    assert created == []


def test_large_pipes_context_goes_through_an_s3_channel(tmp_path, moto_url, created, monkeypatch):
    import dagster._core.pipes.utils as pipes_utils

    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    s3, logs, sagemaker = boto("s3", moto_url), boto("logs", moto_url), boto("sagemaker", moto_url)
    spilled: list[dict] = []

    def read_spilled(body: dict) -> None:
        [channel] = body["InputDataConfig"]
        bucket, _, prefix = channel["DataSource"]["S3DataSource"]["S3Uri"][len("s3://"):].partition("/")
        spilled.append(json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}context.json")["Body"].read()))

    created.hooks.append(read_spilled)
    notes = secrets.token_hex(400)

    @dg.asset
    def finetuned_lora_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        client = PipesSageMakerClient(
            client=sagemaker, logs_client=logs, poll_interval=0.2,
            context_injector=PipesSageMakerContextInjector(s3_client=s3, spill_s3_uri=f"s3://{JOBS_BUCKET}/code/pipes"),
            message_reader=PipesSageMakerMessageReader(client=logs, interval=0.2))
        params = {"TrainingJobName": "tiny-train-spill", "RoleArn": ROLE,
                  "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
                  "OutputDataConfig": {"S3OutputPath": f"s3://{GOVERNED_BUCKET}/ml/training-output/"},
                  "ResourceConfig": {"InstanceType": "ml.g5.16xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
                  "StoppingCondition": {"MaxRuntimeInSeconds": 600}}
        return client.run(context=context, create_training_job_params=params,
                          extras={"notes": notes}).get_materialize_result()

    assert dg.materialize([finetuned_lora_model]).success
    [request] = created
    assert decode_param(request["Environment"]["DAGSTER_PIPES_CONTEXT"]) == {"path": PIPES_CONTEXT_PATH}
    assert request["InputDataConfig"][0]["ChannelName"] == "dagster_pipes"
    uri = request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    assert uri.startswith(f"s3://{JOBS_BUCKET}/code/pipes/") and GOVERNED_BUCKET not in uri
    assert spilled[0]["extras"] == {"notes": notes} and spilled[0]["asset_keys"] == ["finetuned_lora_model"]
    assert s3.list_objects_v2(Bucket=JOBS_BUCKET, Prefix="code/pipes/").get("KeyCount") == 0


class SageMakerStub:
    """Speaks SageMaker's JSON protocol for CreateTrainingJob, DescribeTrainingJob and StopTrainingJob; each
    DescribeTrainingJob of a created job advances it one step along a scripted list of states."""

    def __init__(self, states: list[tuple[str, str, str]], failure_reason: Optional[str] = None,
                 on_create: CreateHook = lambda body: None, deny_describe_from_step: Optional[int] = None):
        self.states, self.failure_reason, self.on_create = states, failure_reason, on_create
        self.deny_describe_from_step = deny_describe_from_step
        self.jobs: dict[str, dict] = {}
        self.calls: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                stub.calls.append(operation)
                status, payload = stub.handle(operation, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, operation: str, body: dict) -> tuple[int, dict]:
        name = body.get("TrainingJobName", "")
        arn = f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}"
        if operation == "CreateTrainingJob":
            self.jobs[name] = {"request": body, "step": 0, "created": time.time()}
            self.on_create(body)
            return 200, {"TrainingJobArn": arn}
        if name not in self.jobs:
            return 400, {"__type": "ValidationException", "message": "Requested resource not found."}
        if operation == "StopTrainingJob":
            return 200, {}
        if operation != "DescribeTrainingJob":
            return 400, {"__type": "UnknownOperationException", "message": operation}
        job = self.jobs[name]
        if self.deny_describe_from_step is not None and job["step"] >= self.deny_describe_from_step:
            return 400, {"__type": "AccessDeniedException", "message": "not authorized to perform DescribeTrainingJob"}
        step = min(job["step"], len(self.states) - 1)
        job["step"] += 1
        status, secondary, _ = self.states[step]
        request, created = job["request"], job["created"]
        response = {
            "TrainingJobName": name, "TrainingJobArn": arn, "TrainingJobStatus": status, "SecondaryStatus": secondary,
            "HyperParameters": request["HyperParameters"], "AlgorithmSpecification": request["AlgorithmSpecification"],
            "RoleArn": request["RoleArn"], "OutputDataConfig": request["OutputDataConfig"],
            "ResourceConfig": request["ResourceConfig"], "StoppingCondition": request["StoppingCondition"],
            "CheckpointConfig": request.get("CheckpointConfig"), "Environment": request.get("Environment", {}),
            "EnableManagedSpotTraining": request.get("EnableManagedSpotTraining", False),
            "CreationTime": created, "LastModifiedTime": time.time(),
            "SecondaryStatusTransitions": [
                {"Status": s, "StartTime": created + i, "StatusMessage": message}
                for i, (_, s, message) in enumerate(self.states[:step + 1])],
        }
        if status in ("Failed", "Stopped"):
            response.update({"FailureReason": self.failure_reason, "TrainingEndTime": time.time(),
                             "TrainingTimeInSeconds": 41, "BillableTimeInSeconds": 41})
        return 200, {key: value for key, value in response.items() if value is not None}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_failed_job_fails_the_asset_with_reason_status_and_links(tmp_path, moto_url, stub_endpoint):
    code = tmp_path / "code"
    spec = spec_for(write_code(code), code, job_name="tiny-train-fails", fail="yes")
    reason = ('AlgorithmError: ExecuteUserScriptError:\nExitCode 3\nErrorMessage "RuntimeError: CUDA out of memory: '
              'tried to allocate 2.00 GiB"\nCommand "/opt/conda/bin/python3.11 job_scripts/tiny_train.py", exit code: 3')
    states = [("InProgress", "Starting", "Launching requested ML instances"),
              ("InProgress", "Downloading", "Downloading the training image"),
              ("InProgress", "Training", "Training image download completed. Training in progress."),
              ("Failed", "Failed", "Training job failed")]
    stage_source(spec, moto_url)
    stub = stub_endpoint(SageMakerStub(states, reason, lambda body: play_container(body, moto_url, tmp_path / "sm")))
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(spec, resource(None), instance)

    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    first_line = description.splitlines()[0]
    assert first_line == ("SageMaker training job tiny-train-fails ended Failed (secondary status Failed): "
                          "AlgorithmError: ExecuteUserScriptError:")
    assert 'ErrorMessage "RuntimeError: CUDA out of memory: tried to allocate 2.00 GiB"' in description
    assert f"Logs: {LOG_LINK}$3FlogStreamNameFilter$3Dtiny-train-fails" in description
    assert "Job: https://us-east-1.console.aws.amazon.com/sagemaker/home?region=us-east-1#/jobs/tiny-train-fails" in description
    assert "Traceback" not in first_line
    assert stub.calls.count("CreateTrainingJob") == 1 and stub.calls.count("DescribeTrainingJob") >= 5

    messages = run_log(instance, result)
    transitions = [m for m in messages if m.startswith("[pipes] SageMaker training job tiny-train-fails: ")]
    assert [t.split(": ", 2)[1] for t in transitions] == ["InProgress / Starting", "InProgress / Downloading",
                                                          "InProgress / Training", "Failed / Failed"]
    assert any(m.endswith("[tiny-train-fails algo-1] RuntimeError: CUDA out of memory: tried to allocate 2.00 GiB")
               for m in messages)


@pytest.fixture
def stub_endpoint(moto_url, monkeypatch):
    """Routes SageMaker calls to a stub started by the test, everything else to moto, through AWS_ENDPOINT_URL_*."""
    import dagster._core.pipes.utils as pipes_utils

    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    stubs: list[SageMakerStub] = []

    def start(stub: SageMakerStub) -> SageMakerStub:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", stub.url)
        stubs.append(stub)
        return stub

    yield start
    for stub in stubs:
        stub.stop()


def test_stopped_job_explains_the_stop(tmp_path, moto_url, stub_endpoint):
    code = tmp_path / "code"
    stage_source(spec_for(write_code(code), code), moto_url)
    stub_endpoint(SageMakerStub([("InProgress", "Training", "Training in progress."),
                                 ("Stopped", "MaxRuntimeExceeded", "Training job stopped: MaxRuntimeInSeconds reached")]))
    result = materialize(spec_for(code / "job_scripts" / "tiny_train.py", code, job_name="tiny-train-slow"),
                         resource(None))
    [failure] = [event for event in result.all_events if event.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert description.splitlines()[0] == ("SageMaker training job tiny-train-slow ended Stopped (secondary status "
                                           "MaxRuntimeExceeded): it ran past StoppingCondition.MaxRuntimeInSeconds")
    assert "Last status message: Training job stopped: MaxRuntimeInSeconds reached" in description
    assert f"Logs: {LOG_LINK}" in description


def test_a_job_the_run_can_no_longer_watch_is_stopped(tmp_path, moto_url, stub_endpoint):
    code = tmp_path / "code"
    stage_source(spec_for(write_code(code), code), moto_url)
    stub = stub_endpoint(SageMakerStub([("InProgress", "Training", "Training in progress.")], deny_describe_from_step=2))
    result = materialize(spec_for(code / "job_scripts" / "tiny_train.py", code, job_name="tiny-train-blind"),
                         resource(None))
    assert not result.success
    assert stub.calls[-1] == "StopTrainingJob"
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_failure_data.user_failure_data.description.startswith(
        "Lost track of SageMaker training job tiny-train-blind: AccessDeniedException: not authorized to perform "
        "DescribeTrainingJob; stopped it.")
