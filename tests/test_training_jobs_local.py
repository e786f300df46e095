"""LocalTrainingResource: a tiny Pipes script run under SageMaker's script-mode contract inside a materialized asset."""

import json
import shutil
from pathlib import Path
from typing import Optional

import dagster as dg
import pytest

from governed_ft_dagster.defs.resources.training_jobs import (
    LocalTrainingResource,
    TrainingJobResource,
    TrainingJobSpec,
)

TINY_SCRIPT = '''
import json, os, sys, traceback
from pathlib import Path
from typing import Optional
from dagster_pipes import open_dagster_pipes

SEEN_ENV = ("TRAINING_JOB_NAME", "GOVERNED_FT_PRINCIPAL_SECRET_ID")


def main():
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    with open_dagster_pipes() as pipes:
        seen = {"argv": sys.argv[1:], "cwd": os.getcwd(), "extras": pipes.extras,
                "env": {k: v for k, v in os.environ.items() if k.startswith("SM_") or k in SEEN_ENV}}
        output = Path(os.environ["SM_OUTPUT_DATA_DIR"])
        output.mkdir(parents=True, exist_ok=True)
        (output / "seen.json").write_text(json.dumps(seen))
        pipes.log.info(f"tiny training of {pipes.asset_key} with {len(sys.argv) - 1} arguments")
        print("epoch 1 loss 0.50", flush=True)
        if args.get("--fail") == "yes":
            print("loading batch 3", file=sys.stderr, flush=True)
            raise RuntimeError("CUDA out of memory: tried to allocate 2.00 GiB")
        checkpoints = Path(args.get("--checkpoint_dir", "/opt/ml/checkpoints"))
        resumed = (checkpoints / "step-1").exists()
        checkpoints.mkdir(parents=True, exist_ok=True)
        (checkpoints / "step-1").write_text("state")
        (Path(os.environ["SM_MODEL_DIR"]) / "adapter_model.safetensors").write_bytes(b"lora weights")
        hps = json.loads(os.environ["SM_HPS"])
        pipes.report_asset_materialization(metadata={
            "final_loss": 0.25, "epochs": int(hps["epochs"]), "num_gpus": int(os.environ["SM_NUM_GPUS"]),
            "resumed": resumed})


if __name__ == "__main__":
    try:
        main()
    except RuntimeError:
        traceback.print_exc()
        sys.exit(3)
'''

HYPERPARAMETERS = {"epochs": "2", "lora_r": "16", "learning_rate": "0.0002"}
SECRET_NAME = "governed-ft/train"


def write_code(root: Path) -> Path:
    (root / "job_scripts").mkdir(parents=True)
    script = root / "job_scripts" / "tiny_train.py"
    script.write_text(TINY_SCRIPT)
    return script


def spec_for(script: Path, root: Path, job_name: str = "tiny-train-1", **hps: str) -> TrainingJobSpec:
    return TrainingJobSpec(script=str(script), source_dir=str(root), job_name=job_name,
                           hyperparameters={**HYPERPARAMETERS, **hps},
                           env={"GOVERNED_FT_PRINCIPAL_SECRET_ID": SECRET_NAME})


def training_asset(spec: TrainingJobSpec) -> dg.AssetsDefinition:
    @dg.asset(name="finetuned_lora_model")
    def _asset(context: dg.AssetExecutionContext, training: TrainingJobResource) -> dg.MaterializeResult:
        result = training.run(context, spec)
        reported = result.materialize_result.metadata if result.materialize_result else {}
        return dg.MaterializeResult(metadata={**reported, "training_job": result.run_id, "kind": result.kind,
                                              "model_artifacts": result.model_artifacts,
                                              "resumed_from_checkpoint": result.properties.get("resumed_from_checkpoint", "")})

    return _asset


def materialize(spec: TrainingJobSpec, resource: TrainingJobResource,
                instance: Optional[dg.DagsterInstance] = None) -> dg.ExecuteInProcessResult:
    return dg.materialize([training_asset(spec)], resources={"training": resource}, raise_on_error=False,
                          instance=instance)


