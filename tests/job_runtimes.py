"""What EMR Serverless and SageMaker do after StartJobRun and CreateTrainingJob, run here from the recorded request:
fetch what the request names from the code prefix, lay the job out as the service does, run the real job script with
the job role's credentials, ship its output to CloudWatch Logs. Also the training container's interpreter."""

from __future__ import annotations

import fcntl
import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import boto3
from dagster_pipes import decode_param, encode_param

from governed_ft_dagster.provision import staging, training_image
from governed_ft_dagster.storage import extract_tar

OPT_ML = "/opt/ml"
MOTO_ACCOUNT = "123456789012"  # moto's default account, where the services' jobs live
SAGEMAKER_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


# ---- the training container's interpreter -----------------------------------------------------------------------


def build_cache_root() -> Path:
    """Where builds that outlive one test session are kept, by content (a temporary folder of this machine)."""
    root = Path(os.environ.get("GOVERNED_FT_TEST_CACHE") or Path(tempfile.gettempdir()) / "governed-ft-test-cache")
    root.mkdir(parents=True, exist_ok=True)
    return root


def find_python(version: str) -> Optional[Path]:
    """A CPython of this minor version: one of pyenv's builds, or one on PATH (not a pyenv shim, which resolves by
    whatever version file is in force)."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    builds = sorted(glob.glob(str(pyenv_root / "versions" / f"{version}.*" / "bin" / f"python{version}")))
    if builds:
        return Path(builds[-1])
    found = shutil.which(f"python{version}")
    return Path(found) if found and "/shims/" not in found else None


def container_python(cache_root: Path, log=print) -> Path:
    """A fresh venv holding what the training container holds for the job: its CPython minor version and its torch,
    from the package index; nothing else. Built once per (Python, torch) and reused by content."""
    python = find_python(training_image.PYTHON_VERSION)
    if python is None:
        raise RuntimeError(f"no CPython {training_image.PYTHON_VERSION} here (the {training_image.FRAMEWORK} "
                           f"{training_image.FRAMEWORK_VERSION} training container's); install python"
                           f"{training_image.PYTHON_VERSION} or point PYENV_ROOT at a pyenv that has it")
    version = subprocess.run([str(python), "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                             check=True).stdout.strip()
    key = hashlib.sha256(json.dumps([version, training_image.FRAMEWORK_VERSION]).encode()).hexdigest()[:16]
    venv = cache_root / f"container-{training_image.FRAMEWORK}-{training_image.FRAMEWORK_VERSION}-" \
                        f"{training_image.PY_VERSION}-{key}"
    done = venv / ".complete"
    with open(cache_root / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            started = time.monotonic()
            subprocess.run([str(python), "-m", "venv", str(venv)], check=True, capture_output=True)
            # uv (the test venv's, as the Makefile installs it) downloads torch and its CUDA wheels in parallel.
            uv = Path(sys.executable).with_name("uv")
            installer = [str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")] \
                if uv.exists() else [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                                     "--disable-pip-version-check"]
            proc = subprocess.run([*installer, f"torch=={training_image.FRAMEWORK_VERSION}"],
                                  capture_output=True, text=True, timeout=1800)
            if proc.returncode:
                raise RuntimeError(f"{Path(installer[0]).name} could not install torch "
                                   f"{training_image.FRAMEWORK_VERSION}: {proc.stderr[-2000:]}")
            done.write_text(f"{version}\nbuilt in {time.monotonic() - started:.0f} s\n")
            log(f"container interpreter built in {time.monotonic() - started:.0f} s: {venv}")
    return venv / "bin" / "python"


# ---- shared by both services -------------------------------------------------------------------------------------


class JobService:
    """A service that runs jobs from recorded requests, acting with the job role's credentials."""

    operation = ""

    def __init__(self, moto_url: str, work: Path, keys: Optional[dict[str, str]] = None, region: str = "us-east-1"):
        self.moto_url, self.work, self.keys, self.region = moto_url, work, keys, region
        self.requests: list[dict] = []
        self.outputs: list[str] = []
        self._pending: Optional[dict] = None

    def client(self, service: str):
        """A client with the job role's credentials (the process' own where none were given)."""
        return boto3.client(service, region_name=self.region, endpoint_url=self.moto_url, **(self.keys or {}))

    def attach(self, session: boto3.Session) -> None:
        """Run a job for every accepted request this session's clients make."""
        service, operation = self.operation.split(".")
        session.events.register(f"before-call.{service}.{operation}", self._record)
        session.events.register(f"after-call.{service}.{operation}", self._accepted)

    def _record(self, **kwargs) -> None:
        self._pending = json.loads(kwargs["params"]["body"])

    def _accepted(self, **kwargs) -> None:
        if kwargs["http_response"].status_code >= 300:  # refused: nothing starts
            return
        self.requests.append(self._pending)
        self.run(self._pending, kwargs["parsed"])

    def run(self, request: dict, response: dict) -> None:
        raise NotImplementedError

    def job_env(self) -> dict[str, str]:
        """The process environment of a job: the basics of this one and the job role's credentials."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "JAVA_HOME", "HOME", "LANG", "TMPDIR")}
        keys = self.keys or {"aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", ""),
                             "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "")}
        env.update({k.upper(): v for k, v in keys.items() if v})
        env.update(AWS_REGION=self.region, AWS_DEFAULT_REGION=self.region)
        return env

    def ship_logs(self, group: str, stream: str, text: str) -> None:
        logs = self.client("logs")
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        lines = [line for line in text.splitlines() if line.strip()]
        for start in range(0, len(lines), 500):
            now = int(time.time() * 1000)
            logs.put_log_events(logGroupName=group, logStreamName=stream,
                                logEvents=[{"timestamp": now, "message": line} for line in lines[start:start + 500]])

    def download_prefix(self, uri: str, target: Path) -> list[str]:
        """Every object under an S3 prefix, at its path relative to the prefix (as a File-mode channel holds it)."""
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


# ---- SageMaker ----------------------------------------------------------------------------------------------------


class SageMakerRuntime(JobService):
    """After CreateTrainingJob: /opt/ml from the request, the toolkit's environment, the entry point run by the
    container's interpreter, the model and checkpoints uploaded, the output shipped to CloudWatch Logs."""

    operation = "sagemaker.CreateTrainingJob"

    def __init__(self, moto_url: str, work: Path, python: str, keys: Optional[dict[str, str]] = None,
                 region: str = "us-east-1"):
        super().__init__(moto_url, work, keys, region)
        self.python = python
        self.roots: list[Path] = []

    def at_root(self, root: Path, path: str) -> Path:
        """A path the request gives under /opt/ml, inside this job's temporary /opt/ml."""
        if not path.startswith(OPT_ML + "/"):
            raise AssertionError(f"{path} is not under {OPT_ML}")
        return root / path[len(OPT_ML) + 1:]

    def run(self, request: dict, response: dict) -> None:
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
            **self.job_env(),
            "TRAINING_JOB_NAME": name,
            "TRAINING_JOB_ARN": response["TrainingJobArn"],
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
        proc = subprocess.run([self.python, hps["sagemaker_program"], *argv], cwd=dirs["code"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
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
        if proc.returncode != 0:
            failure = dirs["output"] / "failure"
            self.ended_failed(name, failure.read_text() if failure.exists() else f"exit code {proc.returncode}")
        logs = self.client("logs")
        try:
            logs.create_log_group(logGroupName=SAGEMAKER_LOG_GROUP)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        self.ship_logs(SAGEMAKER_LOG_GROUP, f"{name}/algo-1-{int(time.time())}", proc.stdout)

    def ended_failed(self, name: str, reason: str) -> None:
        """What DescribeTrainingJob then says, as SageMaker says it for an algorithm error (moto says Completed)."""
        from moto.sagemaker.models import sagemaker_backends

        job = sagemaker_backends[MOTO_ACCOUNT][self.region].training_jobs[name]
        job.training_job_status, job.secondary_status = "Failed", "Failed"
        job.failure_reason = f"AlgorithmError: {reason}"[:1024]

    def upload_tree(self, folder: Path, uri: str) -> None:
        bucket, prefix = staging.split_s3_uri(uri)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.client("s3").upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder)}")


