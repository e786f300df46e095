"""The whole graph on the aws path with the storage and IAM enforcing: moto with IAM on, the stack and catalog built by
`governed-ft aws apply` and `catalog apply`, the jobs' code staged by `governed-ft aws stage`, every byte of governed
data read or written through credentials vended from moto's STS for its table or path. The orchestrator runs as an
identity holding exactly the policy `aws apply` generated for it, with the EMR Serverless and SageMaker resources as
production configures them; each job then runs from its recorded request as its service runs it, with its role's
credentials (tests/job_runtimes.py). Raw to registered model version and lineage."""

import json
import re
from pathlib import Path

import dagster as dg
import pytest
import requests

import aws_fixtures
from aws_fixtures import ACCOUNT, CATALOG, CODE_BUCKET, DATA_BUCKET, REGION, STACK, _cli, enforced_registry_world
from job_runtimes import EmrRuntime, SageMakerRuntime, hooked_session
from governed_ft_dagster.defs.assets.curated import curated_training_table
from governed_ft_dagster.defs.assets.model import uc_model_version
from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
from governed_ft_dagster.defs.partitions import raw_partitions
from governed_ft_dagster.defs.assets.training import finetuned_lora_model
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.defs.checks import all_checks
from governed_ft_dagster.audit import stored_manifests, verify
from governed_ft_dagster.cli.lineage import graph_from_databricks
from governed_ft_dagster.governance import CURATED_TABLE, PRODUCTION_MODEL_NAME, RAW_TABLE
from governed_ft_dagster.lineage.derive import upstream_chain
from governed_ft_dagster.cli.provision import aws as aws_group
from governed_ft_dagster.defs.resources import aws_resources
from governed_ft_dagster.defs.resources.registry import DatabricksLineageResource, DatabricksRegistryResource
from governed_ft_dagster.settings import load_settings
from test_training_asset import TINY_RUN

raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
ASSETS = [raw_risk_factors, curated_training_table, finetuned_lora_model, uc_model_version,
          *all_checks(raw_risk_factors.partitions_def)]
DOWNSTREAM = [curated_training_table.key, finetuned_lora_model.key, uc_model_version.key]
REVISION = "7a3c9e1b5d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c"
CODE_PREFIX = f"s3://{CODE_BUCKET}/code/"
EMR_ROLE, SAGEMAKER_ROLE = f"{STACK}-emr-runtime", f"{STACK}-sagemaker-execution"


@pytest.fixture
def world(monkeypatch, mlflow_server):
    """The enforcing world with the MLflow Unity Catalog registry, MLflow tracking and lineage APIs; IAM on
    throughout. MLflow moves the model version's files through the Files API (the SDK models repository)."""
    with enforced_registry_world(monkeypatch, tracking_url=mlflow_server.url, sdk_models_repo=True) as (
            aws, registry, lineage_service):
        yield aws, registry, lineage_service


def planted_secrets(aws) -> set[str]:
    """Every OAuth client secret and access token of the workspace, every vended STS secret key and session
    token, and the AWS secret keys of the operator and the orchestrator."""
    planted = set(aws.databricks.clients.values()) | set(aws.databricks.tokens)
    planted |= {c[k] for c in aws.databricks.vended for k in ("secret_access_key", "session_token") if c.get(k)}
    planted |= {keys["aws_secret_access_key"] for keys in (aws.admin, aws.orchestrator, aws.unity_catalog)}
    planted |= {aws.unity_catalog["aws_session_token"]}
    planted |= {keys[k] for keys in aws.job_roles.values() for k in ("aws_secret_access_key", "aws_session_token")}
    return {secret for secret in planted if secret}


