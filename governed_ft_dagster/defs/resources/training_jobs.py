"""The training-job resource: one interface, a local-process and a SageMaker implementation of script mode."""

import abc
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

import dagster as dg
from pydantic import Field

from governed_ft_dagster.defs.resources.pipes_subprocess import run_pipes_subprocess
from governed_ft_dagster.job_code import source_tarball
from governed_ft_dagster.training.base_model import BASE_MODEL_ID
from governed_ft_dagster.training.distributed import RANK_STATUS_DIR_ENV, explain_failure, read_statuses
from governed_ft_dagster.training.launch import torchrun_arguments
from governed_ft_dagster.training.tracking import MLFLOW_ARTIFACT_LOCATION_ENV, mlflow_run_url

JOB_NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
SAGEMAKER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
LAUNCH_MODULE = "governed_ft_dagster.training.launch"
# What SageMaker's PyTorch estimator puts into HyperParameters for distribution={"torch_distributed": {"enabled":
# True}} (sagemaker-python-sdk, PyTorch._pytorch_distribution_configuration); the training toolkit then runs the
# entry point under torchrun on every host, one process per GPU (sagemaker-training-toolkit, TorchDistributedRunner).
TORCH_DISTRIBUTED_ENABLED = "sagemaker_torch_distributed_enabled"
INSTANCE_TYPE_HYPERPARAMETER = "sagemaker_instance_type"
Distribution = Literal["none", "torch_distributed"]

Context = Union[dg.AssetExecutionContext, dg.OpExecutionContext]

# Runs the script with stderr copied to a file, so a failure can quote its last lines; forwards SIGINT/SIGTERM.
_STDERR_TEE = """
import signal, subprocess, sys
stderr_path, exit_code_path, *command = sys.argv[1:]
child = subprocess.Popen(command, stderr=subprocess.PIPE)
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda signum, frame: child.send_signal(signum))
with open(stderr_path, "wb") as copy:
    for line in child.stderr:
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
        copy.write(line)
        copy.flush()
code = child.wait()
with open(exit_code_path, "w") as out:
    out.write(str(code))
sys.exit(code if 0 <= code < 256 else 1)
"""


