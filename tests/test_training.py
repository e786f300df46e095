"""The training job script as SageMaker and Dagster Pipes run it: on a curated Delta table of real filing records."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from deltalake import write_deltalake

from test_packing import chat_records, tiny_base  # noqa: F401  (tiny_base is a shared session fixture)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "job_scripts" / "train_lora.py"
TABLE = "main.curated.risk_factor_instructions"
HYPERPARAMETERS = {"epochs": 100, "max_steps": 12, "learning_rate": 5e-3, "lr_scheduler": "constant",
                   "per_device_batch_size": 2, "save_steps": 4, "lora_r": 16, "lora_alpha": 32,
                   "lora_dropout": 0.05, "seed": 7}
INHERITED = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "MLFLOW_TRACKING_URI", "SM_HPS", "SM_OUTPUT_DIR",
             "SM_CHECKPOINT_DIR", "TRAINING_JOB_NAME")
CURATED_SCHEMA = pa.schema([
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("split", pa.string()), ("cik", pa.string()), ("accession_number", pa.string()),
    ("source_version", pa.int64()), ("run_id", pa.string()),
])


@functools.cache
def load_script():
    """The job script as a module (it is a file, not part of the package)."""
    spec = importlib.util.spec_from_file_location("train_lora_job", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def as_argv(values: dict) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def sagemaker_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment SageMaker gives a training container, pointed at folders under root."""
    env = {key: value for key, value in os.environ.items() if key not in INHERITED}
    env.update({"SM_MODEL_DIR": str(root / "model"), "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
                "SM_OUTPUT_DIR": str(root / "output"), "SM_NUM_GPUS": "0", **extra})
    (root / "output").mkdir(parents=True, exist_ok=True)
    return env