def assert_no_secret_leaked(aws, instance, folders, registry, lineage_service) -> None:
    """No planted secret in the event log (Pipes messages included), the workspace requests, the registry's and
    the lineage service's records, the objects in the governed bucket, or the files the run left behind."""
    planted = planted_secrets(aws)
    haystacks = {}
    for run in instance.get_runs():
        haystacks[f"event log of run {run.run_id}"] = "\n".join(
            f"{entry.user_message}\n{entry.dagster_event!r}" for entry in instance.all_logs(run.run_id))
    for request in aws.databricks.calls():
        if request.path != "/oidc/v1/token":
            haystacks[f"request {request.method} {request.path}"] = f"{request.body!r} {request.query!r}"
    haystacks["registry"] = json.dumps([registry.versions, registry.model_tags], default=str)
    haystacks["lineage"] = json.dumps([lineage_service.metadata, lineage_service.relationships], default=str)
    s3 = aws.boto("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=DATA_BUCKET):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=DATA_BUCKET, Key=item["Key"])["Body"].read()
            haystacks[f"s3://{DATA_BUCKET}/{item['Key']}"] = body.decode("latin-1")
    for folder in folders:
        for path in Path(folder).rglob("*"):
            relative = path.relative_to(folder)  # code, environments and channels fetched from the code bucket: skip
            staged = "/input/data/" in f"/{relative.as_posix()}" or {"s3", "environment"} & set(relative.parts)
            if path.is_file() and path.stat().st_size < 50_000_000 and not staged:
                haystacks[str(path)] = path.read_bytes().decode("latin-1")
    leaks = [(where, secret[:12]) for where, text in haystacks.items() for secret in planted if secret in text]
    assert len(planted) > 2 * len(Principal) and len(haystacks) > 50
    assert sum(bool(c.get("session_token")) for c in aws.databricks.vended) >= 8
    assert not leaks, leaks[:10]


def assert_registered_through_databricks_tracking(aws, registry, model, full_name: str, version: str) -> None:
    """The registration run went through the workspace's MLflow routes (tracking URI `databricks`, experiment
    /Shared/governed-ft) into the real server; the version's files through the Files API; its run link opens the
    run; no route the workspace does not serve was asked for."""
    fake = aws.databricks
    assert fake.unserved == []
    found = registry.versions[full_name][version]
    run_id, experiment = found["run_id"], found["source"].split("/mlflow-tracking/")[1].split("/")[0]
    assert found["run_tracking_server_id"] == fake.workspace_id
    link = model["mlflow_run"].value
    assert link == f"{fake.url}/ml/experiments/{experiment}/runs/{run_id}"
    page = requests.get(link, timeout=10)
    assert page.status_code == 200 and run_id in page.text and "lora_r" in page.text
    assert requests.get(f"{fake.url}/ml/experiments/{experiment}/runs/{'0' * 32}", timeout=10).status_code == 404
    registrar = aws.application_ids[Principal.REGISTRAR.value]
    tracked = [r for r in fake.calls("/api/2.0/mlflow/") if "/unity-catalog/" not in r.path]
    assert tracked and {r.principal for r in tracked} == {registrar}
    assert any(r.path == "/api/2.0/mlflow/experiments/get-by-name"
               and r.query["experiment_name"] == ["/Shared/governed-ft"] for r in tracked)
    by_name = requests.get(f"{fake.url}/api/2.0/mlflow/experiments/get-by-name",
                           params={"experiment_name": "/Shared/governed-ft"}, timeout=10)
    assert by_name.status_code == 401  # the workspace's tracking routes answer only a signed-in principal
    downloads = [r.method for r in fake.calls("/api/2.0/fs/files/") if r.method == "GET"]
    assert downloads == [] and fake.calls("/presigned/")  # the logged model came down by presigned URLs only
    uploads = [r.path for r in fake.calls("/api/2.0/fs/files/Models/") if r.method == "PUT"]
    model_files = f"/api/2.0/fs/files/Models/{full_name.replace('.', '/')}/{version}/"
    assert f"{model_files}MLmodel" in uploads and all(p.startswith(model_files) for p in uploads)
    assert not fake.calls("/api/2.0/mlflow/unity-catalog/model-versions/generate-temporary-credentials")
    assert {f"ml/models/{full_name}/{version}/MLmodel"} <= set(registry.uploaded(found["storage_location"]))


def table_files(aws, location: str) -> dict[str, str]:
    """Every object under a table's location (folder markers aside), with its ETag."""
    prefix = location.removeprefix(f"s3://{DATA_BUCKET}/").rstrip("/") + "/"
    pages = aws.boto("s3").get_paginator("list_objects_v2").paginate(Bucket=DATA_BUCKET, Prefix=prefix)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")}


def refusals_since(count: int) -> list[tuple[str, str, str]]:
    """Refusals after the first count, less MLflow's HeadBucket for the bucket's region (refused, as on AWS)."""
    return [r for r in aws_fixtures.REFUSALS[count:] if r[1:] != ("s3:ListBucket", f"arn:aws:s3:::{DATA_BUCKET}")]


def run_pipeline(instance, resources):
    for partition in ("2023|10-K", "2023|10-Q", "2024|10-K", "2024|10-Q"):
        assert dg.materialize([raw_risk_factors], partition_key=partition, instance=instance, resources=resources).success
    result = dg.materialize(ASSETS, selection=dg.AssetSelection.assets(*DOWNSTREAM), instance=instance,
                            resources=resources, raise_on_error=False,
                            run_config={"ops": {"finetuned_lora_model": {"config": TINY_RUN}}})
    assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    return result


def stage_jobs(aws, tiny_base: Path, spark_home: Path, build_cache: Path) -> None:
    """`governed-ft aws stage-model` and `aws stage`, as the stack's operator runs them."""
    env = {**{k.upper(): v for k, v in aws.admin.items()}, "AWS_SESSION_TOKEN": None,
           "GOVERNED_FT_AWS_ENDPOINT_URL": aws.moto_url, "AWS_REGION": REGION, "GOVERNED_FT_STACK": STACK,
           "GOVERNED_FT_HOME": str(spark_home)}
    _cli(aws_group, ["stage-model", "--revision", REVISION, "--from-dir", str(tiny_base), "--json"], env)
    _cli(aws_group, ["stage", "--tokenizer-dir", str(tiny_base), "--model-revision", REVISION,
                     "--cache-dir", str(build_cache), "--json"], env)


def production_jobs(aws, monkeypatch, tiny_base: Path) -> dict:
    """The EMR Serverless and SageMaker resources of the aws deployment, from the variables an operator sets after
    `aws apply` (every AWS client of the process reaches moto through AWS_ENDPOINT_URL); only their polls are
    shortened."""
    env = {"GOVERNED_FT_DEPLOYMENT": "aws", "GOVERNED_FT_STACK": STACK, "AWS_REGION": REGION,
           "AWS_ENDPOINT_URL": aws.moto_url, "DATABRICKS_HOST": aws.databricks.url,
           "GOVERNED_FT_STORAGE_ROOT": f"s3://{DATA_BUCKET}", "GOVERNED_FT_CODE_PREFIX": CODE_PREFIX,
           "GOVERNED_FT_EMR_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/{EMR_ROLE}",
           "GOVERNED_FT_EMR_LOG_GROUP": f"/aws/emr-serverless/{STACK}",
           "GOVERNED_FT_SAGEMAKER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/{SAGEMAKER_ROLE}",
           "GOVERNED_FT_CHECKPOINT_URI": f"s3://{CODE_BUCKET}/scratch/train/checkpoints",
           "GOVERNED_FT_TRAINING_OUTPUT_URI": f"s3://{CODE_BUCKET}/scratch/train/output/",
           "GOVERNED_FT_MODEL_REVISION": REVISION, "GOVERNED_FT_TOKENIZER_DIR": str(tiny_base)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    production = aws_resources(load_settings(env))
    return {"spark": production["spark"].model_copy(update={"poll_interval_s": 0.2}),
            "training": production["training"].model_copy(update={"poll_interval_s": 0.2}),
            "base_model": production["base_model"]}


def test_raw_to_model_version_with_lineage_and_an_idempotent_rerun_with_the_storage_enforcing(
        world, edgar, spark_home, tiny_base, tmp_path, monkeypatch, build_cache, container_python):
    import dagster._core.pipes.utils as pipes_utils

    aws, registry, lineage_service = world
    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    stage_jobs(aws, tiny_base, spark_home, build_cache)
    emr = EmrRuntime(aws.moto_url, tmp_path / "emr", spark_home, keys=aws.job_roles[EMR_ROLE])
    sagemaker = SageMakerRuntime(aws.moto_url, tmp_path / "sagemaker", container_python,
                                 keys=aws.job_roles[SAGEMAKER_ROLE])
    hooked_session(monkeypatch, emr, sagemaker)
    resources = {
        "catalog": aws.catalog_resource(), "edgar": edgar, **production_jobs(aws, monkeypatch, tiny_base),
        "registry": DatabricksRegistryResource(host=aws.databricks.url, region="us-east-1",
                                               secret_id=f"{STACK}/registrar", aws_endpoint_url=aws.moto_url),
        "lineage": DatabricksLineageResource(host=aws.databricks.url, region="us-east-1", secret_id=f"{STACK}/registrar",
                                             aws_endpoint_url=aws.moto_url),
    }
    refusals_before = len(aws_fixtures.REFUSALS)
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_pipeline(instance, resources)
        refused = refusals_since(refusals_before)
        assert refused == [], refused  # every request signed, in scope and unexpired, every call allowed
        # Started by the resources as the orchestrator, run by the services as the job roles.
        assert len(emr.requests) == len(sagemaker.requests) == 1
        assert emr.requests[0]["executionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{EMR_ROLE}"
        assert sagemaker.requests[0]["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{SAGEMAKER_ROLE}"
        assert sagemaker.requests[0]["AlgorithmSpecification"]["TrainingImage"] == (
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.9.0-gpu-py312")
        model = first.asset_materializations_for_node("uc_model_version")[0].metadata
        curated = first.asset_materializations_for_node("curated_training_table")[0].metadata
        training = first.asset_materializations_for_node("finetuned_lora_model")[0].metadata
        checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
        assert all(checks.values()), checks
        assert_no_secret_leaked(aws, instance, [tmp_path, spark_home], registry, lineage_service)
        assert curated["job_run_kind"].value == "EMRServerlessJobRun"
        assert training["job_run_kind"].value == "SageMakerTrainingJob"
        full_name, version = f"{CATALOG}.{PRODUCTION_MODEL_NAME}", str(model["model_version"].value)
        assert model["created"].value is True
        assert model["catalog_ui"].value == f"{aws.databricks.url}/explore/data/models/{CATALOG}/ml/{PRODUCTION_MODEL_NAME.split('.')[-1]}/version/{version}"
        assert curated["catalog_ui"].value.endswith(f"/explore/data/{CATALOG}/curated/risk_factor_instructions")
        chain = upstream_chain(graph_from_databricks(resources["lineage"].workspace_client(), full_name, version),
                               full_name, version)
        assert chain["curated_table"]["full_name"] == f"{CATALOG}.{CURATED_TABLE}"
        assert int(chain["curated_table"]["version_read"]) == training["source_version"].value == curated["delta_version"].value
        assert chain["raw_table"]["full_name"] == f"{CATALOG}.{RAW_TABLE}"
        assert int(chain["raw_table"]["version_read"]) == curated["source_version"].value
        assert chain["training_run"] and chain["preprocessing_run"]
        assert_registered_through_databricks_tracking(aws, registry, model, full_name, version)
        assert chain["ingest_runs"] and {r["kind"] for r in chain["ingest_runs"]} == {"EdgarIngestRun"}
        # verify reads the recorded table versions as train and preprocess, with credentials vended from STS
        (stored,), _ = stored_manifests(resources["registry"], [full_name], version)
        verified = verify(resources["catalog"], stored)
        assert verified["match"] and verified["raw"]["status"] == "match", verified
        versions_before = {name: sorted(v) for name, v in registry.versions.items()}
        lineage_before = (len(lineage_service.metadata), len(lineage_service.relationships))
        aws.databricks.clear_requests()

        again = run_pipeline(instance, resources)
        # Unchanged inputs: curated yields nothing, so Dagster skips training and registration; no event, no version.
        assert not [key for key in DOWNSTREAM if again.asset_materializations_for_node(key.to_user_string())]
        skipped = {e.step_key for e in again.all_events if e.event_type_value == "STEP_SKIPPED"}
        assert {"finetuned_lora_model", "uc_model_version"} <= skipped
        assert {name: sorted(v) for name, v in registry.versions.items()} == versions_before
        assert (len(lineage_service.metadata), len(lineage_service.relationships)) == lineage_before
        assert not [c for c in aws.databricks.calls("/api/2.0/lineage-tracking") if c.method == "POST"]
        assert not aws.databricks.calls("/api/2.0/mlflow/unity-catalog/model-versions/create")
        assert refusals_since(refusals_before) == []

        # One vend scoped too narrowly: READ_WRITE on the curated table that reaches only its _delta_log.
        location = str(curated["target_location"].value).rstrip("/")
        files_before = table_files(aws, location)
        aws.narrow[(location, "READ_WRITE")] = (f"{location}/_delta_log", True)
        narrowed = dg.materialize([curated_training_table], instance=instance, resources=resources,
                                  raise_on_error=False,
                                  run_config={"ops": {"curated_training_table": {"config": {"seed": 1}}}})
        aws.narrow.clear()
        [failure] = narrowed.get_step_failure_events()
        refused = [line for line in failure.event_specific_data.error.message.splitlines()
                   if line.startswith("StorageRefusedError: ")]
        assert len(refused) == 1, failure.event_specific_data.error.to_string()  # with its causes, if any
        assert re.fullmatch(rf"StorageRefusedError: the storage refused principal 'preprocess' at {re.escape(location)}"
                            rf"(/\S+)?: the credentials the catalog vended for READ_WRITE on "
                            rf"{re.escape(f'{CATALOG}.{CURATED_TABLE}')} do not reach it", refused[0]), refused[0]
        assert table_files(aws, location) == files_before  # no data file, no _delta_log entry: no partial commit
        assert refusals_since(refusals_before)
