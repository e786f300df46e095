"""The real training job as SageMaker runs it: staged by `governed-ft aws stage` and `aws stage-model --from-dir`,
started by the resource, then run from exactly the CreateTrainingJob request moto recorded, in an /opt/ml laid out
as SageMaker's training toolkit lays it out, reporting through CloudWatch Logs and the project's Pipes client."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import boto3
import dagster as dg
import pytest
from click.testing import CliRunner
from dagster_pipes import decode_param, encode_param

from aws_fixtures import BUCKET, secret_value, start_world
from conftest import free_port
from governed_ft_dagster.defs.assets.training import finetuned_lora_model
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.cli import main
from governed_ft_dagster.job_code import source_tarball, training_source_dir
from governed_ft_dagster.defs.resources.pipes_sagemaker import LOG_GROUP
from governed_ft_dagster.provision import staging
from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.defs.resources.training_jobs import SageMakerTrainingResource
from governed_ft_dagster.storage import extract_tar
from governed_ft_dagster.training.base_model import STAGED_MARKER
from test_packing import tiny_base  # noqa: F401  (shared session fixture)
from test_training_asset import TABLE, TINY_RUN, TRAIN_ID, write_curated_table

REGION = "us-east-1"
CODE_BUCKET = "governed-ft-code"
CODE_PREFIX = f"s3://{CODE_BUCKET}/code/"
MODEL_ID = "governed-ft/tiny-ministral3"
REVISION = "5f0e3c1a9b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f"
ROLE = "arn:aws:iam::123456789012:role/governed-ft-train-job"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-gpu-py311-cu124-ubuntu22.04-sagemaker"
OPT_ML = "/opt/ml"


class SageMakerRuntime:
    """What SageMaker does after CreateTrainingJob, run here: /opt/ml from the request, the entry point, the logs."""

    def __init__(self, session: boto3.Session, moto_url: str, work: Path):
        self.session, self.moto_url, self.work = session, moto_url, work
        self.requests: list[dict] = []
        self.outputs: list[str] = []
        self.roots: list[Path] = []

    def client(self, service: str):
        return self.session.client(service, endpoint_url=self.moto_url)

    def record(self, **kwargs) -> None:
        self.requests.append(json.loads(kwargs["params"]["body"]))

    def download_prefix(self, uri: str, target: Path) -> list[str]:
        """Every object under an S3Prefix, at its path relative to the prefix (as a File-mode channel holds it)."""
        bucket, prefix = staging.split_s3_uri(uri)
        s3, names = self.client("s3"), []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix):].lstrip("/")
                if relative:
                    (target / relative).parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, item["Key"], str(target / relative))
                    names.append(relative)
        return names

    def at_root(self, root: Path, path: str) -> Path:
        """A path the request gives under /opt/ml, inside this job's temporary /opt/ml."""
        if not path.startswith(OPT_ML + "/"):
            raise AssertionError(f"{path} is not under {OPT_ML}")
        return root / path[len(OPT_ML) + 1:]

    def run(self, **kwargs) -> None:
        request = self.requests[-1]
        name = request["TrainingJobName"]
        root = self.work / name / "opt" / "ml"
        self.roots.append(root)
        dirs = {key: root / rel for key, rel in (("code", "code"), ("model", "model"), ("output", "output"),
                                                   ("output_data", "output/data"), ("config", "input/config"),
                                                   ("data", "input/data"), ("intermediate", "output/intermediate"))}
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        raw_hps = request["HyperParameters"]
        hps = {key: json.loads(value) for key, value in raw_hps.items()}
        user_hps = {key: value for key, value in hps.items() if not key.startswith("sagemaker_")}
        channels = {c["ChannelName"]: c for c in request.get("InputDataConfig", [])}
        (dirs["config"] / "hyperparameters.json").write_text(json.dumps(raw_hps))
        (dirs["config"] / "inputdataconfig.json").write_text(json.dumps({
            channel: {"TrainingInputMode": c.get("InputMode", "File"), "RecordWrapperType": "None",
                      "S3DistributionType": c["DataSource"]["S3DataSource"]["S3DataDistributionType"]}
            for channel, c in channels.items()}))
        resource_config = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
        (dirs["config"] / "resourceconfig.json").write_text(json.dumps(resource_config))
        for channel, config in channels.items():
            (dirs["data"] / channel).mkdir()
            self.download_prefix(config["DataSource"]["S3DataSource"]["S3Uri"], dirs["data"] / channel)
        checkpoint = request.get("CheckpointConfig") or {}
        checkpoint_dir = self.at_root(root, checkpoint.get("LocalPath", f"{OPT_ML}/checkpoints"))
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint:
            self.download_prefix(checkpoint["S3Uri"], checkpoint_dir)

        # The toolkit: fetch sagemaker_submit_directory into /opt/ml/code; a requirements.txt there would be
        # installed from a package index at job start, which the job's network cannot reach.
        bucket, key = staging.split_s3_uri(hps["sagemaker_submit_directory"])
        tarball = self.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            extract_tar(tar, dirs["code"])
        assert not (dirs["code"] / "requirements.txt").exists(), "requirements.txt would be installed at job start"

        argv = [item for key in sorted(user_hps)
                for item in (f"--{key}" if len(key) > 1 else f"-{key}", str(user_hps[key]))]
        training_env = {
            "job_name": name, "hyperparameters": user_hps, "user_entry_point": hps["sagemaker_program"],
            "module_dir": hps["sagemaker_submit_directory"], "model_dir": str(dirs["model"]),
            "output_dir": str(dirs["output"]), "output_data_dir": str(dirs["output_data"]),
            "input_dir": str(root / "input"), "input_config_dir": str(dirs["config"]),
            "channel_input_dirs": {c: str(dirs["data"] / c) for c in channels}, "current_host": "algo-1",
            "hosts": ["algo-1"], "num_gpus": 0, "num_cpus": 2, "is_master": True, "log_level": 20,
        }
        env = {
            **request.get("Environment", {}),
            "TRAINING_JOB_NAME": name,
            "TRAINING_JOB_ARN": kwargs["parsed"]["TrainingJobArn"],
            "SM_MODEL_DIR": str(dirs["model"]), "SM_OUTPUT_DIR": str(dirs["output"]),
            "SM_OUTPUT_DATA_DIR": str(dirs["output_data"]), "SM_OUTPUT_INTERMEDIATE_DIR": str(dirs["intermediate"]),
            "SM_INPUT_DIR": str(root / "input"), "SM_INPUT_CONFIG_DIR": str(dirs["config"]),
            "SM_CHANNELS": json.dumps(sorted(channels)), "SM_HPS": json.dumps(user_hps),
            "SM_USER_ARGS": json.dumps(argv), "SM_USER_ENTRY_POINT": hps["sagemaker_program"],
            "SM_MODULE_DIR": hps["sagemaker_submit_directory"], "SM_CURRENT_HOST": "algo-1",
            "SM_HOSTS": json.dumps(["algo-1"]), "SM_NUM_GPUS": "0", "SM_NUM_CPUS": "2", "SM_LOG_LEVEL": "20",
            "SM_RESOURCE_CONFIG": json.dumps(resource_config), "SM_TRAINING_ENV": json.dumps(training_env),
            # The one local path the toolkit passes in no variable: CheckpointConfig.LocalPath, under this /opt/ml.
            "SM_CHECKPOINT_DIR": str(checkpoint_dir),
            "PYTHONPATH": str(dirs["code"]), "PYTHONUNBUFFERED": "1",
            # The job's network reaches no model hub and no package index.
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PIP_NO_INDEX": "1",
            "HF_HOME": str(root / "hf-home"),
        }
        env.update({f"SM_CHANNEL_{c.upper()}": str(dirs["data"] / c) for c in channels})
        env.update({f"SM_HP_{k.upper()}": str(v) for k, v in user_hps.items()})
        context = decode_param(env["DAGSTER_PIPES_CONTEXT"])
        if "path" in context:  # the spilled context channel, under this /opt/ml
            env["DAGSTER_PIPES_CONTEXT"] = encode_param({"path": str(self.at_root(root, context["path"]))})
        # The execution role's credentials, as the container's credential provider hands them out.
        env.update({k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")
                    or k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
        env.update(AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION)
        proc = subprocess.run([sys.executable, hps["sagemaker_program"], *argv], cwd=dirs["code"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        self.outputs.append(proc.stdout)
        if checkpoint:
            self.upload_tree(checkpoint_dir, checkpoint["S3Uri"])
        if proc.returncode == 0:
            model = io.BytesIO()
            with tarfile.open(fileobj=model, mode="w:gz") as tar:
                tar.add(dirs["model"], arcname=".")
            out_bucket, out_prefix = staging.split_s3_uri(request["OutputDataConfig"]["S3OutputPath"])
            self.client("s3").put_object(Bucket=out_bucket, Key=f"{out_prefix.rstrip('/')}/{name}/output/model.tar.gz",
                                         Body=model.getvalue())
        self.ship_logs(name, proc.stdout)

    def upload_tree(self, folder: Path, uri: str) -> None:
        bucket, prefix = staging.split_s3_uri(uri)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.client("s3").upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder)}")

    def ship_logs(self, name: str, text: str) -> None:
        logs = self.client("logs")
        try:
            logs.create_log_group(logGroupName=LOG_GROUP)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        stream = f"{name}/algo-1-{int(time.time())}"
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        lines = [line for line in text.splitlines() if line.strip()]
        for start in range(0, len(lines), 500):
            now = int(time.time() * 1000)
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream,
                                logEvents=[{"timestamp": now, "message": line} for line in lines[start:start + 500]])


@pytest.fixture
def world(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    world, server = start_world(monkeypatch, free_port())
    yield world
    world.databricks.stop()
    server.stop()


@pytest.fixture
def sagemaker(world, monkeypatch, tmp_path) -> SageMakerRuntime:
    import dagster._core.pipes.utils as pipes_utils

    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 0)
    session = boto3.Session(region_name=REGION)
    # The resource calls boto3.client(), which uses the default session: its handlers see every request.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    runtime = SageMakerRuntime(session, world.moto_url, tmp_path / "sagemaker")
    session.events.register("before-call.sagemaker.CreateTrainingJob", runtime.record)
    session.events.register("after-call.sagemaker.CreateTrainingJob", runtime.run)
    runtime.client("s3").create_bucket(Bucket=CODE_BUCKET)
    return runtime


def cli(world, *args: str) -> dict:
    result = CliRunner().invoke(main, ["aws", *args, "--region", REGION, "--code-prefix", CODE_PREFIX,
                                       "--endpoint-url", world.moto_url, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stage(world, tiny_base: Path) -> tuple[dict, dict]:
    model = cli(world, "stage-model", "--model-id", MODEL_ID, "--revision", REVISION, "--from-dir", str(tiny_base))
    code = cli(world, "stage", "--only", "sagemaker", "--model-id", MODEL_ID, "--model-revision", REVISION)
    return model, code


def resource(world, **overrides) -> SageMakerTrainingResource:
    return SageMakerTrainingResource(**{
        "region": REGION, "role_arn": ROLE, "image_uri": IMAGE, "checkpoint_s3_uri": f"s3://{CODE_BUCKET}/checkpoints",
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
        world, sagemaker, tiny_base):
    version = write_curated_table(world)
    world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
    model, code = stage(world, tiny_base)
    assert model["action"] == "uploaded" and model["uri"] == staging.model_uri(CODE_PREFIX, MODEL_ID, REVISION)
    assert [a["kind"] for a in code["artifacts"]] == [staging.KIND_SOURCE, staging.KIND_MODEL]
    assert cli(world, "stage-model", "--model-id", MODEL_ID, "--revision", REVISION,
               "--from-dir", str(tiny_base))["action"] == "present"
    instance = dg.DagsterInstance.ephemeral()

    result = materialize(world, tiny_base, instance)

    assert result.success, failure_message(result) + "\n" + "".join(sagemaker.outputs)[-4000:]
    [request] = sagemaker.requests
    expected = code["job_parameters"]["sagemaker_create_training_job"]
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
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("base model eval loss on the validation set" in m for m in messages)
    events = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(result.run_id))
    for principal in Principal:
        assert secret_value(principal) not in events and secret_value(principal) not in sagemaker.outputs[0]


def test_a_module_left_out_of_the_staged_source_fails_the_job(world, sagemaker, tiny_base, tmp_path):
    write_curated_table(world)
    world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
    _, code = stage(world, tiny_base)
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


@pytest.mark.parametrize("left_out", ["source", "model"])
def test_an_artifact_left_out_of_staging_stops_the_job_before_it_starts(world, sagemaker, tiny_base, left_out):
    write_curated_table(world)
    world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
    model, code = stage(world, tiny_base)
    [source] = [a for a in code["artifacts"] if a["kind"] == staging.KIND_SOURCE]
    gone = source["uri"] if left_out == "source" else staging.model_complete_uri(model["uri"])
    sagemaker.client("s3").delete_object(Bucket=CODE_BUCKET, Key=staging.split_s3_uri(gone)[1])

    result = materialize(world, tiny_base)

    assert not result.success and sagemaker.requests == []
    message = failure_message(result)
    assert f"is not staged at {gone}" in message and "governed-ft aws stage" in message


def test_a_base_model_other_than_the_staged_one_is_refused(world, sagemaker, tiny_base):
    write_curated_table(world)
    world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
    stage(world, tiny_base)

    result = materialize(world, tiny_base, base_model_id="mistralai/Ministral-3-3B-Instruct-2512")

    assert not result.success and sagemaker.requests == []
    assert f"asks for base model '{MODEL_ID}'" in failure_message(result)