# ---- EMR Serverless ----------------------------------------------------------------------------------------------


class EmrRuntime(JobService):
    """After StartJobRun: fetch what the request names, unpack the archives, spark-submit on the release's jars."""

    operation = "emr-serverless.StartJobRun"

    def __init__(self, moto_url: str, work: Path, spark_home: Path, keys: Optional[dict[str, str]] = None,
                 region: str = "us-east-1"):
        from governed_ft_dagster.stack import spark_runtime

        super().__init__(moto_url, work, keys, region)
        # What the release ships: Spark on its Hadoop 3.4.1 with S3A on the AWS SDK for Java v2. Everything else the
        # job runs with (Delta, the S3A credentials provider, Python code and environment) comes from the request.
        self.release_home = spark_runtime.spark_home(spark_home, s3a=True)

    def fetch(self, uri: str, job_dir: Path) -> Path:
        bucket, key = staging.split_s3_uri(uri)
        local = job_dir / "s3" / bucket / key
        local.parent.mkdir(parents=True, exist_ok=True)
        self.client("s3").download_file(bucket, key, str(local))
        return local

    def run(self, request: dict, response: dict) -> None:
        from governed_ft_dagster.stack import spark_runtime

        job_dir = self.work / response["jobRunId"]
        job_dir.mkdir(parents=True)
        submit = request["jobDriver"]["sparkSubmit"]
        tokens = submit["sparkSubmitParameters"].split()
        conf = dict(tokens[i + 1].split("=", 1) for i, t in enumerate(tokens) if t == "--conf")
        for item in conf.get("spark.archives", "").split(","):
            uri, _, alias = item.partition("#")
            (job_dir / alias).mkdir()
            with tarfile.open(self.fetch(uri, job_dir)) as archive:
                archive.extractall(job_dir / alias, filter="fully_trusted")
        local = {}

        def to_local(match: re.Match) -> str:
            uri = match.group(0)
            if uri not in local:
                local[uri] = str(self.fetch(uri, job_dir))
            return local[uri]

        s3_uri = re.compile(r"s3://[^,#\s]+")
        command = [str(spark_runtime.spark_submit(self.release_home)), "--master", "local[2]",
                   *[s3_uri.sub(to_local, t) for t in tokens], s3_uri.sub(to_local, submit["entryPoint"]),
                   *submit["entryPointArguments"]]
        driver_env = {k.removeprefix("spark.emr-serverless.driverEnv."): v for k, v in conf.items()
                      if k.startswith("spark.emr-serverless.driverEnv.")}
        env = {**self.job_env(), "SPARK_HOME": str(self.release_home),
               "SPARK_CONF_DIR": str(self.release_conf(job_dir)), "SPARK_LOCAL_IP": "127.0.0.1", **driver_env}
        # Like Spark's PythonRunner on EMR: the Python driver's stderr is merged into the driver's stdout.
        proc = subprocess.run(command, cwd=job_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=900)
        self.outputs.append(proc.stdout)
        (job_dir / "driver-output.log").write_text(proc.stdout)
        jvm = f"User application exited with {proc.returncode}" if proc.returncode else "Successfully stopped"
        cloudwatch = request["configurationOverrides"]["monitoringConfiguration"]["cloudWatchLoggingConfiguration"]
        stream = (f"{cloudwatch['logStreamNamePrefix']}/applications/{response['applicationId']}"
                  f"/jobs/{response['jobRunId']}/SPARK_DRIVER")
        for output, text in {"stdout": proc.stdout, "stderr": jvm}.items():
            self.ship_logs(cloudwatch["logGroupName"], f"{stream}/{output}", text)
        if proc.returncode:
            from moto.emrserverless.models import emrserverless_backends

            runs = emrserverless_backends[MOTO_ACCOUNT][self.region].job_runs[response["applicationId"]]
            [run] = [r for r in runs if r.id == response["jobRunId"]]
            # As EMR Serverless reports a driver that exited non-zero (moto says SUCCESS whatever ran).
            run.state = "FAILED"
            run.state_details = (f"Job failed, please check complete logs in configured logging destination. "
                                 f"ExitCode: {proc.returncode}.")

    def release_conf(self, job_dir: Path) -> Path:
        """spark-defaults of the 'release' run here: a loopback driver."""
        conf_dir = job_dir / "release-conf"
        conf_dir.mkdir()
        (conf_dir / "spark-defaults.conf").write_text(
            "spark.ui.enabled false\nspark.driver.host 127.0.0.1\nspark.driver.bindAddress 127.0.0.1\n"
            "spark.sql.shuffle.partitions 4\n")
        (conf_dir / "log4j2.properties").write_text(
            "rootLogger.level = warn\nrootLogger.appenderRef.stderr.ref = console\nappender.console.type = Console\n"
            "appender.console.name = console\nappender.console.target = SYSTEM_ERR\n"
            "appender.console.layout.type = PatternLayout\nappender.console.layout.pattern = %p %c{1}: %m%n%ex\n")
        return conf_dir


def hooked_session(monkeypatch, *services: JobService, region: str = "us-east-1") -> boto3.Session:
    """A default boto3 session whose clients start the given services' jobs (the resources call boto3.client())."""
    session = boto3.Session(region_name=region)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    for service in services:
        service.attach(session)
    return session


__all__: list[Any] = ["EmrRuntime", "SageMakerRuntime", "container_python", "hooked_session", "build_cache_root"]