def run_script(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def curated_table(tmp_path_factory) -> Path:
    """The curated table: version 0 holds the 60 records, version 1 only ten of them."""
    path = tmp_path_factory.mktemp("lake") / "curated" / "risk_factor_instructions"
    rows = [{**record, "source_version": 3, "run_id": "preprocess-run-1"} for record in chat_records()]
    write_deltalake(str(path), pa.Table.from_pylist(rows, schema=CURATED_SCHEMA))
    write_deltalake(str(path), pa.Table.from_pylist(rows[:10], schema=CURATED_SCHEMA), mode="overwrite")
    return path


def job_args(tiny_base: Path, curated_table: Path, checkpoint_dir: Path) -> list[str]:
    return ["--base_model", str(tiny_base), "--curated_location", str(curated_table), "--curated_version", "0",
            "--source_table", TABLE, "--checkpoint_dir", str(checkpoint_dir)]


@pytest.fixture(scope="module")
def pipes_run(tmp_path_factory, tiny_base, curated_table) -> dict:
    """One uninterrupted run, launched by a Dagster asset through Pipes, tracked in MLflow."""
    import dagster as dg

    root = tmp_path_factory.mktemp("pipes-run")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    env = sagemaker_env(root, MLFLOW_TRACKING_URI=tracking_uri, SM_HPS="{}")
    command = [sys.executable, str(SCRIPT), *job_args(tiny_base, curated_table, root / "checkpoints"),
               *as_argv(HYPERPARAMETERS)]
    messages: list = []

    @dg.asset(name="finetuned_lora_model", required_resource_keys={"pipes"})
    def finetuned_lora_model(context):
        invocation = context.resources.pipes.run(command=command, context=context, env=env)
        messages.extend(invocation.get_custom_messages())
        return invocation.get_materialize_result()

    result = dg.materialize([finetuned_lora_model], resources={"pipes": dg.PipesSubprocessClient(cwd=str(root))})
    assert result.success
    run_id = result.run_id
    materialization = result.asset_materializations_for_node("finetuned_lora_model")[0]
    summary = json.loads((root / "model" / "training_summary.json").read_text())
    return {"root": root, "summary": summary, "metadata": materialization.metadata, "messages": messages,
            "tracking_uri": tracking_uri, "dagster_run_id": run_id}


def test_pipes_reports_losses_tokens_and_the_delta_version(pipes_run):
    metadata = {key: value.value for key, value in pipes_run["metadata"].items()}
    assert metadata["source_delta_version"] == 0 and metadata["source_table"] == TABLE
    assert [point["step"] for point in metadata["loss_by_step"]] == list(range(1, 13))
    assert metadata["tokens_per_s"] > 0 and metadata["trainable_params"] > 0
    assert metadata["final_eval_loss"] == pytest.approx(pipes_run["summary"]["metrics"]["final_eval_loss"])
    assert metadata["mlflow_run_id"] == pipes_run["summary"]["mlflow_run_id"]
    steps = [m["step"] for m in pipes_run["messages"] if m.get("kind") == "metric" and m["name"] == "train_loss"]
    assert steps == list(range(1, 13))


def test_training_loss_goes_down(pipes_run):
    losses = [point["loss"] for point in pipes_run["summary"]["metrics"]["loss_by_step"]]
    assert len(losses) == HYPERPARAMETERS["max_steps"]
    assert sum(losses[:3]) / 3 - sum(losses[-3:]) / 3 > 0.05


def test_summary_records_model_data_and_throughput(pipes_run):
    summary = pipes_run["summary"]
    assert summary["status"] == "completed" and not summary["resumed"]
    assert summary["source"] == {"table": TABLE, "delta_version": 0, "location": summary["source"]["location"]}
    assert summary["data"]["train"]["records"] == 40 and summary["data"]["validation"]["records"] == 20
    assert summary["base_model"]["id"] == "mistralai/Ministral-3-3B-Instruct-2512"
    assert summary["base_model"]["revision"].startswith("local-sha256:")
    assert {key: summary["hyperparameters"][key] for key in HYPERPARAMETERS} == HYPERPARAMETERS
    assert 0 < summary["trainable_fraction"] < 1
    assert summary["tokens_seen"] > 0 and summary["tokens_per_s"] > 0 and summary["padding_share"] < 0.05
    assert len(summary["metrics"]["eval_loss_by_epoch"]) >= 2
    assert summary["attention_isolation"]["ratio"] < 1e-3
    assert summary["device"] == "cpu" and summary["precision"] == "fp32"
    assert summary["dagster_run_id"] == pipes_run["dagster_run_id"]
    copied = pipes_run["root"] / "output" / "data" / "training_summary.json"
    assert json.loads(copied.read_text()) == summary


def test_mlflow_holds_params_step_metrics_and_the_summary(pipes_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=pipes_run["tracking_uri"])
    run = client.get_run(pipes_run["summary"]["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["lora_r"] == "16" and run.data.params["source_delta_version"] == "0"
    assert run.data.params["source_table"] == TABLE
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 12
    assert "training_summary.json" in {artifact.path for artifact in client.list_artifacts(run.info.run_id)}


def test_adapter_reloads_onto_the_base_and_changes_its_outputs(pipes_run, tiny_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = pipes_run["root"] / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer.apply_chat_template(chat_records()[0]["messages"], tokenize=True, return_dict=True)["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    with torch.no_grad():
        before = base(input_ids=torch.tensor([ids])).logits
        tuned = PeftModel.from_pretrained(base, model_dir).eval()
        after = tuned(input_ids=torch.tensor([ids])).logits
    assert (after - before).abs().max() > 1e-2


def test_an_interrupted_job_resumes_to_the_same_step(tmp_path, tiny_base, curated_table, pipes_run):
    args = job_args(tiny_base, curated_table, tmp_path / "checkpoints")
    hps = json.dumps({**HYPERPARAMETERS, "stop_after_steps": 5})  # this time through SM_HPS, as SageMaker sets it
    first = run_script(args, sagemaker_env(tmp_path, SM_HPS=hps), tmp_path)
    assert first.returncode == 75, first.stdout + first.stderr
    assert (tmp_path / "checkpoints" / "checkpoint-5").is_dir()
    assert not (tmp_path / "model" / "training_summary.json").exists()
    assert "interrupted at step 5" in (tmp_path / "output" / "failure").read_text()

    second = run_script(args + as_argv(HYPERPARAMETERS), sagemaker_env(tmp_path), tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    reference = pipes_run["summary"]
    assert summary["resumed"] and summary["resumed_from_step"] == 5
    assert summary["global_step"] == reference["global_step"] == HYPERPARAMETERS["max_steps"]
    assert summary["tokens_seen"] == reference["tokens_seen"]
    assert summary["hyperparameters"] == reference["hyperparameters"]
    resumed = [point["loss"] for point in summary["metrics"]["loss_by_step"]]
    uninterrupted = [point["loss"] for point in reference["metrics"]["loss_by_step"]]
    assert resumed == pytest.approx(uninterrupted, abs=0.02)


def complete_checkpoints(checkpoint_dir: Path) -> list[int]:
    """Checkpoints whose trainer state (written last) reads whole: a kill can land while it is being written."""
    def whole(state: Path) -> bool:
        try:
            return bool(json.loads(state.read_text()))
        except (OSError, ValueError):
            return False

    return sorted(int(p.name.split("-")[1]) for p in checkpoint_dir.glob("checkpoint-*")
                  if whole(p / "trainer_state.json"))


def start_job(args: list[str], root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], env=sagemaker_env(root), cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(process: subprocess.Popen, checkpoints: Path) -> None:
    deadline = time.monotonic() + 240
    while not complete_checkpoints(checkpoints) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the job ended before its first checkpoint: " + process.stderr.read()[-2000:]


def test_a_killed_job_resumes_from_its_last_checkpoint_to_the_same_result(tmp_path, tiny_base, curated_table,
                                                                         pipes_run):
    checkpoints = tmp_path / "checkpoints"
    args = job_args(tiny_base, curated_table, checkpoints) + as_argv(HYPERPARAMETERS)
    process = start_job(args, tmp_path)
    wait_for_checkpoint(process, checkpoints)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    process.stderr.close()
    assert not (tmp_path / "model" / "training_summary.json").exists()
    saved = complete_checkpoints(checkpoints)
    assert saved and saved[-1] < HYPERPARAMETERS["max_steps"]

    again = run_script(args, sagemaker_env(tmp_path), tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    reference = pipes_run["summary"]
    assert summary["resumed"] and summary["resumed_from_step"] == saved[-1]
    assert summary["global_step"] == reference["global_step"] == HYPERPARAMETERS["max_steps"]
    assert summary["tokens_seen"] == reference["tokens_seen"]
    resumed = [point["loss"] for point in summary["metrics"]["loss_by_step"]]
    uninterrupted = [point["loss"] for point in reference["metrics"]["loss_by_step"]]
    assert resumed == pytest.approx(uninterrupted, abs=0.02)


def test_sigterm_as_on_a_spot_interruption_saves_a_checkpoint_where_it_stands_and_exits_75(tmp_path, tiny_base,
                                                                                         curated_table):
    checkpoints = tmp_path / "checkpoints"
    long_run = {**HYPERPARAMETERS, "max_steps": 60, "save_steps": 2}
    args = job_args(tiny_base, curated_table, checkpoints) + as_argv(long_run)
    process = start_job(args, tmp_path)
    wait_for_checkpoint(process, checkpoints)
    first_periodic = complete_checkpoints(checkpoints)[-1]
    process.terminate()
    assert process.wait(timeout=120) == 75
    process.stderr.close()
    saved = complete_checkpoints(checkpoints)
    assert first_periodic < saved[-1] < long_run["max_steps"]
    assert not list(checkpoints.glob("checkpoint-*/checkpoint-is-incomplete.txt"))
    assert "interrupted at step" in (tmp_path / "output" / "failure").read_text()

    again = run_script(args, sagemaker_env(tmp_path), tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert summary["resumed_from_step"] == saved[-1] and summary["global_step"] == long_run["max_steps"]


def test_arguments_come_from_argv_over_sm_hps(monkeypatch):
    script = load_script()
    monkeypatch.setenv("SM_HPS", json.dumps({"lora_r": 8, "epochs": 2, "packing": "False", "sagemaker_region": "x"}))
    monkeypatch.setenv("SM_MODEL_DIR", "/tmp/model")
    monkeypatch.setenv("SM_NUM_GPUS", "0")
    monkeypatch.delenv("SM_CHECKPOINT_DIR", raising=False)
    args = script.parse_args(["--lora_r", "32", "--gradient_checkpointing", "true", "--batch_size", "3"])
    assert (args.lora_r, args.epochs, args.packing, args.gradient_checkpointing) == (32, 2, False, True)
    assert (args.per_device_batch_size, args.model_dir, args.num_gpus) == (3, "/tmp/model", 0)
    assert args.checkpoint_dir == "/opt/ml/checkpoints" and args.ignored_hyperparameters == ["sagemaker_region"]
    monkeypatch.setenv("SM_CHECKPOINT_DIR", "/tmp/checkpoints")
    assert script.parse_args([]).checkpoint_dir == "/tmp/checkpoints"


def test_training_data_needs_a_location_until_the_catalog_is_wired(monkeypatch):
    script = load_script()
    monkeypatch.delenv("SM_HPS", raising=False)
    with pytest.raises(script.TrainingDataError, match="--curated_location"):
        script.resolve_training_data(script.parse_args([]))
    with pytest.raises(script.TrainingDataError, match="not wired"):
        script.resolve_training_data(script.parse_args(["--catalog_url", "http://localhost:8080"]))
    args = script.parse_args(["--curated_location", "s3://bucket/curated/t", "--curated_version", "4"])
    assert script.resolve_training_data(args) == ("s3://bucket/curated/t", {}, 4)


def test_curated_records_are_read_at_a_delta_version(curated_table, tmp_path):
    script = load_script()
    pinned = script.load_curated_records(str(curated_table), version=0)
    assert pinned.version == 0 and len(pinned.records) == 60
    assert pinned.records[0]["messages"][2]["role"] == "assistant"
    assert {r["split"] for r in pinned.records} == {"train", "validation"}
    latest = script.load_curated_records(str(curated_table))
    assert latest.version == 1 and len(latest.records) == 10
    secret = "wJalrXUtnFEMI-not-a-real-secret"
    with pytest.raises(script.TrainingDataError) as failure:
        script.load_curated_records(str(tmp_path / "missing"), {"aws_secret_access_key": secret}, 0)
    assert secret not in str(failure.value)
