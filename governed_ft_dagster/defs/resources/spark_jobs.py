"""The preprocessing resource: one Spark job interface, a local spark-submit and an EMR Serverless implementation."""

import abc
import copy
import hashlib
import json
import re
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

import dagster as dg
from dagster_aws.pipes import PipesCloudWatchMessageReader
from dagster_aws.pipes.message_readers import get_log_events
from dagster_pipes import PIPES_PROTOCOL_VERSION_FIELD
from pydantic import Field, PrivateAttr

from governed_ft_dagster.defs.resources.pipes_subprocess import run_pipes_subprocess
from governed_ft_dagster.provision import staging
from governed_ft_dagster.stack import jars, spark_runtime, versions
from governed_ft_dagster.stack.errors import StackError

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
DELTA_JARS = (f"delta-spark_{versions.SCALA_BINARY}-{versions.DELTA_VERSION}.jar",
              f"delta-storage-{versions.DELTA_VERSION}.jar")
OUTPUT_TAIL_LINES = 20
_SECRETISH = re.compile(r"(^|_)(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?|PRIVATE_KEY|ACCESS_KEY|API_KEY)(_|$)", re.I)


@dataclass(frozen=True)
class SparkJobSpec:
    """What to run: a job script, its arguments, Python files, non-secret environment, folders found by alias."""

    script: str
    args: list[str] = field(default_factory=list)
    py_files: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    name: str = ""
    archives: dict[str, str] = field(default_factory=dict)

    @property
    def job_name(self) -> str:
        return self.name or Path(self.script).stem


@dataclass
class SparkJobResult:
    """A finished job run: its lineage identity, properties and what the script reported through Pipes."""

    kind: str
    run_id: str
    state: str
    properties: dict[str, str]
    materialize_result: Optional[dg.MaterializeResult] = None


class SparkJobResource(dg.ConfigurableResource, abc.ABC):
    """Runs a PySpark job script that reports back through Dagster Pipes."""

    @abc.abstractmethod
    def run(self, context: dg.AssetExecutionContext, spec: SparkJobSpec) -> SparkJobResult:
        """Run the job to completion; raise dg.Failure when it does not succeed."""