@dataclass(frozen=True, kw_only=True)
class TrainingJobSpec:
    """What to train: an entry script inside its source folder, hyperparameters, non-secret environment, a job name."""

    script: str
    source_dir: str
    hyperparameters: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    job_name: str

    def __post_init__(self) -> None:
        if not JOB_NAME_PATTERN.fullmatch(self.job_name):
            raise ValueError(f"job name {self.job_name!r} is not a SageMaker job name: 1-63 letters, digits and "
                             "hyphens, starting and ending with a letter or digit")
        self.entry_point()
        bad = [k for k, v in {**self.hyperparameters, **self.env}.items()
               if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ValueError(f"hyperparameters and env take strings only; not strings: {', '.join(map(str, bad))}")
        reserved = [k for k in self.hyperparameters if k.startswith("sagemaker_")]
        if reserved:
            raise ValueError(f"hyperparameter names starting with 'sagemaker_' are SageMaker's: {', '.join(reserved)}")

    def entry_point(self) -> str:
        """The script's path relative to source_dir, as SageMaker's sagemaker_program expects it."""
        script, source = Path(self.script).resolve(), Path(self.source_dir).resolve()
        if not script.is_relative_to(source):
            raise ValueError(f"script {self.script} is not inside source_dir {self.source_dir}")
        return script.relative_to(source).as_posix()

    def argv(self) -> list[str]:
        """Hyperparameters as SageMaker's training toolkit passes them: keys sorted, --key value (-k for one letter)."""
        return [item for key in sorted(self.hyperparameters)
                for item in (f"--{key}" if len(key) > 1 else f"-{key}", self.hyperparameters[key])]


@dataclass(frozen=True)
class TrainingJobResult:
    """What a finished training job left: where the model is, facts about the run, and what the script reported."""

    kind: str
    run_id: str
    state: str
    model_artifacts: str
    properties: dict[str, str]
    materialize_result: Optional[dg.MaterializeResult] = None


class TrainingJobResource(dg.ConfigurableResource, abc.ABC):
    """Runs a training script under SageMaker's script-mode contract and returns what it produced."""

    @abc.abstractmethod
    def run(self, context: Context, spec: TrainingJobSpec) -> TrainingJobResult:
        """Run the job to its end; a failed job raises dg.Failure."""

    @abc.abstractmethod
    def links(self, result: TrainingJobResult, reported: Mapping[str, Any]) -> dict[str, str]:
        """What a person opens next about a finished job (its loss curve, its logs), by metadata label."""


def _reported_materialization(invocation: Any) -> Optional[dg.MaterializeResult]:
    reported = invocation.get_results(implicit_materializations=False)
    if any(isinstance(result, dg.MaterializeResult) for result in reported):
        return invocation.get_materialize_result(implicit_materialization=False)
    return None


def _count_gpus() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


class LocalTrainingResource(TrainingJobResource):
    """Runs the script as a local process through Pipes, in a job folder laid out like /opt/ml."""

    work_dir: str = Field(description="State folder; job folders go under work_dir/training_jobs/<job name>.")
    python: Optional[str] = Field(default=None, description="Interpreter for the script; this one by default.")
    num_gpus: Optional[int] = Field(default=None, description="SM_NUM_GPUS; counted with nvidia-smi by default.")
    num_cpus: Optional[int] = Field(default=None, description="SM_NUM_CPUS; the CPUs this process may use by default.")
    nproc_per_node: Optional[int] = Field(default=None, description="Ranks on this machine, launched with torchrun "
                                          "as SageMaker's torch_distributed does; default: one per GPU, one without.")
    stderr_tail_lines: int = Field(default=20, description="stderr lines quoted when the script fails.")
    mlflow_tracking_uri: Optional[str] = Field(default=None, description="MLflow store the job logs its params and "
                                               "loss curve to; none: no MLflow run.")
    mlflow_artifact_location: Optional[str] = Field(default=None, description="Artifact location of a new experiment.")
    mlflow_experiment: str = Field(default="governed-ft-training", description="MLflow experiment of training runs.")
    mlflow_ui_url: Optional[str] = Field(default=None, description="MLflow UI on that store, for the run's link.")

    def job_dir(self, job_name: str) -> Path:
        return Path(self.work_dir).resolve() / "training_jobs" / job_name

    def links(self, result: TrainingJobResult, reported: Mapping[str, Any]) -> dict[str, str]:
        run_id, experiment_id = reported.get("mlflow_run_id"), reported.get("mlflow_experiment_id")
        if not (self.mlflow_ui_url and run_id and experiment_id):
            return {}
        return {"mlflow_run": mlflow_run_url(self.mlflow_ui_url, str(experiment_id), str(run_id))}

    def _tracking_env(self) -> dict[str, str]:
        if not self.mlflow_tracking_uri:
            return {}
        env = {"MLFLOW_TRACKING_URI": self.mlflow_tracking_uri, "MLFLOW_EXPERIMENT_NAME": self.mlflow_experiment}
        if self.mlflow_artifact_location:
            env[MLFLOW_ARTIFACT_LOCATION_ENV] = self.mlflow_artifact_location
        return env

    def run(self, context: Context, spec: TrainingJobSpec) -> TrainingJobResult:
        job_dir = self.job_dir(spec.job_name)
        dirs = {name: job_dir / rel for name, rel in (
            ("model", "model"), ("output", "output"), ("output_data", "output/data"), ("input", "input"),
            ("input_config", "input/config"), ("checkpoints", "checkpoints"), ("logs", "logs"))}
        for name in ("model", "output", "logs"):
            shutil.rmtree(dirs[name], ignore_errors=True)
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        resumed = any(dirs["checkpoints"].iterdir())
        num_gpus = self.num_gpus if self.num_gpus is not None else _count_gpus()
        num_cpus = self.num_cpus or len(os.sched_getaffinity(0))
        ranks = self.nproc_per_node or max(1, num_gpus)
        rank_dir, exits_file = dirs["logs"] / "ranks", dirs["logs"] / "torchrun_exits.json"
        env = {**local_sagemaker_environment(spec, dirs, num_gpus=num_gpus, num_cpus=num_cpus), **self._tracking_env(),
               RANK_STATUS_DIR_ENV: str(rank_dir)}
        (dirs["input_config"] / "hyperparameters.json").write_text(json.dumps(spec.hyperparameters, indent=2))
        (dirs["input_config"] / "resourceconfig.json").write_text(
            json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}, indent=2))
        stderr_log, exit_code_file = dirs["logs"] / "stderr.log", dirs["logs"] / "exit_code"
        python = self.python or sys.executable
        script = str(Path(spec.script).resolve())
        launcher = [python, "-m", LAUNCH_MODULE, "--exits", str(exits_file), *torchrun_arguments(1, ranks)] \
            if ranks > 1 else [python]
        command = [python, "-c", _STDERR_TEE, str(stderr_log), str(exit_code_file),
                   *launcher, script, *spec.argv(), "--checkpoint_dir", str(dirs["checkpoints"])]
        context.log.info(f"Local training job {spec.job_name}: {spec.entry_point()} in {job_dir}"
                         + (f" on {ranks} ranks (torchrun)" if ranks > 1 else "")
                         + (" (resuming from its checkpoints)" if resumed else ""))
        started = time.monotonic()
        invocation, exit_code = run_pipes_subprocess(
            context, command, env=env, cwd=str(Path(spec.source_dir).resolve()),
            extras={"training_job_name": spec.job_name, "kind": "LocalTrainingJob"})
        if exit_code != 0:
            cause = explain_failure(read_statuses(rank_dir), ranks, _exit_codes(exits_file)) if ranks > 1 else None
            raise self._failure(spec.job_name, job_dir, stderr_log, exit_code_file, cause)
        elapsed = time.monotonic() - started
        context.log.info(f"Local training job {spec.job_name}: Completed in {elapsed:.1f} s")
        return TrainingJobResult(
            kind="LocalTrainingJob",
            run_id=spec.job_name,
            state="Completed",
            model_artifacts=dirs["model"].as_uri(),
            properties={
                "job_dir": str(job_dir),
                "model_dir": str(dirs["model"]),
                "checkpoint_dir": str(dirs["checkpoints"]),
                "entry_point": spec.entry_point(),
                "num_gpus": str(num_gpus),
                "num_cpus": str(num_cpus),
                "ranks": str(ranks),
                "elapsed_seconds": f"{elapsed:.1f}",
                "resumed_from_checkpoint": str(resumed).lower(),
            },
            materialize_result=_reported_materialization(invocation),
        )

    def _failure(self, job_name: str, job_dir: Path, stderr_log: Path, exit_code_file: Path,
                 cause: Optional[str] = None) -> dg.Failure:
        code = exit_code_file.read_text().strip() if exit_code_file.exists() else "unknown"
        stderr = stderr_log.read_text(errors="replace").splitlines() if stderr_log.exists() else []
        tail = stderr[-self.stderr_tail_lines:]
        failure_file = job_dir / "output" / "failure"
        reason = failure_file.read_text(errors="replace").strip() if failure_file.exists() else ""
        lines = [f"Local training job {job_name} failed with exit code {code}."]
        if cause:
            lines.append(f"Cause: {cause}")
        elif reason:
            lines.append(f"Failure reason: {reason}")
        if tail:
            lines += [f"Last {len(tail)} stderr lines:", *tail]
        lines.append(f"Job folder: {job_dir} (full stderr in {stderr_log})")
        return dg.Failure(description="\n".join(lines),
                          metadata={"exit_code": code, "job_dir": dg.MetadataValue.path(str(job_dir)),
                                    **({"cause": cause} if cause else {}),
                                    "stderr_log": dg.MetadataValue.path(str(stderr_log))})


