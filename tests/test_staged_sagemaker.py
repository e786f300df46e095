"""The real training job as SageMaker runs it: staged by `governed-ft aws stage` and `aws stage-model --from-dir`,
started by the resource, then run from exactly the CreateTrainingJob request moto recorded, in an /opt/ml laid out
as SageMaker's training toolkit lays it out, by the training container's interpreter (its CPython and torch, nothing
else: every other package comes from the staged environment channel), reporting through CloudWatch Logs."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from aws_fixtures import BUCKET, secret_value, start_world
from conftest import free_port
from job_runtimes import SageMakerRuntime, hooked_session
from governed_ft_dagster.defs.assets.training import finetuned_lora_model
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.cli import main
from governed_ft_dagster.job_code import source_tarball, training_source_dir
from governed_ft_dagster.provision import staging
from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.defs.resources.training_jobs import SageMakerTrainingResource
from governed_ft_dagster.training.base_model import STAGED_MARKER
from test_packing import tiny_base  # noqa: F401  (shared session fixture)
from test_training_asset import TABLE, TINY_RUN, TRAIN_ID, write_curated_table

REGION = "us-east-1"
DELTALAKE_VERSION = "1.6.6"
CODE_BUCKET = "governed-ft-code"
CODE_PREFIX = f"s3://{CODE_BUCKET}/code/"
MODEL_ID = "governed-ft/tiny-ministral3"
REVISION = "5f0e3c1a9b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f"
ROLE = "arn:aws:iam::123456789012:role/governed-ft-train-job"
# The AWS PyTorch 2.9.0 training container for ml.g5.16xlarge in us-east-1, as AWS lists it (available_images.md).
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.9.0-gpu-py312"


@pytest.fixture
def world(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    world, server = start_world(monkeypatch, free_port())
    yield world
    world.databricks.stop()
    server.stop()


@pytest.fixture
def sagemaker(world, monkeypatch, tmp_path, container_python) -> SageMakerRuntime:
    import dagster._core.pipes.utils as pipes_utils

    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    runtime = SageMakerRuntime(world.moto_url, tmp_path / "sagemaker", container_python)
    hooked_session(monkeypatch, runtime)
    runtime.client("s3").create_bucket(Bucket=CODE_BUCKET)
    return runtime


def cli(world, *args: str) -> dict:
    result = CliRunner().invoke(main, ["aws", *args, "--region", REGION, "--code-prefix", CODE_PREFIX,
                                       "--endpoint-url", world.moto_url, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stage(world, tiny_base: Path, build_cache: Path) -> tuple[dict, dict]:
    model = cli(world, "stage-model", "--model-id", MODEL_ID, "--revision", REVISION, "--from-dir", str(tiny_base))
    code = cli(world, "stage", "--only", "sagemaker", "--model-id", MODEL_ID, "--model-revision", REVISION,
               "--cache-dir", str(build_cache))
    return model, code


def resource(world, **overrides) -> SageMakerTrainingResource:
    return SageMakerTrainingResource(**{
        "region": REGION, "role_arn": ROLE, "checkpoint_s3_uri": f"s3://{CODE_BUCKET}/checkpoints",
        "output_s3_uri": f"s3://{BUCKET}/ml/training-output/", "code_s3_prefix": CODE_PREFIX,
        "base_model_id": MODEL_ID, "base_model_revision": REVISION, "endpoint_url": world.moto_url,
        "poll_interval_s": 0.1, **overrides})


def materialize(world, tiny_base: Path, instance: dg.DagsterInstance | None = None, **overrides):
    resources = {"catalog": world.catalog_resource(), "training": resource(world, **overrides),
                 "base_model": BaseModelResource(model_ref=MODEL_ID, tokenizer_dir=str(tiny_base))}
    return dg.materialize(
        [finetuned_lora_model, dg.AssetSpec("curated_training_table")], selection=[finetuned_lora_model.key],
        resources=resources, instance=instance, raise_on_error=False,
        run_config={"ops": {"finetuned_lora_model": {"config": TINY_RUN}}},
    )


def failure_message(result) -> str:
    return "\n".join(e.event_specific_data.error.message for e in result.get_step_failure_events()
                     if e.event_specific_data.error) or "\n".join(
        str(e.step_failure_data.user_failure_data.description) for e in result.all_events if e.is_step_failure)


def test_the_real_training_job_runs_from_the_staged_bytes_and_its_report_is_the_materialization(
        world, sagemaker, tiny_base, build_cache):
    version = write_curated_table(world)
    world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
    model, code = stage(world, tiny_base, build_cache)
    assert model["action"] == "uploaded" and model["uri"] == staging.model_uri(CODE_PREFIX, MODEL_ID, REVISION)
    assert [a["kind"] for a in code["artifacts"]] == [staging.KIND_SOURCE, staging.KIND_SAGEMAKER_ENV,
                                                       staging.KIND_MODEL]
    assert cli(world, "stage-model", "--model-id", MODEL_ID, "--revision", REVISION,
               "--from-dir", str(tiny_base))["action"] == "present"
    instance = dg.DagsterInstance.ephemeral()

    result = materialize(world, tiny_base, instance)

    assert result.success, failure_message(result) + "\n" + "".join(sagemaker.outputs)[-4000:]
    [request] = sagemaker.requests
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    expected = code["job_parameters"]["sagemaker_create_training_job"]
    assert [c["ChannelName"] for c in expected["InputDataConfig"]] == ["model", "environment"]
    hps = request["HyperParameters"]
    for key, value in expected["HyperParameters"].items():
        assert hps[key] == value
    assert request["InputDataConfig"] == expected["InputDataConfig"]
    referenced = [json.loads(hps["sagemaker_submit_directory"]),
                  *[c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]]]
    assert all(uri.startswith(CODE_PREFIX) for uri in referenced)
    raw = json.dumps(request)
    unstaged = raw.replace(model["uri"], "")  # the staged prefix is named after the model; nothing else may be
    assert MODEL_ID not in unstaged and "huggingface" not in raw and "index-url" not in raw
    assert "base_model" not in {key for key in hps if key != "base_model_revision"}
    assert json.loads(hps["base_model_revision"]) == REVISION
    for principal in Principal:
        assert secret_value(principal) not in raw
    assert json.loads(hps["catalog_secret_id"]) == f"governed-ft/{Principal.TRAIN.value}"

    [root] = sagemaker.roots
    staged_model = root / "input" / "data" / staging.MODEL_CHANNEL
    assert json.loads((staged_model / STAGED_MARKER).read_text()) == {"id": MODEL_ID, "revision": REVISION}
    assert json.loads((root / "input" / "config" / "hyperparameters.json").read_text()) == hps

    [materialization] = result.asset_materializations_for_node("finetuned_lora_model")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    # What the job reported through Pipes (CloudWatch), not a file the asset read back.
    pipes_lines = [json.loads(line) for line in sagemaker.outputs[0].splitlines() if line.startswith('{"__dagster_pipes')]
    [reported] = [m["params"] for m in pipes_lines if m["method"] == "report_asset_materialization"]
    job_said = {key: value["raw_value"] for key, value in reported["metadata"].items()}
    assert metadata["eval_loss"] == job_said["final_eval_loss"] and metadata["train_loss"] == job_said["train_loss"]
    assert metadata["base_eval_loss"] == job_said["base_eval_loss"]
    assert metadata["global_step"] == job_said["global_step"] == TINY_RUN["max_steps"]
    assert metadata["base_model_revision"] == REVISION and metadata["device"] == "cpu"
    assert metadata["source_version"] == version and metadata["job_run_kind"] == "SageMakerTrainingJob"
    assert metadata["job_properties"]["base_model_s3_uri"] == model["uri"]
    assert metadata["model_artifacts"].endswith(f"/{metadata['job_run_id']}/output/model.tar.gz")
    prefix = metadata["adapter_location"].removeprefix(f"s3://{BUCKET}/") + "/"
    names = {o["Key"][len(prefix):] for o in world.boto("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert {"adapter_config.json", "adapter_model.safetensors", "training_summary.json"} <= names
    summary = json.loads(world.boto("s3").get_object(Bucket=BUCKET, Key=prefix + "training_summary.json")["Body"].read())
    assert summary["base_model"]["id"] == "mistralai/Ministral-3-3B-Instruct-2512"  # the tiny base's production model
    assert summary["base_model"]["revision"] == REVISION and summary["base_model"]["tiny_stand_in"] is True
    assert summary["training_job_name"] == metadata["job_run_id"]
    # The container's torch and the staged packages, not the orchestrator's pins.
    assert summary["versions"] == {"torch": "2.9.0+cu128", "transformers": "5.24.0", "peft": "0.21.2"}
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("base model eval loss on the validation set" in m for m in messages)
    events = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(result.run_id))
    for principal in Principal:
        assert secret_value(principal) not in events and secret_value(principal) not in sagemaker.outputs[0]


def test_a_module_left_out_of_the_staged_source_fails_the_job(world, sagemaker, tiny_base, tmp_path, build_cache):
    write_curated_table(world)
    world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
    _, code = stage(world, tiny_base, build_cache)
    [source] = [a for a in code["artifacts"] if a["kind"] == staging.KIND_SOURCE]
    # The same key, bytes without one module: the job must fail though the orchestrator's copy is complete.
    _, folder = training_source_dir(tmp_path / "source")
    (folder / "governed_ft_dagster" / "training" / "packing.py").unlink()
    sagemaker.client("s3").put_object(Bucket=CODE_BUCKET, Key=staging.split_s3_uri(source["uri"])[1],
                                      Body=source_tarball(str(folder)))

    result = materialize(world, tiny_base)

    assert not result.success and len(sagemaker.requests) == 1
    assert "No module named 'governed_ft_dagster.training.packing'" in sagemaker.outputs[0]
    assert str(sagemaker.roots[0] / "code" / "governed_ft_dagster") in sagemaker.outputs[0]
    assert not world.boto("s3").list_objects_v2(Bucket=BUCKET, Prefix="ml/adapters/").get("KeyCount")


def test_a_package_left_out_of_the_staged_environment_fails_the_job(world, sagemaker, tiny_base, build_cache):
    write_curated_table(world)
    world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
    _, code = stage(world, tiny_base, build_cache)
    [env] = [a for a in code["artifacts"] if a["kind"] == staging.KIND_SAGEMAKER_ENV]
    # The same key, the environment without deltalake: the container does not have it, so the job cannot read.
    bucket, key = staging.split_s3_uri(env["uri"])
    whole = sagemaker.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    partial = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(whole), mode="r:gz") as source, \
            tarfile.open(fileobj=partial, mode="w:gz", compresslevel=1) as target:
        for member in source:
            if member.name.split("/")[0] not in ("deltalake", f"deltalake-{DELTALAKE_VERSION}.dist-info"):
                target.addfile(member, source.extractfile(member) if member.isfile() else None)
    sagemaker.client("s3").put_object(Bucket=bucket, Key=key, Body=partial.getvalue())

    result = materialize(world, tiny_base)

    assert not result.success and len(sagemaker.requests) == 1
    assert "ModuleNotFoundError: No module named 'deltalake'" in sagemaker.outputs[0], sagemaker.outputs[0][-3000:]
    assert not world.boto("s3").list_objects_v2(Bucket=BUCKET, Prefix="ml/adapters/").get("KeyCount")


@pytest.mark.parametrize("left_out", ["source", "model", "environment"])
def test_an_artifact_left_out_of_staging_stops_the_job_before_it_starts(world, sagemaker, tiny_base, left_out,
                                                                        build_cache):
    write_curated_table(world)
    world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
    model, code = stage(world, tiny_base, build_cache)
    staged = {a["kind"]: a["uri"] for a in code["artifacts"]}
    gone = {"source": staged[staging.KIND_SOURCE], "model": staging.model_complete_uri(model["uri"]),
            "environment": staged[staging.KIND_SAGEMAKER_ENV]}[left_out]
    sagemaker.client("s3").delete_object(Bucket=CODE_BUCKET, Key=staging.split_s3_uri(gone)[1])

    result = materialize(world, tiny_base)

    assert not result.success and sagemaker.requests == []
    message = failure_message(result)
    assert f"is not staged at {gone}" in message and "governed-ft aws stage" in message


def test_a_base_model_other_than_the_staged_one_is_refused(world, sagemaker, tiny_base, build_cache):
    write_curated_table(world)
    world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
    stage(world, tiny_base, build_cache)

    result = materialize(world, tiny_base, base_model_id="mistralai/Ministral-3-3B-Instruct-2512")

    assert not result.success and sagemaker.requests == []
    assert f"asks for base model '{MODEL_ID}'" in failure_message(result)