class LocalSparkResource(SparkJobResource):
    """spark-submit on this machine: pyspark's Spark on the EMR release's Hadoop, jars from the offline jar cache."""

    home: str = Field(description="State folder: holds the jar cache and one folder per job run.")
    master: str = Field(default="local[2]", description=(
        "Spark master URL; with executors in JVMs of their own (local-cluster[...]) the job's folders travel to them "
        "as spark.archives, as on EMR."))
    driver_memory: str = Field(default="2g", description="spark-submit --driver-memory.")
    shuffle_partitions: int = Field(default=4, description="spark.sql.shuffle.partitions.")
    jar_groups: list[str] = Field(default_factory=lambda: ["spark"], description="Cached jar groups put on --jars.")
    s3a: bool = Field(default=False, description=(
        "Read and write s3:// tables: the release's S3A and AWS SDK v2 (jar group 's3a') on the Spark home and the "
        "project's credentials provider on --jars, as on EMR."))
    log_level: str = Field(default="WARN", description="Root log4j level of the Spark JVM.")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark conf; overrides the defaults.")

    def run(self, context: dg.AssetExecutionContext, spec: SparkJobSpec) -> SparkJobResult:
        _refuse_secret_env(spec.env)
        home = Path(self.home).resolve()
        run_id = f"local-{uuid.uuid4().hex[:12]}"
        run_dir = home / "spark-jobs" / run_id
        run_dir.mkdir(parents=True)
        for alias, folder in spec.archives.items():
            (run_dir / alias).symlink_to(Path(folder).resolve(), target_is_directory=True)
        output_log, exit_code_file = run_dir / "output.log", run_dir / "exit_code"
        script = Path(spec.script).resolve()
        submit = self.submit_command(spec, run_dir)
        command = [sys.executable, "-c", _TEE, str(output_log), str(exit_code_file), *submit]
        env = {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
               "SPARK_HOME": str(Path(submit[0]).parents[1]),
               "SPARK_CONF_DIR": str(_log4j_conf_dir(home, self.log_level)), "SPARK_LOCAL_IP": "127.0.0.1",
               **spec.env}
        properties = {"master": self.master, "spark_version": _pyspark_version(),
                      "hadoop_version": versions.HADOOP_VERSION,
                      "delta_spark_version": versions.DELTA_VERSION, "log_location": str(output_log),
                      "code_version": _sha256(script)[:16]}
        started = time.monotonic()
        invocation, process_exit_code = run_pipes_subprocess(context, command, env=env, cwd=str(run_dir))
        if process_exit_code != 0:
            exit_code = exit_code_file.read_text().strip() if exit_code_file.exists() else str(process_exit_code)
            properties.update(exit_code=exit_code, duration_s=f"{time.monotonic() - started:.1f}")
            tail = _tail_lines(output_log, OUTPUT_TAIL_LINES)
            raise dg.Failure(
                description=(f"Spark job '{spec.job_name}' failed: spark-submit exited with code {exit_code} "
                             f"(run {run_id}). Last {len(tail)} lines of its output ({output_log}):\n" + "\n".join(tail)),
                metadata={**properties, "run_id": run_id},
            )
        properties.update(exit_code="0", duration_s=f"{time.monotonic() - started:.1f}")
        return SparkJobResult("LocalSparkJobRun", run_id, "SUCCEEDED", properties, _materialize_result(invocation))

    def submit_command(self, spec: SparkJobSpec, run_dir: Optional[Path] = None) -> list[str]:
        """The spark-submit command line (offline: cached jars, never --packages)."""
        home = Path(self.home).resolve()
        try:
            jar_paths = [str(p) for group in self.jar_groups for p in jars.classpath(home, group)]
            if self.s3a:
                jar_paths.append(str(spark_runtime.credentials_provider_jar(home)))
            spark_home = spark_runtime.spark_home(home, s3a=self.s3a)
        except StackError as exc:
            raise dg.Failure(description=f"cannot run Spark locally: {exc}") from None
        conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
                "spark.databricks.delta.snapshotPartitions": str(self.shuffle_partitions), **DELTA_CONF, **self.spark_conf}
        if spec.archives and run_dir is not None and not self.master.startswith("local["):
            shipped = []
            for alias, folder in spec.archives.items():
                (run_dir / f"{alias}.tar.gz").write_bytes(staging.tree_tarball(Path(folder)))
                shipped.append(f"{run_dir / alias}.tar.gz#{alias}")
            conf["spark.archives"] = ",".join(shipped)
        command = [str(spark_runtime.spark_submit(spark_home)), "--master", self.master, "--name", spec.job_name,
                   "--driver-memory", self.driver_memory, "--jars", ",".join(jar_paths)]
        for key, value in conf.items():
            command += ["--conf", f"{key}={value}"]
        if spec.py_files:
            command += ["--py-files", ",".join(str(Path(p).resolve()) for p in spec.py_files)]
        return [*command, str(Path(spec.script).resolve()), *spec.args]