def _exit_codes(exits_file: Path) -> dict[int, int]:
    """How each failed rank exited, as the launcher recorded it (negative: killed by that signal)."""
    if not exits_file.exists():
        return {}
    return {int(rank): int(item["exitcode"]) for rank, item in json.loads(exits_file.read_text()).items()}


def local_sagemaker_environment(spec: TrainingJobSpec, dirs: dict[str, Path], *, num_gpus: int,
                                num_cpus: int) -> dict[str, str]:
    """The environment SageMaker's training toolkit gives a script-mode entry point, pointed at local folders."""
    source_dir = str(Path(spec.source_dir).resolve())
    training_env = {
        "job_name": spec.job_name,
        "hyperparameters": spec.hyperparameters,
        "user_entry_point": spec.entry_point(),
        "module_dir": source_dir,
        "model_dir": str(dirs["model"]),
        "output_dir": str(dirs["output"]),
        "output_data_dir": str(dirs["output_data"]),
        "input_dir": str(dirs["input"]),
        "input_config_dir": str(dirs["input_config"]),
        "channel_input_dirs": {},
        "input_data_config": {},
        "current_host": "algo-1",
        "hosts": ["algo-1"],
        "master_hostname": "algo-1",
        "is_master": True,
        "num_gpus": num_gpus,
        "num_cpus": num_cpus,
        "log_level": 20,
    }
    env = {
        **spec.env,
        "TRAINING_JOB_NAME": spec.job_name,
        "SM_MODEL_DIR": str(dirs["model"]),
        "SM_OUTPUT_DIR": str(dirs["output"]),
        "SM_OUTPUT_DATA_DIR": str(dirs["output_data"]),
        "SM_INPUT_DIR": str(dirs["input"]),
        "SM_INPUT_CONFIG_DIR": str(dirs["input_config"]),
        "SM_CHECKPOINT_DIR": str(dirs["checkpoints"]),
        "SM_CHANNELS": "[]",
        "SM_NUM_GPUS": str(num_gpus),
        "SM_NUM_CPUS": str(num_cpus),
        "SM_HPS": json.dumps(spec.hyperparameters),
        "SM_USER_ARGS": json.dumps(spec.argv()),
        "SM_USER_ENTRY_POINT": spec.entry_point(),
        "SM_MODULE_DIR": source_dir,
        "SM_CURRENT_HOST": "algo-1",
        "SM_HOSTS": json.dumps(["algo-1"]),
        "SM_LOG_LEVEL": "20",
        "SM_TRAINING_ENV": json.dumps(training_env),
        "PYTHONPATH": os.pathsep.join(p for p in (source_dir, os.environ.get("PYTHONPATH", "")) if p),
        "PYTHONUNBUFFERED": "1",
    }
    env.update({f"SM_HP_{key.upper()}": value for key, value in spec.hyperparameters.items()})
    return env