def run_log(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    """Every message of the run's event log, user log lines included."""
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    [materialization] = result.asset_materializations_for_node("finetuned_lora_model")
    return {key: value.value for key, value in materialization.metadata.items()}


def test_local_job_gets_the_sagemaker_contract_and_reports_through_pipes(tmp_path):
    code = tmp_path / "code"
    script = write_code(code)
    spec = spec_for(script, code)
    resource = LocalTrainingResource(work_dir=str(tmp_path / "state"))
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(spec, resource, instance)
    assert result.success

    job_dir = tmp_path / "state" / "training_jobs" / "tiny-train-1"
    seen = json.loads((job_dir / "output" / "data" / "seen.json").read_text())
    assert seen["argv"] == ["--epochs", "2", "--learning_rate", "0.0002", "--lora_r", "16",
                            "--checkpoint_dir", str(job_dir / "checkpoints")]
    env = seen["env"]
    gpus = "0" if shutil.which("nvidia-smi") is None else env["SM_NUM_GPUS"]
    assert {key: env[key] for key in ("SM_MODEL_DIR", "SM_OUTPUT_DIR", "SM_OUTPUT_DATA_DIR", "SM_CHECKPOINT_DIR",
                                      "SM_CHANNELS", "SM_NUM_GPUS", "SM_CURRENT_HOST", "TRAINING_JOB_NAME",
                                      "GOVERNED_FT_PRINCIPAL_SECRET_ID")} == {
        "SM_MODEL_DIR": str(job_dir / "model"), "SM_OUTPUT_DIR": str(job_dir / "output"),
        "SM_OUTPUT_DATA_DIR": str(job_dir / "output" / "data"), "SM_CHECKPOINT_DIR": str(job_dir / "checkpoints"),
        "SM_CHANNELS": "[]", "SM_NUM_GPUS": gpus, "SM_CURRENT_HOST": "algo-1", "TRAINING_JOB_NAME": "tiny-train-1",
        "GOVERNED_FT_PRINCIPAL_SECRET_ID": SECRET_NAME}
    assert json.loads(env["SM_HPS"]) == HYPERPARAMETERS
    assert int(env["SM_NUM_CPUS"]) >= 1
    assert json.loads(env["SM_TRAINING_ENV"])["hyperparameters"] == HYPERPARAMETERS
    assert env["SM_HP_LORA_R"] == "16"
    assert seen["cwd"] == str(code.resolve())
    assert seen["extras"] == {"training_job_name": "tiny-train-1", "kind": "LocalTrainingJob"}
    assert json.loads((job_dir / "input" / "config" / "hyperparameters.json").read_text()) == HYPERPARAMETERS

    assert (job_dir / "model" / "adapter_model.safetensors").read_bytes() == b"lora weights"
    meta = metadata(result)
    assert meta["final_loss"] == 0.25 and meta["epochs"] == 2 and meta["num_gpus"] == int(gpus)
    assert meta["resumed"] is False and meta["resumed_from_checkpoint"] == "false"
    assert meta["training_job"] == "tiny-train-1" and meta["kind"] == "LocalTrainingJob"
    assert meta["model_artifacts"] == (job_dir / "model").as_uri()
    messages = run_log(instance, result)
    assert any("tiny training of finetuned_lora_model with 8 arguments" in m for m in messages)

    rerun = materialize(spec, resource)
    assert rerun.success
    assert metadata(rerun)["resumed"] is True and metadata(rerun)["resumed_from_checkpoint"] == "true"


def test_failing_script_fails_the_asset_with_exit_code_and_error_line(tmp_path):
    code = tmp_path / "code"
    script = write_code(code)
    result = materialize(spec_for(script, code, job_name="tiny-train-fails", fail="yes"),
                         LocalTrainingResource(work_dir=str(tmp_path / "state"), num_gpus=0))
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    error = failure.step_failure_data.error
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("Local training job tiny-train-fails failed with exit code 3.")
    assert "RuntimeError: CUDA out of memory: tried to allocate 2.00 GiB" in description
    assert "loading batch 3" in description
    assert error is not None and "exit code 3" in error.message


def test_spec_refuses_names_sagemaker_would_refuse(tmp_path):
    script = write_code(tmp_path)
    with pytest.raises(ValueError, match="not a SageMaker job name"):
        spec_for(script, tmp_path, job_name="tiny_train")
    with pytest.raises(ValueError, match="not inside source_dir"):
        TrainingJobSpec(script=str(script), source_dir=str(tmp_path / "elsewhere"), job_name="tiny")
    with pytest.raises(ValueError, match="sagemaker_"):
        spec_for(script, tmp_path, sagemaker_program="x.py")