class EmrServerlessResource(SparkJobResource):
    """Amazon EMR Serverless through dagster-aws' Pipes client; Pipes messages come back through CloudWatch Logs."""

    region: str = Field(description="AWS region of the application, bucket and log group.")
    application_id: Optional[str] = Field(default=None, description="Existing application; wins over application_name.")
    application_name: str = Field(default="governed-ft-preprocess", description="Application found (or created) by name.")
    create_application_if_missing: bool = Field(default=False, description="Create the named application when absent.")
    release_label: str = Field(default=versions.EMR_RELEASE_LABEL, description="EMR release (Spark/Delta versions).")
    execution_role_arn: str = Field(description="Job runtime role: its secret, its logs; no data-plane access.")
    code_prefix: str = Field(description="s3://bucket/code/ — script, py-files and jars, keyed by content hash.")
    log_group: str = Field(description="CloudWatch log group of the driver's stdout/stderr (Pipes reads it).")
    log_stream_prefix: str = Field(default="governed-ft", description="CloudWatch log stream name prefix.")
    jars: list[str] = Field(default_factory=lambda: list(versions.EMR_JARS),
                            description="Jars the release lacks, staged by `governed-ft aws stage` (pinned sha256).")
    spark_conf: dict[str, str] = Field(default_factory=lambda: dict(DELTA_CONF), description="--conf pairs of every run.")
    python_env: str = Field(default="staged", description=(
        "'staged': the packed environment of the installed recipe under code_prefix; or an s3:// URI of one."))
    execution_timeout_minutes: int = Field(default=120, description="EMR kills the run after this.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags of every job run.")
    endpoint_url: Optional[str] = Field(default=None, description="AWS endpoint for every service (tests only).")
    endpoint_urls: dict[str, str] = Field(default_factory=dict, description="Per-service endpoints (tests only).")
    poll_interval_s: float = Field(default=10.0, description="Seconds between GetJobRun polls.")
    _application: Optional[str] = PrivateAttr(default=None)

    def boto_client(self, service: str):
        import boto3

        return boto3.client(service, region_name=self.region,
                            endpoint_url=self.endpoint_urls.get(service, self.endpoint_url))

    def run(self, context: dg.AssetExecutionContext, spec: SparkJobSpec) -> SparkJobResult:
        _refuse_secret_env(spec.env)
        emr, logs = self.boto_client("emr-serverless"), self.boto_client("logs")
        application_id = self.resolve_application(emr)
        request = self.start_job_run_request(spec, application_id)
        pipes_client = _EMRServerlessPipesClient(
            client=emr, message_reader=PipesCloudWatchMessageReader(client=logs), poll_interval=self.poll_interval_s)
        invocation = pipes_client.run(context=context, start_job_run_params=request)
        job_run = pipes_client.final_response["jobRun"]
        properties = self._properties(job_run, request)
        if job_run["state"] != "SUCCESS":
            stream = properties["log_stream"]
            # The Python driver's stderr (tracebacks) is merged into the driver JVM's stdout by Spark's PythonRunner.
            tails = [(output, _cloudwatch_tail(logs, self.log_group, f"{stream}/{output}", OUTPUT_TAIL_LINES))
                     for output in ("stdout", "stderr")]
            raise dg.Failure(
                description=(
                    f"EMR Serverless job run {job_run['jobRunId']} ({spec.job_name}) ended in state {job_run['state']}: "
                    f"{(job_run.get('stateDetails') or 'no state details').rstrip('. ')}. Driver logs: CloudWatch log group "
                    f"{self.log_group}, streams {stream}/stdout and {stream}/stderr. "
                    f"Console: {properties['console_url']}"
                    + "".join(f"\nLast {len(lines)} lines of the driver's {output}:\n" + "\n".join(lines)
                              for output, lines in tails if lines)),
                metadata=properties,
            ) from None
        return SparkJobResult("EMRServerlessJobRun", job_run["jobRunId"], job_run["state"], properties,
                              _materialize_result(invocation))

    def resolve_application(self, emr) -> str:
        """The configured application id, or the id of the application with the configured name (created if allowed)."""
        if self.application_id:
            return self.application_id
        if self._application:
            return self._application
        for page in emr.get_paginator("list_applications").paginate():
            for app in page["applications"]:
                if app["name"] == self.application_name and app["state"] not in ("TERMINATING", "TERMINATED"):
                    if app["releaseLabel"] != self.release_label:
                        raise dg.Failure(description=(
                            f"EMR Serverless application {self.application_name} ({app['id']}) runs {app['releaseLabel']}, "
                            f"but the job is pinned to {self.release_label}; upgrade the application or set release_label"))
                    self._application = app["id"]
                    return app["id"]
        if not self.create_application_if_missing:
            raise dg.Failure(description=(
                f"no EMR Serverless application named {self.application_name} in {self.region}; create it with "
                f"`governed-ft aws apply`, set application_id, or set create_application_if_missing=true"))
        created = emr.create_application(name=self.application_name, releaseLabel=self.release_label, type="SPARK",
                                         tags={"governed-ft": "true"})
        self._application = created["applicationId"]
        return self._application

    def start_job_run_request(self, spec: SparkJobSpec, application_id: str) -> dict[str, Any]:
        """The StartJobRun request before dagster-aws adds its tags and the Pipes context; staged URIs only."""
        prefix = staging.CodePrefix(self.boto_client("s3"), self.code_prefix)
        try:
            entry_point = prefix.file(staging.KIND_SCRIPT, Path(spec.script), f"job script {Path(spec.script).name}")
            py_files = [prefix.file(staging.KIND_WHEEL, Path(p), f"Python code {Path(p).name}") for p in spec.py_files]
            jars = [prefix.require(staging.jar_uri(self.code_prefix, name), f"jar {name}") for name in self.jars]
            jars.append(prefix.require(staging.provider_jar_uri(self.code_prefix), "the S3A credentials provider jar"))
            env = (prefix.require(staging.env_uri(self.code_prefix), "the EMR Python environment")
                   if self.python_env == "staged" else self.python_env)
            archives = {staging.ENV_ALIAS: env}
            for alias, folder in spec.archives.items():
                archives[alias] = prefix.tree(staging.KIND_TOKENIZER if alias == staging.TOKENIZER_ALIAS else alias,
                                              Path(folder), f"{alias}.tar.gz")
            parameters = staging.spark_submit_parameters(self.spark_conf, jars=jars, py_files=py_files,
                                                         archives=archives, env=spec.env)
        except (staging.NotStaged, ValueError) as exc:
            raise dg.Failure(description=f"EMR Serverless job {spec.job_name} cannot start: {exc}") from None
        return {
            "applicationId": application_id,
            "executionRoleArn": self.execution_role_arn,
            "name": spec.job_name,
            "jobDriver": {"sparkSubmit": {"entryPoint": entry_point, "entryPointArguments": list(spec.args),
                                          "sparkSubmitParameters": parameters}},
            "configurationOverrides": {"monitoringConfiguration": {"cloudWatchLoggingConfiguration": {
                "enabled": True, "logGroupName": self.log_group, "logStreamNamePrefix": self.log_stream_prefix}}},
            "tags": {"governed-ft": "true", "governed-ft/job": spec.job_name, **self.tags},
            "executionTimeoutMinutes": self.execution_timeout_minutes,
        }

    def _properties(self, job_run: dict, request: dict) -> dict[str, str]:
        app, run = job_run["applicationId"], job_run["jobRunId"]
        stream = driver_log_stream(app, run, job_run.get("attempt"), self.log_stream_prefix)
        billed = job_run.get("billedResourceUtilization") or {}
        properties = {
            "application_id": app, "job_run_id": run, "job_run_arn": job_run.get("arn", ""),
            "release_label": job_run.get("releaseLabel", self.release_label), "state": job_run["state"],
            "log_group": self.log_group, "log_stream": stream, "console_url": console_url(self.region, app, run),
            "entry_point": request["jobDriver"]["sparkSubmit"]["entryPoint"],
            "config_hash": hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16],
        }
        if job_run.get("totalExecutionDurationSeconds") is not None:
            properties["duration_s"] = str(job_run["totalExecutionDurationSeconds"])
        for key, value in billed.items():
            properties[f"billed_{key}"] = str(value)
        return properties