class SageMakerTrainingResource(TrainingJobResource):
    """Runs the staged script as a SageMaker script-mode training job through Pipes, with no channel on governed data.

    Nothing is uploaded at job start: the source folder and the base model must be staged (`governed-ft aws stage`,
    `governed-ft aws stage-model`), and the request names only their staged URIs.
    """

    region: str = Field(description="AWS region of the training job.")
    role_arn: str = Field(description="Execution role of the training job.")
    image_uri: Optional[str] = Field(default=None, description=(
        "Training image; by default the AWS PyTorch training container the staged environment is built for, looked "
        "up for the region and instance type."))
    python_env: str = Field(default="staged", description=(
        "'staged': the training environment of the installed recipe under code_s3_prefix, mounted as the "
        "`environment` channel; an s3:// folder of one; or 'image' for an image that holds every package."))
    instance_type: str = "ml.g5.16xlarge"
    instance_count: int = 1
    distribution: Distribution = Field(
        default="none", description="torch_distributed: torchrun on every instance, one rank per GPU, as SageMaker's "
                                    "PyTorch containers launch it; needed for several instances or GPUs.")
    gpus_per_instance: Optional[int] = Field(
        default=None, description="GPUs of one instance; known for SageMaker's GPU and CPU instance types.")
    volume_size_gb: int = 100
    max_runtime_s: int = Field(default=24 * 3600, description="StoppingCondition.MaxRuntimeInSeconds.")
    use_spot: bool = Field(default=False, description="Managed spot training.")
    max_wait_s: Optional[int] = Field(default=None,
                                      description="MaxWaitTimeInSeconds with spot; twice max_runtime_s by default.")
    checkpoint_s3_uri: str = Field(description="Checkpoint prefix; one folder per job name, synced both ways.")
    output_s3_uri: str = Field(description="OutputDataConfig.S3OutputPath (the ml/ prefix for artifacts).")
    code_s3_prefix: str = Field(description="The staged code prefix: source tarballs and base models are looked up "
                                            "here by content and revision.")
    base_model_id: str = Field(default=BASE_MODEL_ID, description="Hub id of the staged base model the jobs train.")
    base_model_revision: Optional[str] = Field(
        default=None, description="Pinned revision staged by `governed-ft aws stage-model`; needed by a job that "
                                  "names base_model.")
    subnets: list[str] = Field(default_factory=list, description="VPC subnets; with security_group_ids.")
    security_group_ids: list[str] = Field(default_factory=list, description="VPC security groups; with subnets.")
    endpoint_url: Optional[str] = Field(default=None, description="AWS endpoint for every client (tests only).")
    poll_interval_s: float = Field(default=30.0, description="Seconds between status and log polls.")
    stream_logs: bool = Field(default=True, description="Copy the job's CloudWatch log lines into the Dagster run.")
    tags: dict[str, str] = Field(default_factory=dict)

    def boto_client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint_url,
                            config=Config(retries={"mode": "standard", "max_attempts": 10}))

    def run(self, context: Context, spec: TrainingJobSpec) -> TrainingJobResult:
        from governed_ft_dagster.defs.resources.pipes_sagemaker import (
            PipesSageMakerClient,
            PipesSageMakerContextInjector,
            PipesSageMakerMessageReader,
            job_console_link,
            log_group_link,
        )

        from governed_ft_dagster.provision.staging import NotStaged

        from governed_ft_dagster.provision import ProvisionError

        try:
            self.check_distribution()
        except ValueError as exc:
            raise dg.Failure(description=f"SageMaker training job {spec.job_name} cannot start: {exc}",
                             allow_retries=False) from None
        sagemaker, s3, logs = self.boto_client("sagemaker"), self.boto_client("s3"), self.boto_client("logs")
        try:
            code_uri = self.staged_source(s3, spec)
            model_uri = self.staged_model(s3, spec)
            environment_uri = self.staged_environment(s3)
            image = self.training_image()
        except (NotStaged, ProvisionError) as exc:
            raise dg.Failure(description=f"SageMaker training job {spec.job_name} cannot start: {exc}",
                             allow_retries=False) from None
        job_name = self.free_job_name(sagemaker, spec.job_name)
        params = self.create_training_job_params(spec, job_name, code_uri, model_uri, environment_uri, image)
        forward = (lambda host, line: context.log.info(f"[{job_name} {host}] {line}")) if self.stream_logs else None
        client = PipesSageMakerClient(
            client=sagemaker,
            context_injector=PipesSageMakerContextInjector(
                s3_client=s3, spill_s3_uri=f"{self.code_s3_prefix.rstrip('/')}/pipes"),
            message_reader=PipesSageMakerMessageReader(client=logs, interval=self.poll_interval_s),
            logs_client=logs,
            poll_interval=self.poll_interval_s,
            forward_logs=forward,
        )
        invocation = client.run(context=context, create_training_job_params=params,
                                extras={"training_job_name": job_name, "kind": "SageMakerTrainingJob"})
        response = sagemaker.describe_training_job(TrainingJobName=job_name)
        artifacts = (response.get("ModelArtifacts") or {}).get("S3ModelArtifacts", "")
        properties = {
            "job_arn": response.get("TrainingJobArn", ""),
            "job_name": job_name,
            "region": self.region,
            "image": image,
            "instance_type": self.instance_type,
            "instance_count": str(self.instance_count),
            "distribution": self.distribution,
            "ranks": str(self.ranks()),
            "billable_seconds": str(response.get("BillableTimeInSeconds", "")),
            "training_seconds": str(response.get("TrainingTimeInSeconds", "")),
            "spot": str(self.use_spot).lower(),
            "secondary_status": response.get("SecondaryStatus", ""),
            "model_artifacts": artifacts,
            "checkpoint_s3_uri": params["CheckpointConfig"]["S3Uri"],
            "code_s3_uri": code_uri,
            **({"base_model_s3_uri": model_uri} if model_uri else {}),
            "log_link": log_group_link(self.region, job_name),
            "console_link": job_console_link(self.region, job_name),
        }
        billable, training = response.get("BillableTimeInSeconds"), response.get("TrainingTimeInSeconds")
        if self.use_spot and billable is not None and training:
            properties["spot_savings"] = f"{100 * (1 - billable / training):.0f}%"
        return TrainingJobResult(kind="SageMakerTrainingJob", run_id=job_name, state=response["TrainingJobStatus"],
                                 model_artifacts=artifacts, properties=properties,
                                 materialize_result=_reported_materialization(invocation))

    def links(self, result: TrainingJobResult, reported: Mapping[str, Any]) -> dict[str, str]:
        return {"sagemaker_job": result.properties["console_link"], "sagemaker_logs": result.properties["log_link"]}

    def instance_gpus(self) -> int:
        """GPUs of one instance: gpus_per_instance, else SageMaker's figure for the instance type."""
        if self.gpus_per_instance is not None:
            return self.gpus_per_instance
        gpus = instance_type_gpus(self.instance_type)
        if gpus is None:
            raise ValueError(f"the GPUs of instance type {self.instance_type} are not known here; set "
                             "gpus_per_instance")
        return gpus

    def ranks(self) -> int:
        """Training processes of the job: one per GPU of every instance with torch_distributed, else one."""
        return self.instance_count * max(1, self.instance_gpus()) if self.distribution == "torch_distributed" else 1

    def check_distribution(self) -> None:
        """Refuse a job that would train copies side by side or leave GPUs idle: several instances or GPUs need
        torch_distributed."""
        if self.instance_count < 1:
            raise ValueError(f"instance_count is {self.instance_count}; a job needs at least one instance")
        gpus = self.instance_gpus()
        if self.distribution == "none" and (self.instance_count > 1 or gpus > 1):
            what = ("a process on each instance, each training its own copy of the adapter"
                    if self.instance_count > 1 else "one process on one GPU and leave the others idle")
            raise ValueError(
                f"{self.instance_count} x {self.instance_type} ({gpus} GPU{'' if gpus == 1 else 's'} each) without "
                f"distribution would run {what}; set distribution to torch_distributed (torchrun over "
                f"{self.instance_count * max(1, gpus)} ranks) or ask for one single-GPU instance")

    def staged_source(self, s3: Any, spec: TrainingJobSpec) -> str:
        """The staged URI of exactly this source folder's sourcedir.tar.gz; NotStaged when it is not there."""
        from governed_ft_dagster.provision.staging import CodePrefix, source_uri

        uri = source_uri(self.code_s3_prefix, source_tarball(spec.source_dir))
        return CodePrefix(s3, self.code_s3_prefix).require(uri, f"the SageMaker source_dir of {spec.entry_point()}")

    def training_image(self) -> str:
        """The configured image, or the AWS PyTorch training container the staged environment is built for."""
        from governed_ft_dagster.provision.training_image import image_uri

        return self.image_uri or image_uri(self.region, self.instance_type)

    def staged_environment(self, s3: Any) -> Optional[str]:
        """The staged training environment's object URI (None with python_env='image'); NotStaged when missing."""
        from governed_ft_dagster.provision.staging import SAGEMAKER_ENV_NAME, CodePrefix, sagemaker_env_uri

        if self.python_env == "image":
            return None
        prefix = CodePrefix(s3, self.code_s3_prefix)
        if self.python_env == "staged":
            return prefix.require(sagemaker_env_uri(self.code_s3_prefix), "the SageMaker training environment")
        return prefix.require(f"{self.python_env.rstrip('/')}/{SAGEMAKER_ENV_NAME}", "the SageMaker training environment")

    def staged_model(self, s3: Any, spec: TrainingJobSpec) -> Optional[str]:
        """The staged base model prefix when the job names base_model (it must be this resource's); else None."""
        from governed_ft_dagster.provision.staging import CodePrefix, NotStaged, model_complete_uri, model_uri

        wanted = spec.hyperparameters.get("base_model")
        if wanted is None:
            return None
        if wanted != self.base_model_id:
            raise NotStaged(f"the job asks for base model {wanted!r}; SageMaker jobs train the staged "
                            f"{self.base_model_id!r} only (set base_model_id, then `governed-ft aws stage-model`)")
        if not self.base_model_revision:
            raise NotStaged(f"no staged revision of {self.base_model_id} is configured (base_model_revision, "
                            f"GOVERNED_FT_MODEL_REVISION); run `governed-ft aws stage-model` and set it")
        uri = model_uri(self.code_s3_prefix, self.base_model_id, self.base_model_revision)
        CodePrefix(s3, self.code_s3_prefix).require(
            model_complete_uri(uri), f"the base model {self.base_model_id}@{self.base_model_revision} (all of it)")
        return uri

    def free_job_name(self, sagemaker: Any, base: str) -> str:
        """The spec's job name, or base-rN when earlier runs used it (SageMaker job names are never reused)."""
        from botocore.exceptions import ClientError

        for attempt in range(1, 1000):
            suffix = "" if attempt == 1 else f"-r{attempt}"
            name = base[:63 - len(suffix)].rstrip("-") + suffix
            try:
                sagemaker.describe_training_job(TrainingJobName=name)
            except ClientError as err:
                message = err.response.get("Error", {}).get("Message", "")
                if "not found" in message.lower() or "could not find" in message.lower():
                    return name
                raise
        raise RuntimeError(f"no free SageMaker job name left for {base}")

    def create_training_job_params(self, spec: TrainingJobSpec, job_name: str, code_uri: str,
                                   model_uri: Optional[str] = None, environment_uri: Optional[str] = None,
                                   image: Optional[str] = None) -> dict[str, Any]:
        """The CreateTrainingJob request, before the Pipes client adds its bootstrap environment and run tags.

        With a staged base model, base_model leaves the hyperparameters (the job reads the `model` channel) and
        base_model_revision names the staged revision.
        """
        from governed_ft_dagster.provision.staging import environment_channel, model_channel

        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("set both subnets and security_group_ids for a VPC job, or neither")
        self.check_distribution()
        max_wait = self.max_wait_s if self.max_wait_s is not None else 2 * self.max_runtime_s
        if self.use_spot and max_wait < self.max_runtime_s:
            raise ValueError(f"max_wait_s ({max_wait}) must be at least max_runtime_s ({self.max_runtime_s}) with spot")
        user = dict(spec.hyperparameters)
        if model_uri:
            user.pop("base_model", None)
            user["base_model_revision"] = str(self.base_model_revision)
        hyperparameters = {key: json.dumps(value) for key, value in user.items()}
        hyperparameters.update({
            "sagemaker_program": json.dumps(spec.entry_point()),
            "sagemaker_submit_directory": json.dumps(code_uri),
            "sagemaker_container_log_level": "20",
            "sagemaker_job_name": json.dumps(job_name),
            "sagemaker_region": json.dumps(self.region),
        })
        if self.distribution == "torch_distributed":
            hyperparameters[TORCH_DISTRIBUTED_ENABLED] = json.dumps(True)
            hyperparameters[INSTANCE_TYPE_HYPERPARAMETER] = json.dumps(self.instance_type)
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": self.max_runtime_s}
        if self.use_spot:
            stopping["MaxWaitTimeInSeconds"] = max_wait
        params: dict[str, Any] = {
            "TrainingJobName": job_name,
            "RoleArn": self.role_arn,
            "AlgorithmSpecification": {"TrainingImage": image or self.training_image(), "TrainingInputMode": "File"},
            "HyperParameters": hyperparameters,
            "Environment": dict(spec.env),
            "OutputDataConfig": {"S3OutputPath": self.output_s3_uri},
            "ResourceConfig": {"InstanceType": self.instance_type, "InstanceCount": self.instance_count,
                               "VolumeSizeInGB": self.volume_size_gb},
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": self.use_spot,
            "CheckpointConfig": {"S3Uri": f"{self.checkpoint_s3_uri.rstrip('/')}/{spec.job_name}/",
                                 "LocalPath": SAGEMAKER_CHECKPOINT_DIR},
            "Tags": [{"Key": key, "Value": value} for key, value in self.tags.items()],
        }
        channels = ([model_channel(model_uri)] if model_uri else []) + (
            [environment_channel(environment_uri)] if environment_uri else [])
        if channels:
            params["InputDataConfig"] = channels
        if self.subnets:
            params["VpcConfig"] = {"Subnets": list(self.subnets), "SecurityGroupIds": list(self.security_group_ids)}
        return params


