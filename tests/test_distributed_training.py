"""Data-parallel LoRA on this machine's CPUs: the real job script under torchrun (gloo), through the local resource.

One uninterrupted 2-rank job is the reference for several tests; a single process with the same global batch gives
the loss curve it must follow; a second 2-rank job loses rank 1 to SIGKILL and resumes from its checkpoint.
"""

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from governed_ft_dagster.defs.resources.training_jobs import (
    LocalTrainingResource,
    SageMakerTrainingResource,
    TrainingJobResource,
    TrainingJobSpec,
)
from governed_ft_dagster.job_code import training_source_dir
from governed_ft_dagster.training.distributed import explain_failure
from governed_ft_dagster.training.trainer import TrainConfig, train
from test_packing import chat_records, tiny_base  # noqa: F401  (tiny_base: the session's tiny Ministral3 base)
from test_training import CURATED_SCHEMA

TABLE = "main.curated.risk_factor_instructions"
RANKS = 2
STEPS = 6
HYPERPARAMETERS = {"epochs": "100", "max_steps": str(STEPS), "learning_rate": "0.005", "lr_scheduler": "constant",
                   "per_device_batch_size": "1", "save_steps": "2", "lora_dropout": "0.0", "seed": "7"}
# Largest step-by-step gap allowed between the 2-rank loss curve and the single process's (losses are about 8.3):
# the same rows in the same global batches, only summed in another order.
LOSS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """Thirty chat records from the sample filings: 20 train (two companies), 10 validation (a third)."""
    return [{**record, "source_version": 3, "run_id": "preprocess-run-1"} for record in chat_records(10)]


@pytest.fixture(scope="module")
def curated(tmp_path_factory, records) -> Path:
    path = tmp_path_factory.mktemp("lake") / "curated"
    write_deltalake(str(path), pa.Table.from_pylist(records, schema=CURATED_SCHEMA))
    return path


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> tuple[Path, Path]:
    """The real job script with the packages it imports beside it, as the training asset stages it."""
    return training_source_dir(tmp_path_factory.mktemp("code"))


def job_spec(code: tuple[Path, Path], job_name: str, tiny_base: Path, curated: Path) -> TrainingJobSpec:
    script, source_dir = code
    return TrainingJobSpec(script=str(script), source_dir=str(source_dir), job_name=job_name, hyperparameters={
        **HYPERPARAMETERS, "base_model": str(tiny_base), "curated_location": str(curated), "curated_version": "0",
        "source_table": TABLE})


def materialize(spec: TrainingJobSpec, resource: TrainingJobResource,
                instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    @dg.asset(name="finetuned_lora_model")
    def _asset(context: dg.AssetExecutionContext, training: TrainingJobResource) -> dg.MaterializeResult:
        result = training.run(context, spec)
        reported = result.materialize_result.metadata if result.materialize_result else {}
        return dg.MaterializeResult(metadata={**reported, **{f"job_{k}": v for k, v in result.properties.items()}})

    return dg.materialize([_asset], resources={"training": resource}, instance=instance, raise_on_error=False)


def adapter_sha256(model_dir: Path) -> str:
    return hashlib.sha256((model_dir / "adapter_model.safetensors").read_bytes()).hexdigest()


def losses(summary: dict) -> list[float]:
    return [point["loss"] for point in summary["metrics"]["loss_by_step"]]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, code, tiny_base, curated) -> dict:
    """One uninterrupted 2-rank job through the local resource, tracked in MLflow, on one Dagster instance."""
    root = tmp_path_factory.mktemp("two-ranks")
    resource = LocalTrainingResource(work_dir=str(root / "state"), num_gpus=0, nproc_per_node=RANKS,
                                     mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    spec = job_spec(code, "lora-ddp-reference", tiny_base, curated)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(spec, resource, instance)
        assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    job_dir = resource.job_dir(spec.job_name)
    [materialization] = result.asset_materializations_for_node("finetuned_lora_model")
    return {"job_dir": job_dir, "logs": logs, "tracking_uri": resource.mlflow_tracking_uri,
            "metadata": {key: value.value for key, value in materialization.metadata.items()},
            "summary": json.loads((job_dir / "model" / "training_summary.json").read_text())}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_base, records) -> dict:
    """The same job in one process (this one), with the 2-rank job's global batch: 2 rows per step."""
    root = tmp_path_factory.mktemp("one-process")
    config = TrainConfig(base_model=str(tiny_base), epochs=100, max_steps=STEPS, learning_rate=0.005,
                         lr_scheduler="constant", per_device_batch_size=RANKS, save_steps=2, lora_dropout=0.0,
                         seed=7, use_cpu=True)
    result = train(config, [r for r in records if r["split"] == "train"],
                   [r for r in records if r["split"] == "validation"], root / "model", root / "checkpoints")
    return result.summary