def driver_log_stream(application_id: str, job_run_id: str, attempt: Optional[int], prefix: Optional[str],
                      worker_type: str = "SPARK_DRIVER") -> str:
    """CloudWatch stream of the driver (without /stdout or /stderr), named as dagster-aws and EMR Serverless name it."""
    stream = f"/applications/{application_id}/jobs/{job_run_id}"
    if attempt is not None and attempt > 1:
        stream += f"/attempts/{attempt}"
    return f"{prefix or ''}{stream}/{worker_type}"


def console_url(region: str, application_id: str, job_run_id: str) -> str:
    return (f"https://{region}.console.aws.amazon.com/emr/home?region={region}"
            f"#/serverless-applications/{application_id}/job-runs/{job_run_id}")


def _materialize_result(invocation) -> Optional[dg.MaterializeResult]:
    reported = [r for r in invocation.get_results(implicit_materializations=False) if isinstance(r, dg.MaterializeResult)]
    return invocation.get_materialize_result(implicit_materialization=False) if len(reported) == 1 else None


def _refuse_secret_env(env: dict[str, str]) -> None:
    secretish = sorted(k for k in env if _SECRETISH.search(k))
    if secretish:
        raise dg.Failure(description=(f"SparkJobSpec.env is for non-secret settings; {', '.join(secretish)} look like "
                                      f"secrets: let the job read them from its secret store"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pyspark_version() -> str:
    import pyspark

    return pyspark.__version__


def _tail_lines(path: Path, n: int) -> list[str]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line.rstrip("\n") for line in deque((line for line in handle if line.strip()), maxlen=n)]


def _log4j_conf_dir(home: Path, level: str) -> Path:
    conf_dir = home / "spark-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "log4j2.properties").write_text(
        f"rootLogger.level = {level.lower()}\n"
        "rootLogger.appenderRef.stderr.ref = console\n"
        "appender.console.type = Console\n"
        "appender.console.name = console\n"
        "appender.console.target = SYSTEM_ERR\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex\n"
    )
    return conf_dir


