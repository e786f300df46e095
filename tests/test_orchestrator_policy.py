"""The orchestrator's generated policy, statement by statement, under enforcement: with the whole policy every call its
resources make is allowed (tests/test_pipeline_aws.py runs the graph so); without any one statement, the first call
that needs it is refused with AWS's error naming the action and the resource. Passing a role is checked as AWS checks
it on StartJobRun and CreateTrainingJob: iam:PassRole on that role, for that service."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from aws_fixtures import (
    ACCOUNT,
    CODE_BUCKET,
    ORCHESTRATOR_POLICY_ARN,
    REGION,
    STACK,
    EnforcedWorld,
    build_enforced_world,
    enforcing,
    keys_of,
)
from conftest import free_port
from governed_ft_dagster.catalog.base import CatalogError, Principal
from governed_ft_dagster.defs.resources.pipes_sagemaker import LOG_GROUP, PipesSageMakerContextInjector, list_streams
from governed_ft_dagster.defs.resources.spark_jobs import EmrServerlessResource
from governed_ft_dagster.defs.resources.training_jobs import SageMakerTrainingResource, TrainingJobSpec
from governed_ft_dagster.provision import staging
from governed_ft_dagster.provision.policies import StackConfig, orchestrator_policy

CODE_PREFIX = f"s3://{CODE_BUCKET}/code/"
STAGED = f"{CODE_PREFIX}scripts/0123456789abcdef/preprocess_risk_factors.py"
EMR_ROLE = f"arn:aws:iam::{ACCOUNT}:role/{STACK}-emr-runtime"
SAGEMAKER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/{STACK}-sagemaker-execution"
JOB = "lora-risk-factors-v3-0123456789ab"
POLICY = orchestrator_policy(StackConfig(name=STACK, region=REGION, account_id=ACCOUNT))


@pytest.fixture(scope="module")
def enforced(tmp_path_factory) -> Iterator[tuple[EnforcedWorld, dict[str, str]]]:
    """The enforcing world, a staged file, the stack's EMR application with one job run; IAM on throughout."""
    monkeypatch = pytest.MonkeyPatch()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server._port}"
    world = build_enforced_world(url, monkeypatch)
    source = tmp_path_factory.mktemp("source")
    (source / "job_scripts").mkdir()
    (source / "job_scripts" / "train.py").write_text("print('train')\n")
    try:
        with enforcing(url):
            s3, emr = world.boto("s3"), world.boto("emr-serverless")
            s3.put_object(Bucket=CODE_BUCKET, Key=staging.split_s3_uri(STAGED)[1], Body=b"print('job')\n")
            [app] = [a for a in emr.list_applications()["applications"] if a["name"] == f"{STACK}-preprocess"]
            run = emr.start_job_run(applicationId=app["id"], executionRoleArn=EMR_ROLE, clientToken="seed",
                                    jobDriver={"sparkSubmit": {"entryPoint": STAGED}})
            yield world, {"application": app["id"], "job_run": run["jobRunId"], "source": str(source)}
    finally:
        world.databricks.stop()
        server.stop()
        monkeypatch.undo()