def test_two_ranks_follow_the_single_process_loss_curve(two_ranks, one_process):
    ranks, single = two_ranks["summary"], one_process
    assert ranks["distributed"] == {"world_size": 2, "strategy": "ddp", "global_batch_rows": 2}
    assert single["distributed"] == {"world_size": 1, "strategy": "none", "global_batch_rows": 2}
    assert len(losses(ranks)) == len(losses(single)) == STEPS
    assert losses(ranks) == pytest.approx(losses(single), abs=LOSS_TOLERANCE)
    assert ranks["metrics"]["final_eval_loss"] == pytest.approx(single["metrics"]["final_eval_loss"],
                                                                abs=LOSS_TOLERANCE)
    assert losses(single)[0] - losses(single)[-1] > 10 * LOSS_TOLERANCE  # the curve moves: the match means something
    assert ranks["tokens_seen"] == single["tokens_seen"] > 0  # every rank's tokens counted, none twice


def test_two_ranks_write_one_adapter_one_report_stream_and_one_mlflow_run(two_ranks):
    job_dir, metadata = two_ranks["job_dir"], two_ranks["metadata"]
    adapters = [p for p in job_dir.rglob("adapter_model.safetensors") if "checkpoints" not in p.parts]
    assert adapters == [job_dir / "model" / "adapter_model.safetensors"]
    statuses = {p.name: json.loads(p.read_text())["state"] for p in (job_dir / "logs" / "ranks").glob("*.json")}
    assert statuses == {"rank-0.json": "completed", "rank-1.json": "completed"}
    assert metadata["job_ranks"] == "2" and metadata["global_step"] == STEPS
    assert [point["step"] for point in metadata["loss_by_step"]] == list(range(1, STEPS + 1))
    for line in ("read 30 records from", "base model eval loss on the validation set", "LoRA r=16 on",
                 "adapter, tokenizer and training_summary.json written"):
        assert sum(line in message for message in two_ranks["logs"]) == 1, line

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=two_ranks["tracking_uri"])
    runs = [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]
    assert [run.info.run_id for run in runs] == [metadata["mlflow_run_id"]]
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == list(range(1, STEPS + 1))


def test_a_killed_rank_fails_the_job_by_name_and_the_resume_reaches_the_same_adapter(tmp_path, code, tiny_base,
                                                                                     curated, two_ranks):
    resource = LocalTrainingResource(work_dir=str(tmp_path / "state"), num_gpus=0, nproc_per_node=RANKS)
    spec = job_spec(code, "lora-ddp-killed", tiny_base, curated)
    job_dir = resource.job_dir(spec.job_name)
    killed: dict[str, int] = {}

    def kill_rank_1_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 600
        status = job_dir / "logs" / "ranks" / "rank-1.json"
        while time.monotonic() < deadline and not killed:
            if (job_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists() and status.exists():
                killed["pid"] = json.loads(status.read_text())["pid"]
                os.kill(killed["pid"], signal.SIGKILL)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_rank_1_after_the_first_checkpoint, daemon=True)
    killer.start()
    with dg.DagsterInstance.ephemeral() as instance:
        first = materialize(spec, resource, instance)
        killer.join(timeout=60)
        assert killed and not first.success, "the job ended before rank 1 could be killed"
        [failure] = [event for event in first.all_events if event.is_step_failure]
        description = failure.step_failure_data.user_failure_data.description
        assert (f"Cause: rank 1 (local rank 1 on algo-1), pid {killed['pid']}, was killed by signal 9 (SIGKILL) "
                "without reporting an error") in description, description
        assert "rank 0 then lost contact and stopped" in description
        assert not (job_dir / "model" / "adapter_model.safetensors").exists()

        second = materialize(spec, resource, instance)
        assert second.success, [e.event_specific_data.error.message for e in second.get_step_failure_events()]
    summary = json.loads((job_dir / "model" / "training_summary.json").read_text())
    assert summary["resumed"] and summary["resumed_from_step"] in (2, 4)
    assert summary["global_step"] == STEPS and summary["tokens_seen"] == two_ranks["summary"]["tokens_seen"]
    assert adapter_sha256(job_dir / "model") == adapter_sha256(two_ranks["job_dir"] / "model")