def _cloudwatch_tail(logs, group: str, stream: str, n: int) -> list[str]:
    """Last non-Pipes lines of a log stream, or none when it cannot be read (the Failure must not fail)."""
    try:
        events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=False, limit=4 * n)["events"]
    except Exception:
        return []
    lines = [line for event in events for line in event.get("message", "").splitlines() if line.strip()]
    return [line for line in lines if not _is_pipes_message(line)][-n:]


def _is_pipes_message(line: str) -> bool:
    try:
        return PIPES_PROTOCOL_VERSION_FIELD in json.loads(line)
    except (ValueError, TypeError):
        return False


# spark-submit's output goes on to Dagster's compute log and into one file whose tail explains a failure. Both streams:
# Spark's PythonRunner merges the Python driver's stderr into the JVM's stdout, so a script's traceback lands there.
_TEE = """
import signal, subprocess, sys, threading
log_path, exit_code_path, command = sys.argv[1], sys.argv[2], sys.argv[3:]
child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda signum, frame: child.send_signal(signum))
lock = threading.Lock()
def pump(source, target, log):
    for line in source:
        with lock:
            target.write(line)
            target.flush()
            log.write(line)
with open(log_path, "wb") as log:
    pumps = [threading.Thread(target=pump, args=(child.stdout, sys.stdout.buffer, log)),
             threading.Thread(target=pump, args=(child.stderr, sys.stderr.buffer, log))]
    for thread in pumps:
        thread.start()
    for thread in pumps:
        thread.join()
code = child.wait()
with open(exit_code_path, "w") as handle:
    handle.write(str(code))
sys.exit(code if 0 <= code < 256 else 1)
"""


