"""finetuned_lora_model on the aws path: fake Databricks workspace, moto for S3 and a local training job."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from aws_fixtures import BUCKET, CATALOG, application_id, secret_value, start_world
from conftest import free_port
from governed_ft_dagster.defs.assets.training import finetuned_lora_model, hyperparameters_sha256
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.defs.resources.training_jobs import LocalTrainingResource
from test_packing import chat_records, tiny_base  # noqa: F401  (tiny_base is a shared session fixture)

TABLE = f"{CATALOG}.curated.risk_factor_instructions"
LOCATION = f"s3://{BUCKET}/curated/tables/risk_factor_instructions"
TRAIN_ID = application_id(Principal.TRAIN)
CONTRACT = ("source_table", "source_version", "job_run_kind", "job_run_id", "job_properties", "adapter_location",
            "model_dir", "hyperparameters", "hyperparameters_sha256", "base_model", "eval_loss", "base_eval_loss",
            "trainable_parameters", "trainable_fraction", "tokens_per_second", "padding_share", "loss_curve")
TINY_RUN = {"max_steps": 4, "epochs": 100.0, "per_device_batch_size": 2, "learning_rate": 5e-3,
            "lr_scheduler": "constant", "gradient_checkpointing": False, "save_steps": 2, "seed": 7}
CURATED_SCHEMA = pa.schema([
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("split", pa.string()), ("cik", pa.string()), ("accession_number", pa.string()),
    ("source_version", pa.int64()), ("run_id", pa.string()),
])


def moto_options(world) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": world.moto_url, "AWS_ALLOW_HTTP": "true"}


def write_curated_table(world) -> int:
    """The curated table in moto S3, registered as preprocess's: version 0 one company, version 1 all three."""
    rows = [{**record, "source_version": 2, "run_id": "preprocess-run-1"} for record in chat_records(4)]
    options = moto_options(world)
    write_deltalake(LOCATION, pa.Table.from_pylist(rows[:4], schema=CURATED_SCHEMA), storage_options=options)
    write_deltalake(LOCATION, pa.Table.from_pylist(rows, schema=CURATED_SCHEMA), mode="overwrite",
                    storage_options=options)
    world.databricks.add_table(TABLE, LOCATION, owner=application_id(Principal.PREPROCESS))
    return DeltaTable(LOCATION, storage_options=options).version()


def materialize(world, work_dir: Path, base: Path, instance: dg.DagsterInstance | None = None, **config):
    resources = {"catalog": world.catalog_resource(),
                 "training": LocalTrainingResource(work_dir=str(work_dir), num_gpus=0),
                 "base_model": BaseModelResource(model_ref=str(base))}
    return dg.materialize(
        [finetuned_lora_model, dg.AssetSpec("curated_training_table")], selection=[finetuned_lora_model.key],
        resources=resources, instance=instance, raise_on_error=False,
        run_config={"ops": {"finetuned_lora_model": {"config": {**TINY_RUN, **config}}}},
    )


@contextlib.contextmanager
def captured_fds(folder: Path):
    """Route this process's stdout and stderr file descriptors (and so the job's) to files in folder."""
    paths = [folder / "stdout.txt", folder / "stderr.txt"]
    saved = [os.dup(1), os.dup(2)]
    try:
        for fd, path in zip((1, 2), paths):
            with path.open("wb") as out:
                os.dup2(out.fileno(), fd)
        yield paths
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


@pytest.fixture(scope="module")
def world():
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        world, server = start_world(monkeypatch, free_port())
        yield world
        world.databricks.stop()
        server.stop()