# GPUs per instance of SageMaker's training instance types (AWS's instance type pages); CPU types have none.
_GPUS_BY_SIZE = {
    "g4dn": {"12xlarge": 4}, "g5": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g6": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, "g6e": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "p3": {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}, "p3dn": {"24xlarge": 8}, "p4d": {"24xlarge": 8},
    "p4de": {"24xlarge": 8}, "p5": {"48xlarge": 8}, "p5e": {"48xlarge": 8}, "p5en": {"48xlarge": 8},
}
_SINGLE_GPU_FAMILIES = {"g4dn", "g5", "g6", "g6e"}  # every size not listed above: one GPU
_CPU_FAMILIES = re.compile(r"^(m|c|r|t)\d[a-z]*$")


def instance_type_gpus(instance_type: str) -> Optional[int]:
    """GPUs of one SageMaker instance of this type; None when the type is not known here."""
    match = re.fullmatch(r"ml\.([a-z0-9]+)\.([a-z0-9]+)", instance_type)
    if not match:
        return None
    family, size = match.groups()
    if _CPU_FAMILIES.match(family):
        return 0
    if size in _GPUS_BY_SIZE.get(family, {}):
        return _GPUS_BY_SIZE[family][size]
    return 1 if family in _SINGLE_GPU_FAMILIES else None