def test_the_failure_names_the_rank_with_its_own_error_before_those_that_followed():
    statuses = {
        0: {"rank": 0, "local_rank": 0, "host": "algo-1", "pid": 11, "state": "peer_lost", "time": 5.0,
            "error": "RuntimeError: Connection closed by peer"},
        1: {"rank": 1, "local_rank": 1, "host": "algo-1", "pid": 12, "state": "failed", "time": 3.0,
            "error": "ValueError: no training records left after tokenisation"},
        2: {"rank": 2, "local_rank": 0, "host": "algo-2", "pid": 21, "state": "failed", "time": 4.0,
            "error": "RuntimeError: CUDA error"},
    }
    assert explain_failure(statuses, 3, {0: 1, 1: 1, 2: 1}) == (
        "rank 1 (local rank 1 on algo-1) failed: ValueError: no training records left after tokenisation")
    silent = {0: {**statuses[0]}, 1: {**statuses[1], "state": "running", "error": None}}
    assert explain_failure(silent, 3) == (
        "rank 1 (local rank 1 on algo-1), pid 12, died without reporting an error (the out-of-memory killer, or a "
        "kill from outside); rank 2 ended before recording anything (it failed while starting; see its stderr "
        "lines); rank 0 then lost contact and stopped")
    stopped = {r: {**statuses[r], "state": "running", "error": None} for r in (0, 1)}
    assert explain_failure(stopped, 2, {0: -signal.SIGTERM, 1: -signal.SIGKILL}) == (  # torchrun stopped rank 0
        "rank 1 (local rank 1 on algo-1), pid 12, was killed by signal 9 (SIGKILL) without reporting an error (the "
        "out-of-memory killer, or a kill from outside)")
    done = {r: {**statuses[r], "state": "completed"} for r in statuses}
    assert explain_failure(done, 3) is None


# ---- SageMaker: what the CreateTrainingJob request carries ------------------------------------------------------


def sagemaker(**overrides) -> SageMakerTrainingResource:
    return SageMakerTrainingResource(**{
        "region": "us-east-1", "role_arn": "arn:aws:iam::123456789012:role/train", "image_uri": "image",
        "checkpoint_s3_uri": "s3://jobs/checkpoints", "output_s3_uri": "s3://lake/ml/out",
        "code_s3_prefix": "s3://jobs/code", **overrides})


def small_spec(tmp_path: Path) -> TrainingJobSpec:
    (tmp_path / "job_scripts").mkdir(exist_ok=True)
    (tmp_path / "job_scripts" / "train_lora.py").write_text("")
    return TrainingJobSpec(script=str(tmp_path / "job_scripts" / "train_lora.py"), source_dir=str(tmp_path),
                           job_name="lora-1", hyperparameters={"epochs": "1"})


@pytest.mark.parametrize("instance_type, count, refusal", [
    ("ml.g5.2xlarge", 2, "2 x ml.g5.2xlarge (1 GPU each) without distribution would run a process on each "
                         "instance, each training its own copy of the adapter; set distribution to torch_distributed "
                         "(torchrun over 2 ranks) or ask for one single-GPU instance"),
    ("ml.g5.12xlarge", 1, "1 x ml.g5.12xlarge (4 GPUs each) without distribution would run one process on one GPU "
                          "and leave the others idle; set distribution to torch_distributed (torchrun over 4 ranks) "
                          "or ask for one single-GPU instance"),
    ("ml.x9.large", 1, "the GPUs of instance type ml.x9.large are not known here; set gpus_per_instance"),
])
def test_a_multi_instance_or_multi_gpu_request_without_distribution_is_refused(tmp_path, instance_type, count,
                                                                               refusal):
    resource = sagemaker(instance_type=instance_type, instance_count=count, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(ValueError) as refused:
        resource.create_training_job_params(small_spec(tmp_path), "lora-1", "s3://jobs/code/source.tar.gz")
    assert str(refused.value) == refusal
    with dg.build_asset_context() as context, pytest.raises(dg.Failure) as failed:
        resource.run(context, small_spec(tmp_path))  # refused before any AWS call: the endpoint is a closed port
    assert failed.value.description == f"SageMaker training job lora-1 cannot start: {refusal}"


def test_a_torch_distributed_request_carries_sagemakers_hyperparameters(tmp_path):
    resource = sagemaker(instance_type="ml.g5.12xlarge", instance_count=2, distribution="torch_distributed")
    params = resource.create_training_job_params(small_spec(tmp_path), "lora-1", "s3://jobs/code/source.tar.gz")
    # As the SageMaker Python SDK's PyTorch estimator encodes distribution={"torch_distributed": {"enabled": True}}.
    assert params["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert params["HyperParameters"]["sagemaker_instance_type"] == '"ml.g5.12xlarge"'
    assert params["HyperParameters"]["sagemaker_program"] == '"job_scripts/train_lora.py"'
    assert params["ResourceConfig"] == {"InstanceType": "ml.g5.12xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100}
    assert resource.ranks() == 8
    single = sagemaker().create_training_job_params(small_spec(tmp_path), "lora-1", "s3://jobs/code/source.tar.gz")
    assert not {"sagemaker_torch_distributed_enabled", "sagemaker_instance_type"} & set(single["HyperParameters"])