def identity(world: EnforcedWorld, name: str, document: dict[str, Any]) -> dict[str, str]:
    """An IAM user holding exactly this document (made by the stack's operator)."""
    iam = world.boto("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="orchestrator", PolicyDocument=json.dumps(document))
    return keys_of(iam.create_access_key(UserName=name)["AccessKey"])


def acting_as(monkeypatch, keys: dict[str, str]) -> None:
    """The process' default AWS credentials (the resources call boto3.client()) are these keys."""
    for key, value in keys.items():
        monkeypatch.setenv(key.upper(), value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def spark(world: EnforcedWorld) -> EmrServerlessResource:
    return EmrServerlessResource(region=REGION, application_name=f"{STACK}-preprocess", execution_role_arn=EMR_ROLE,
                                 code_prefix=CODE_PREFIX, log_group=f"/aws/emr-serverless/{STACK}",
                                 endpoint_url=world.moto_url)


def training(world: EnforcedWorld) -> SageMakerTrainingResource:
    return SageMakerTrainingResource(region=REGION, role_arn=SAGEMAKER_ROLE, python_env="image",
                                     checkpoint_s3_uri=f"s3://{CODE_BUCKET}/scratch/train/checkpoints",
                                     output_s3_uri=f"s3://{CODE_BUCKET}/scratch/train/output/",
                                     code_s3_prefix=CODE_PREFIX, endpoint_url=world.moto_url,
                                     tags={"governed-ft": "true"})


def create_job(world: EnforcedWorld, seeded: dict[str, str], role: str = SAGEMAKER_ROLE) -> None:
    resource = training(world)
    spec = TrainingJobSpec(script=str(Path(seeded["source"]) / "job_scripts" / "train.py"),
                           source_dir=seeded["source"], job_name=JOB)
    params = resource.create_training_job_params(spec, JOB, STAGED, image="img")
    resource.boto_client("sagemaker").create_training_job(**{**params, "RoleArn": role})


def start_run(world: EnforcedWorld, seeded: dict[str, str]) -> None:
    resource = spark(world)
    resource.boto_client("emr-serverless").start_job_run(
        applicationId=resource.resolve_application(resource.boto_client("emr-serverless")),
        executionRoleArn=EMR_ROLE, clientToken="probe", jobDriver={"sparkSubmit": {"entryPoint": STAGED}})


def spill(world: EnforcedWorld) -> None:
    injector = PipesSageMakerContextInjector(s3_client=training(world).boto_client("s3"),
                                             spill_s3_uri=f"{CODE_PREFIX}pipes")
    # Incompressible, so its encoding exceeds the 512 characters of an Environment value.
    with injector.inject_context({"extras": {"padding": secrets.token_hex(600)}}):  # type: ignore[typeddict-item]
        pass


# Per statement: the call of the resources that needs it, and the action and resource AWS names when it is missing.
PROBES: dict[str, tuple[Callable[[EnforcedWorld, dict[str, str]], Any], str, str]] = {
    "ReadPrincipalSecrets": (lambda w, s: w.catalog_resource().client(Principal.REGISTRAR).client_id,
                             "secretsmanager:GetSecretValue",
                             rf"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{STACK}/registrar-\w{{6}}"),
    "FindPreprocessApplication": (lambda w, s: spark(w).resolve_application(spark(w).boto_client("emr-serverless")),
                                  "emr-serverless:ListApplications", r"\*"),
    "RunPreprocessJobs": (start_run, "emr-serverless:StartJobRun",
                          rf"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/<application>"),
    "WatchPreprocessJobRuns": (lambda w, s: spark(w).boto_client("emr-serverless").get_job_run(
        applicationId=s["application"], jobRunId=s["job_run"]), "emr-serverless:GetJobRun",
        rf"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/<application>/jobruns/<job_run>"),
    "PassPreprocessRole": (start_run, "iam:PassRole", re.escape(EMR_ROLE)),
    "RunTrainingJobs": (lambda w, s: training(w).free_job_name(training(w).boto_client("sagemaker"), JOB),
                        "sagemaker:DescribeTrainingJob", rf"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{JOB}"),
    "PassTrainingRole": (create_job, "iam:PassRole", re.escape(SAGEMAKER_ROLE)),
    "ReadJobLogs": (lambda w, s: list_streams(training(w).boto_client("logs"), LOG_GROUP, f"{JOB}/"),
                    "logs:DescribeLogStreams", rf"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{LOG_GROUP}"),
    "CheckStagedCode": (lambda w, s: staging.CodePrefix(training(w).boto_client("s3"), CODE_PREFIX).require(
        STAGED, "the job script"), "s3:GetObject", re.escape(f"arn:aws:s3:::{CODE_BUCKET}/") + r"code/scripts/\S+"),
    "ListStagedCode": (lambda w, s: staging.CodePrefix(training(w).boto_client("s3"), CODE_PREFIX).require(
        STAGED + ".missing", "a file never staged"), "s3:GetObject",
        re.escape(f"arn:aws:s3:::{CODE_BUCKET}/") + r"code/scripts/\S+\.missing"),
    "SpillPipesContext": (lambda w, s: spill(w), "s3:PutObject",
                          re.escape(f"arn:aws:s3:::{CODE_BUCKET}/") + r"code/pipes/\w+/context\.json"),
}


def refusal(call: Callable[[], Any]) -> str:
    """The one-line error text the call ends with."""
    try:
        call()
    except (ClientError, CatalogError, staging.NotStaged) as exc:
        return " ".join(str(exc).split())
    raise AssertionError("the call was allowed")


def test_every_statement_has_a_probe():
    assert [s["Sid"] for s in POLICY["Statement"]] == list(PROBES)


def test_with_the_whole_policy_every_probe_is_allowed(enforced, monkeypatch):
    world, seeded = enforced
    acting_as(monkeypatch, world.orchestrator)  # the user that holds the policy `aws apply` created and attached
    assert world.boto("iam").list_attached_user_policies(UserName="orchestrator")["AttachedPolicies"] == [
        {"PolicyName": f"{STACK}-orchestrator", "PolicyArn": ORCHESTRATOR_POLICY_ARN}]
    for sid, (probe, _, _) in PROBES.items():
        if sid == "ListStagedCode":  # allowed to learn that a file is missing: 404, "not staged"
            assert "is not staged at" in refusal(lambda: probe(world, seeded))
        elif sid not in ("RunPreprocessJobs", "PassPreprocessRole", "PassTrainingRole"):
            probe(world, seeded)
    start_run(world, seeded)
    create_job(world, seeded)


@pytest.mark.parametrize("sid", list(PROBES))
def test_without_one_statement_the_call_that_needs_it_is_refused_naming_action_and_resource(enforced, monkeypatch, sid):
    world, seeded = enforced
    document = {**POLICY, "Statement": [s for s in POLICY["Statement"] if s["Sid"] != sid]}
    acting_as(monkeypatch, identity(world, f"orchestrator-without-{sid}", document))
    probe, action, resource = PROBES[sid]

    said = refusal(lambda: probe(world, seeded))

    resource = resource.replace("<application>", seeded["application"]).replace("<job_run>", seeded["job_run"])
    pattern = rf"{re.escape(action)} on (resource: )?{resource}(\b|$)"
    assert re.search(pattern, said), said


def test_a_job_role_passed_to_the_other_service_is_refused(enforced, monkeypatch):
    world, seeded = enforced
    acting_as(monkeypatch, world.orchestrator)
    said = refusal(lambda: create_job(world, seeded, role=EMR_ROLE))
    assert re.search(rf"is not authorized to perform: iam:PassRole on resource: {re.escape(EMR_ROLE)}\b", said), said