class _DrainingCloudWatchLogReader(dg.PipesLogReader):
    """Forwards a stream's non-Pipes lines until the Pipes session is closed and the stream is drained."""

    def __init__(self, *, client: Any, log_group: str, log_stream: str, target_stream: IO[str], start_time: int,
                 debug_info: str, join_timeout_s: float = 30.0):
        self.client, self.log_group, self.log_stream = client, log_group, log_stream
        self.target_stream, self.start_time, self._debug_info = target_stream, start_time, debug_info
        self.join_timeout_s = join_timeout_s
        self.thread: Optional[threading.Thread] = None

    @property
    def name(self) -> str:
        return f"CloudWatch log stream {self.log_group}:{self.log_stream}"

    @property
    def debug_info(self) -> Optional[str]:
        return self._debug_info

    def target_is_readable(self, params: Mapping[str, Any]) -> bool:
        try:
            response = self.client.describe_log_streams(logGroupName=self.log_group,
                                                        logStreamNamePrefix=self.log_stream)
        except self.client.exceptions.ResourceNotFoundException:
            return False
        return bool(response.get("logStreams"))

    def start(self, params: Mapping[str, Any], is_session_closed: threading.Event) -> None:
        self.thread = threading.Thread(target=self._drain, args=(is_session_closed,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=self.join_timeout_s)

    def is_running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _drain(self, is_session_closed: threading.Event) -> None:
        request: dict[str, Any] = {"logGroupName": self.log_group, "logStreamName": self.log_stream,
                                   "startFromHead": True, "startTime": self.start_time}
        while True:
            response = get_log_events(client=self.client, **request)
            for event in response.get("events", []):
                for line in event.get("message", "").splitlines():
                    if line and not _is_pipes_message(line):
                        self.target_stream.write(line + "\n")
            drained = not response.get("events")
            request["nextToken"] = response["nextForwardToken"]
            if drained:
                if is_session_closed.is_set():
                    return
                is_session_closed.wait(1.0)


class _EMRServerlessPipesClient(dg.PipesClient):
    """Runs one EMR Serverless job run in a Pipes session: context through driver env, messages through CloudWatch.

    Written on the public Pipes API because dagster-aws' PipesEMRServerlessClient raises on a FAILED run before its
    logs are read (so no reason can be given), logs the pre-authenticated Spark UI dashboard URL, compares the
    application type case-sensitively and tails log streams forever; it has no public hook to change any of these.
    """

    def __init__(self, client: Any, message_reader: PipesCloudWatchMessageReader, poll_interval: float,
                 forward_termination: bool = True):
        self.client, self.message_reader = client, message_reader
        self.poll_interval, self.forward_termination = poll_interval, forward_termination
        self.final_response: dict = {}

    def run(self, *, context: dg.AssetExecutionContext,  # type: ignore[override]
            start_job_run_params: Mapping[str, Any], extras: Optional[dict[str, Any]] = None) -> dg.PipesClientCompletedInvocation:
        """Start the job run, wait for its end state (returned in final_response, not raised), read its messages."""
        params = copy.deepcopy(dict(start_job_run_params))
        with dg.open_pipes_session(context=context, message_reader=self.message_reader,
                                   context_injector=dg.PipesEnvContextInjector(), extras=extras) as session:
            params["tags"] = {**params.get("tags", {}), **session.default_remote_invocation_info}
            submit = params.setdefault("jobDriver", {}).setdefault("sparkSubmit", {})
            submit["sparkSubmitParameters"] = submit.get("sparkSubmitParameters", "") + "".join(
                f" --conf spark.emr-serverless.driverEnv.{key}={value}"
                for key, value in session.get_bootstrap_env_vars().items())
            started = self.client.start_job_run(**params)
            context.log.info(f"[pipes] EMR Serverless job run {started['jobRunId']} started")
            try:
                self.final_response = self._wait_for_end(context, started)
            except dg.DagsterExecutionInterruptedError:
                if self.forward_termination:
                    context.log.warning(
                        f"[pipes] run interrupted: cancelling EMR Serverless job run {started['jobRunId']}")
                    self.client.cancel_job_run(applicationId=started["applicationId"], jobRunId=started["jobRunId"])
                raise
            self._read_messages(context, session, self.final_response["jobRun"])
        return dg.PipesClientCompletedInvocation(session)

    def _wait_for_end(self, context: dg.AssetExecutionContext, started: Mapping[str, Any]) -> dict:
        while True:
            response = self.client.get_job_run(applicationId=started["applicationId"], jobRunId=started["jobRunId"])
            if response["jobRun"]["state"] in ("SUCCESS", "FAILED", "CANCELLED"):
                context.log.info(f"[pipes] EMR Serverless job run {started['jobRunId']} ended in state "
                                 f"{response['jobRun']['state']}")
                return response
            time.sleep(self.poll_interval)

    def _read_messages(self, context: dg.AssetExecutionContext, session: dg.PipesSession, job_run: dict) -> None:
        application = self.client.get_application(applicationId=job_run["applicationId"])["application"]
        monitoring = _deep_merge(application.get("monitoringConfiguration", {}),
                                 job_run.get("configurationOverrides", {}).get("monitoringConfiguration", {}))
        cloudwatch = monitoring.get("cloudWatchLoggingConfiguration", {})
        if cloudwatch.get("enabled") is not True:
            context.log.warning("[pipes] CloudWatch logging is off for this job run: no Pipes messages can be read")
            return
        worker_type = "HIVE_DRIVER" if application["type"].upper() == "HIVE" else "SPARK_DRIVER"
        group = cloudwatch.get("logGroupName") or "/aws/emr-serverless"
        stream = driver_log_stream(job_run["applicationId"], job_run["jobRunId"], job_run.get("attempt"),
                                   cloudwatch.get("logStreamNamePrefix"), worker_type)
        log_types = cloudwatch.get("logTypes") or {}
        outputs = [t.lower() for t in log_types.get(worker_type, ["STDOUT", "STDERR"])
                   if t.upper() in ("STDOUT", "STDERR")]
        session.report_launched({"extras": {"log_group": group, "log_stream": f"{stream}/stdout"}})
        for output in outputs:
            reader = _DrainingCloudWatchLogReader(
                client=self.message_reader.client, log_group=group, log_stream=f"{stream}/{output}",
                target_stream=sys.stdout if output == "stdout" else sys.stderr,
                start_time=int(session.created_at.timestamp() * 1000), debug_info=output)
            # A run that failed before its driver started has no streams: do not wait a minute for them.
            if job_run["state"] == "SUCCESS" or reader.target_is_readable({}):
                self.message_reader.add_log_reader(reader)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """base with override's keys set, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        nested = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = _deep_merge(merged[key], value) if nested else value
    return merged