@pytest.fixture(scope="module")
def trained(world, tiny_base, tmp_path_factory) -> dict:
    """One materialization of finetuned_lora_model on the curated table, with its event log and job output."""
    version = write_curated_table(world)
    world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
    work_dir, logs = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("fds")
    instance = dg.DagsterInstance.ephemeral()
    with captured_fds(logs) as outputs:
        result = materialize(world, work_dir, tiny_base, instance)
    output = "".join(path.read_text(errors="replace") for path in outputs)
    assert result.success, output[-5000:]
    metadata = {key: value.value for key, value in
                result.asset_materializations_for_node("finetuned_lora_model")[0].metadata.items()}
    events = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(result.run_id))
    return {"version": version, "metadata": metadata, "events": events, "output": output, "work_dir": work_dir,
            "instance": instance, "raw_metadata": result.asset_materializations_for_node("finetuned_lora_model")[0].metadata}


def test_the_job_reads_the_current_version_with_credentials_vended_to_train(world, trained):
    metadata = trained["metadata"]
    assert trained["version"] == 1 and metadata["source_version"] == 1 and metadata["source_table"] == TABLE
    vended = world.databricks.vended
    assert vended and {v["principal"] for v in vended} == {TRAIN_ID}
    reads = [v for v in vended if v["operation"] == "READ"]
    assert reads and {v["location"] for v in reads} == {LOCATION}
    job_dir = Path(metadata["job_properties"]["job_dir"])
    summary = json.loads((job_dir / "model" / "training_summary.json").read_text())
    assert summary["source"] == {"table": TABLE, "delta_version": 1, "location": LOCATION}
    assert summary["data"]["train"]["records"] == 8 and summary["data"]["validation"]["records"] == 4
    assert summary["global_step"] == TINY_RUN["max_steps"] and summary["device"] == "cpu"


def test_the_adapter_lands_under_ml_adapters_with_path_credentials(world, trained):
    metadata = trained["metadata"]
    job = metadata["job_run_id"]
    assert re.fullmatch(r"lora-risk-factors-v1-[0-9a-f]{12}", job) and metadata["job_run_kind"] == "LocalTrainingJob"
    prefix = f"ml/adapters/{job}/"
    assert metadata["adapter_location"] == f"s3://{BUCKET}/{prefix}".rstrip("/")
    listing = world.boto("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    names = {item["Key"][len(prefix):] for item in listing}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "training_summary.json"} <= names
    model_dir = Path(metadata["model_dir"])
    assert names == {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    writes = [v for v in world.databricks.vended if v["operation"] == "PATH_READ_WRITE"]
    assert writes and {v["location"] for v in writes} == {f"s3://{BUCKET}/{prefix}".rstrip("/")}


def test_the_metadata_contract(trained):
    metadata = trained["metadata"]
    assert set(CONTRACT) <= set(metadata)
    assert isinstance(metadata["eval_loss"], float) and isinstance(metadata["base_eval_loss"], float)
    assert metadata["eval_loss"] < metadata["base_eval_loss"]
    assert metadata["hyperparameters_sha256"] == hyperparameters_sha256(metadata["hyperparameters"])
    assert metadata["hyperparameters_sha256"][:12] in metadata["job_run_id"]
    assert {k: metadata["hyperparameters"][k] for k in TINY_RUN} == TINY_RUN
    assert metadata["hyperparameters"]["lora_r"] == 16
    assert metadata["base_model"] == metadata["hyperparameters"]["base_model"]
    assert metadata["trainable_parameters"] > 0 and 0 < metadata["trainable_fraction"] < 1
    assert metadata["tokens_per_second"] > 0 and 0 <= metadata["padding_share"] < 1
    assert isinstance(trained["raw_metadata"]["loss_curve"], dg.MarkdownMetadataValue)
    assert metadata["loss_curve"].count("\n| ") >= TINY_RUN["max_steps"]
    assert "catalog" not in json.dumps(metadata["hyperparameters"])


def test_no_secret_reaches_the_event_log_or_the_job_output(world, trained):
    job_dir = Path(trained["metadata"]["job_properties"]["job_dir"])
    texts = {"event log": trained["events"], "job output": trained["output"],
             "job stderr log": (job_dir / "logs" / "stderr.log").read_text(errors="replace")}
    assert "read 12 records" in trained["events"]
    secrets = [secret_value(Principal.TRAIN)]
    secrets += [v[key] for v in world.databricks.vended for key in ("secret_access_key", "session_token")]
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret reached the {where}"


def test_a_rerun_on_the_same_instance_starts_no_job_and_writes_no_materialization(world, trained, tiny_base):
    instance = trained["instance"]
    before = instance.fetch_materializations(finetuned_lora_model.key, limit=5).records
    again = materialize(world, trained["work_dir"], tiny_base, instance)
    assert again.success and again.asset_materializations_for_node("finetuned_lora_model") == []
    assert instance.fetch_materializations(finetuned_lora_model.key, limit=5).records == before
    assert any("no job started" in (entry.user_message or "") for entry in instance.all_logs(again.run_id))


def test_a_rerun_with_the_same_inputs_reuses_the_job_and_its_checkpoints(world, trained, tiny_base):
    again = materialize(world, trained["work_dir"], tiny_base)
    assert again.success
    metadata = {key: value.value for key, value in
                again.asset_materializations_for_node("finetuned_lora_model")[0].metadata.items()}
    first = trained["metadata"]
    assert metadata["job_run_id"] == first["job_run_id"] and metadata["adapter_location"] == first["adapter_location"]
    assert metadata["job_properties"]["resumed_from_checkpoint"] == "true" and metadata["resumed"]
    assert metadata["eval_loss"] == pytest.approx(first["eval_loss"])
    assert metadata["base_eval_loss"] == pytest.approx(first["base_eval_loss"])


def test_a_pinned_version_that_does_not_exist_fails_before_the_job(world, trained, tiny_base, tmp_path):
    result = materialize(world, tmp_path, tiny_base, curated_version=7)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "curated_version 7 does not exist" in failure and "version 1" in failure
    assert not (tmp_path / "training_jobs").exists()


def test_without_select_on_the_curated_table_no_job_is_created(monkeypatch, tiny_base, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    world, server = start_world(monkeypatch, free_port())
    try:
        world.databricks.add_table(TABLE, LOCATION, owner=application_id(Principal.PREPROCESS))
        result = materialize(world, tmp_path, tiny_base)
        assert not result.success
        failure = result.get_step_failure_events()[0].event_specific_data.error.message
        assert "train" in failure and TABLE in failure and "SELECT" in failure
        assert not (tmp_path / "training_jobs").exists()
        assert world.databricks.vended == []
        assert secret_value(Principal.TRAIN) not in failure
    finally:
        world.databricks.stop()
        server.stop()


def test_a_refused_adapter_write_fails_the_job_with_one_line(monkeypatch, tiny_base, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    world, server = start_world(monkeypatch, free_port())
    try:
        write_curated_table(world)
        world.databricks.grant("table", TABLE, TRAIN_ID, "SELECT")
        world.databricks.revoke("external_location", "governed_ml", TRAIN_ID, "WRITE_FILES")
        result = materialize(world, tmp_path, tiny_base)
        assert not result.success
        failure = result.get_step_failure_events()[0].event_specific_data.error.message
        job_dir = next((tmp_path / "training_jobs").iterdir())
        reason = (job_dir / "output" / "failure").read_text()
        assert "principal 'train' lacks WRITE FILES" in reason and f"s3://{BUCKET}/ml/adapters/{job_dir.name}" in reason
        assert "\n" not in reason and f"Failure reason: {reason}" in failure
        stderr = (job_dir / "logs" / "stderr.log").read_text()
        assert reason in stderr.splitlines() and "Traceback" not in stderr
        assert not (job_dir / "model" / "adapter_model.safetensors").exists()
        assert secret_value(Principal.TRAIN) not in failure + stderr
    finally:
        world.databricks.stop()
        server.stop()
