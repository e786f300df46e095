"""Dagster Pipes for SageMaker training jobs (dagster-aws has none): context in Environment, messages via CloudWatch."""

import copy
import json
import random
import string
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Optional, Union

import boto3
import dagster as dg
from botocore.exceptions import ClientError
from dagster_aws.pipes import PipesCloudWatchMessageReader
from dagster_aws.pipes.message_readers import get_log_events
from dagster_pipes import PIPES_PROTOCOL_VERSION_FIELD, PipesContextData, PipesDefaultContextLoader, encode_param

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL_STATES = ("Completed", "Failed", "Stopped")
ENVIRONMENT_VALUE_MAX = 512
ENVIRONMENT_MAX_ENTRIES = 100
HYPERPARAMETER_VALUE_MAX = 2500
PIPES_CHANNEL = "dagster_pipes"
PIPES_CONTEXT_PATH = f"/opt/ml/input/data/{PIPES_CHANNEL}/context.json"
_STOP_EXPLANATIONS = {
    "MaxRuntimeExceeded": "it ran past StoppingCondition.MaxRuntimeInSeconds",
    "MaxWaitTimeExceeded": "managed spot training did not finish within StoppingCondition.MaxWaitTimeInSeconds",
    "Stopped": "someone called StopTrainingJob",
}

Context = Union[dg.AssetExecutionContext, dg.OpExecutionContext]
PipesParams = Mapping[str, Any]
LogForwarder = Callable[[str, str], None]


def log_group_link(region: str, job_name: Optional[str] = None) -> str:
    """CloudWatch console link to the training-job log group, filtered to one job's streams when given."""
    link = (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            "#logsV2:log-groups/log-group/$252Faws$252Fsagemaker$252FTrainingJobs")
    return f"{link}$3FlogStreamNameFilter$3D{job_name}" if job_name else link


def job_console_link(region: str, job_name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job_name}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """('bucket', 'key/prefix') of s3://bucket/key/prefix."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def list_streams(client: Any, log_group: str, prefix: str) -> list[str]:
    """Names of the log streams under the prefix, oldest first; none while the group does not exist."""
    names: list[str] = []
    params: dict[str, Any] = {"logGroupName": log_group, "logStreamNamePrefix": prefix}
    try:
        while True:
            response = client.describe_log_streams(**params)
            names.extend(stream["logStreamName"] for stream in response.get("logStreams", []))
            if not response.get("nextToken") or response["nextToken"] == params.get("nextToken"):
                return sorted(names)
            params["nextToken"] = response["nextToken"]
    except client.exceptions.ResourceNotFoundException:
        return []


def read_new_events(client: Any, log_group: str, stream: str, token: Optional[str]) -> tuple[list[str], Optional[str]]:
    """Messages after the token in one stream and the token to continue from (unchanged token = end of stream)."""
    messages: list[str] = []
    while True:
        params: dict[str, Any] = {"logGroupName": log_group, "logStreamName": stream, "startFromHead": True}
        if token:
            params["nextToken"] = token
        response = get_log_events(client=client, **params)
        messages.extend(event.get("message", "") for event in response.get("events", []))
        if not response.get("events") or response.get("nextForwardToken") in (None, token):
            return messages, response.get("nextForwardToken") or token
        token = response["nextForwardToken"]


def is_pipes_message(line: str) -> bool:
    try:
        return PIPES_PROTOCOL_VERSION_FIELD in json.loads(line)
    except (ValueError, TypeError):
        return False


def print_line(host: str, line: str) -> None:
    sys.stdout.write(f"[{host}] {line}\n")


class PipesSageMakerContextInjector(dg.PipesEnvContextInjector):
    """Pipes context in the job's Environment, or in a one-file S3 channel when it exceeds SageMaker's 512 chars."""

    def __init__(self, *, s3_client: Any = None, spill_s3_uri: Optional[str] = None):
        self.s3_client = s3_client
        self.spill_s3_uri = spill_s3_uri.rstrip("/") if spill_s3_uri else None
        self.input_channel: Optional[dict[str, Any]] = None

    @contextmanager
    def inject_context(self, context_data: PipesContextData) -> Iterator[PipesParams]:
        self.input_channel = None
        direct = {PipesDefaultContextLoader.DIRECT_KEY: context_data}
        size = len(encode_param(direct))
        if size <= ENVIRONMENT_VALUE_MAX:
            yield direct
            return
        if not self.spill_s3_uri:
            raise dg.DagsterInvariantViolationError(
                f"The encoded Pipes context is {size} characters; a SageMaker Environment value holds at most "
                f"{ENVIRONMENT_VALUE_MAX}. Give the context injector a spill_s3_uri or pass fewer extras.")
        token = "".join(random.choices(string.ascii_lowercase + string.digits, k=20))
        prefix_uri = f"{self.spill_s3_uri}/{token}/"
        bucket, prefix = split_s3_uri(prefix_uri)
        client = self.s3_client or boto3.client("s3")
        client.put_object(Bucket=bucket, Key=f"{prefix}context.json", Body=json.dumps(context_data).encode())
        self.input_channel = {
            "ChannelName": PIPES_CHANNEL,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": prefix_uri,
                                            "S3DataDistributionType": "FullyReplicated"}},
            "InputMode": "File",
        }
        try:
            yield {PipesDefaultContextLoader.FILE_PATH_KEY: PIPES_CONTEXT_PATH}
        finally:
            self.input_channel = None
            client.delete_object(Bucket=bucket, Key=f"{prefix}context.json")

    def no_messages_debug_text(self) -> str:
        return "Attempted to inject context through the training job's Environment (DAGSTER_PIPES_CONTEXT)."


# CloudWatch rather than S3: SageMaker already ships the container's stdout there, so the script's default
# open_dagster_pipes() writer works unchanged and the job's role needs no write access to any bucket for messages.
class PipesSageMakerMessageReader(PipesCloudWatchMessageReader):
    """Reads Pipes messages from every CloudWatch stream under the prefix ``{job}/algo-1-`` (spot restarts too)."""

    def __init__(self, client: Any = None, log_group: str = LOG_GROUP, interval: float = 10.0,
                 log_readers: Optional[list[dg.PipesLogReader]] = None):
        super().__init__(client=client, log_group=log_group, log_readers=log_readers)
        self.interval = interval

    def messages_are_readable(self, params: PipesParams) -> bool:
        if self.log_group is None or self.log_stream is None:
            return False
        return bool(list_streams(self.client, self.log_group, self.log_stream))

    def download_messages(self, cursor: Optional[dict[str, Optional[str]]],
                          params: PipesParams) -> Optional[tuple[dict[str, Optional[str]], str]]:
        group, prefix = str(self.log_group), str(self.log_stream)
        tokens = dict(cursor or {})
        lines: list[str] = []
        for stream in list_streams(self.client, group, prefix):
            messages, tokens[stream] = read_new_events(self.client, group, stream, tokens.get(stream))
            lines.extend(messages)
        return (tokens, "\n".join(lines)) if lines else None

    def no_messages_debug_text(self) -> str:
        return (f"Attempted to read messages from CloudWatch log group {self.log_group}, streams {self.log_stream}*: "
                "the training script must call open_dagster_pipes() and leave stdout to SageMaker.")


class PipesSageMakerLogReader(dg.PipesLogReader):
    """Forwards the non-Pipes lines of every host's CloudWatch stream of a training job to a callback."""

    def __init__(self, *, client: Any, job_name: str, forward: LogForwarder = print_line,
                 log_group: str = LOG_GROUP, interval: float = 5.0, join_timeout_s: float = 60.0):
        self.client = client
        self.job_name = job_name
        self.forward = forward
        self.log_group = log_group
        self.interval = interval
        self.join_timeout_s = join_timeout_s
        self._tokens: dict[str, Optional[str]] = {}
        self._thread: Optional[threading.Thread] = None

    @property
    def name(self) -> str:
        return f"PipesSageMakerLogReader({self.log_group}:{self.job_name}/*)"

    def target_is_readable(self, params: PipesParams) -> bool:
        return bool(list_streams(self.client, self.log_group, f"{self.job_name}/"))

    def start(self, params: PipesParams, is_session_closed: threading.Event) -> None:
        self._thread = threading.Thread(target=self._tail, args=(is_session_closed,), daemon=True,
                                        name=f"sagemaker-logs-{self.job_name}")
        self._thread.start()

    def _tail(self, is_session_closed: threading.Event) -> None:
        try:
            while True:
                final = is_session_closed.is_set()
                self.poll()
                if final:
                    return
                is_session_closed.wait(self.interval)
        except Exception as exc:  # a broken log tail must not fail the job it watches
            self.forward("pipes", f"stopped reading CloudWatch logs of {self.job_name}: {exc}")

    def poll(self) -> None:
        for stream in list_streams(self.client, self.log_group, f"{self.job_name}/"):
            host = stream[len(self.job_name) + 1:].rsplit("-", 1)[0]
            messages, self._tokens[stream] = read_new_events(self.client, self.log_group, stream,
                                                             self._tokens.get(stream))
            for message in messages:
                for line in message.splitlines():
                    if line.strip() and not is_pipes_message(line):
                        self.forward(host, line)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=self.join_timeout_s)

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def validate_request(params: Mapping[str, Any], reserved_environment: int = 0) -> None:
    """Refuse, before anything is paid for, a request SageMaker would refuse for its map limits."""
    environment = params.get("Environment") or {}
    problems = [f"Environment[{key}] is {len(value)} characters (max {ENVIRONMENT_VALUE_MAX})"
                for key, value in environment.items() if len(value) > ENVIRONMENT_VALUE_MAX]
    if len(environment) + reserved_environment > ENVIRONMENT_MAX_ENTRIES:
        problems.append(f"Environment has {len(environment)} entries and Pipes needs {reserved_environment} "
                        f"(max {ENVIRONMENT_MAX_ENTRIES})")
    problems += [f"HyperParameters[{key}] is {len(value)} characters (max {HYPERPARAMETER_VALUE_MAX})"
                 for key, value in (params.get("HyperParameters") or {}).items()
                 if len(value) > HYPERPARAMETER_VALUE_MAX]
    if problems:
        raise dg.DagsterInvariantViolationError(
            f"CreateTrainingJob request for {params.get('TrainingJobName')} exceeds SageMaker's limits: "
            + "; ".join(problems))


def training_job_failure(response: Mapping[str, Any], region: str) -> dg.Failure:
    """The Failure for a job that ended Failed or Stopped: reason, secondary status and links, no stack trace."""
    name, status = response["TrainingJobName"], response["TrainingJobStatus"]
    secondary = response.get("SecondaryStatus", "")
    reason = response.get("FailureReason") or _STOP_EXPLANATIONS.get(secondary, "no FailureReason given")
    last_message = ((response.get("SecondaryStatusTransitions") or [{}])[-1]).get("StatusMessage")
    lines = [f"SageMaker training job {name} ended {status} (secondary status {secondary}): {reason}"]
    if last_message and last_message not in reason:
        lines.append(f"Last status message: {last_message}")
    lines += [f"Logs: {log_group_link(region, name)}", f"Job: {job_console_link(region, name)}"]
    return dg.Failure(
        description="\n".join(lines),
        metadata={
            "training_job_name": name,
            "training_job_status": status,
            "secondary_status": secondary,
            "failure_reason": reason,
            "logs": dg.MetadataValue.url(log_group_link(region, name)),
            "job": dg.MetadataValue.url(job_console_link(region, name)),
        },
    )


class PipesSageMakerClient(dg.PipesClient):
    """A Pipes client that runs a SageMaker training job; forward_logs(host, line) gets its log lines (None: off)."""

    def __init__(
        self,
        client: Any = None,
        context_injector: Optional[dg.PipesContextInjector] = None,
        message_reader: Optional[dg.PipesMessageReader] = None,
        logs_client: Any = None,
        poll_interval: float = 30.0,
        forward_termination: bool = True,
        forward_logs: Optional[LogForwarder] = print_line,
    ):
        self._client = client or boto3.client("sagemaker")
        self._context_injector = context_injector or PipesSageMakerContextInjector()
        self._message_reader = message_reader or PipesSageMakerMessageReader(client=logs_client)
        self._logs_client = logs_client or getattr(self._message_reader, "client", None) or boto3.client("logs")
        self.poll_interval = poll_interval
        self.forward_termination = forward_termination
        self.forward_logs = forward_logs

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    @property
    def region(self) -> str:
        return self._client.meta.region_name

    def run(  # type: ignore[override]
        self,
        *,
        context: Context,
        create_training_job_params: Mapping[str, Any],
        extras: Optional[dict[str, Any]] = None,
    ) -> dg.PipesClientCompletedInvocation:
        """Create the training job with the Pipes bootstrap in its Environment, wait for it, read its messages."""
        params = copy.deepcopy(dict(create_training_job_params))
        job_name = params["TrainingJobName"]
        validate_request(params, reserved_environment=2)
        with dg.open_pipes_session(context=context, message_reader=self._message_reader,
                                context_injector=self._context_injector, extras=extras) as session:
            params["Environment"] = {**(params.get("Environment") or {}), **session.get_bootstrap_env_vars()}
            channel = getattr(self._context_injector, "input_channel", None)
            if channel:
                params["InputDataConfig"] = [*(params.get("InputDataConfig") or []), channel]
            params["Tags"] = _merge_tags(params.get("Tags") or [], session.default_remote_invocation_info)
            validate_request(params)
            self._create(context, params)
            try:
                response = self._wait(context, session, job_name)
            except (dg.DagsterExecutionInterruptedError, Exception) as exc:
                # a job nobody watches any more still bills; stop it whether the run was interrupted or broke
                stopped = self.forward_termination and self._stop(context, job_name)
                if isinstance(exc, ClientError):
                    error = exc.response.get("Error", {})
                    raise dg.Failure(description=(
                        f"Lost track of SageMaker training job {job_name}: {error.get('Code')}: {error.get('Message')}"
                        f"; {'stopped it' if stopped else 'it may still be running'}.\n"
                        f"Job: {job_console_link(self.region, job_name)}")) from None
                raise
            if response["TrainingJobStatus"] != "Completed":
                raise training_job_failure(response, self.region)
        return dg.PipesClientCompletedInvocation(session, metadata=self._metadata(response))

    def _create(self, context: Context, params: dict[str, Any]) -> str:
        name = params["TrainingJobName"]
        try:
            arn = self._client.create_training_job(**params)["TrainingJobArn"]
        except ClientError as err:
            error = err.response.get("Error", {})
            raise dg.Failure(description=f"SageMaker refused to create training job {name}: "
                                         f"{error.get('Code')}: {error.get('Message')}") from None
        context.log.info(f"[pipes] SageMaker training job {name} created ({arn}); "
                         f"job: {job_console_link(self.region, name)}")
        return arn

    def _wait(self, context: Context, session: Any, job_name: str) -> Mapping[str, Any]:
        last: Optional[tuple[str, str]] = None
        launched = False
        while True:
            response = self._client.describe_training_job(TrainingJobName=job_name)
            state = (response["TrainingJobStatus"], response.get("SecondaryStatus", ""))
            if state != last:
                message = ((response.get("SecondaryStatusTransitions") or [{}])[-1]).get("StatusMessage")
                context.log.info(f"[pipes] SageMaker training job {job_name}: {state[0]} / {state[1]}"
                                 + (f": {message}" if message else ""))
                last = state
            if not launched and list_streams(self._logs_client, LOG_GROUP, f"{job_name}/"):
                self._attach_logs(context, session, job_name)
                launched = True
            if state[0] in TERMINAL_STATES:
                return response
            time.sleep(self.poll_interval)

    def _attach_logs(self, context: Context, session: Any, job_name: str) -> None:
        if isinstance(self._message_reader, PipesCloudWatchMessageReader):
            session.report_launched({"extras": {"log_group": LOG_GROUP, "log_stream": f"{job_name}/algo-1-"}})
        # Readers that run log readers have add_log_reader; their base, PipesThreadedMessageReader, is not exported.
        add_log_reader = getattr(self._message_reader, "add_log_reader", None)
        if self.forward_logs is not None and add_log_reader is not None:
            add_log_reader(PipesSageMakerLogReader(
                client=self._logs_client, job_name=job_name, forward=self.forward_logs,
                interval=min(self.poll_interval, 10.0)))
        context.log.info(f"[pipes] reading CloudWatch logs of {job_name}: {log_group_link(self.region, job_name)}")

    def _stop(self, context: Context, job_name: str) -> bool:
        context.log.warning(f"[pipes] no longer watching SageMaker training job {job_name}: stopping it")
        try:
            self._client.stop_training_job(TrainingJobName=job_name)
        except ClientError as err:
            context.log.warning(f"[pipes] could not stop SageMaker training job {job_name}: {err}")
            return False
        return True

    def _metadata(self, response: Mapping[str, Any]) -> dict[str, Any]:
        name = response["TrainingJobName"]
        metadata: dict[str, Any] = {
            "sagemaker_training_job": name,
            "sagemaker_training_job_arn": response.get("TrainingJobArn", ""),
            "sagemaker_training_job_url": dg.MetadataValue.url(job_console_link(self.region, name)),
            "sagemaker_logs_url": dg.MetadataValue.url(log_group_link(self.region, name)),
        }
        if artifacts := (response.get("ModelArtifacts") or {}).get("S3ModelArtifacts"):
            metadata["sagemaker_model_artifacts"] = dg.MetadataValue.path(artifacts)
        if "BillableTimeInSeconds" in response:
            metadata["sagemaker_billable_seconds"] = response["BillableTimeInSeconds"]
        return metadata


def _merge_tags(tags: list[dict[str, str]], extra: Mapping[str, str]) -> list[dict[str, str]]:
    """Tags plus Dagster's run tags, with values reduced to the characters SageMaker accepts in a tag."""
    keys = {tag["Key"] for tag in tags}
    allowed = set(string.ascii_letters + string.digits + " _.:/=+-@")
    merged = list(tags)
    for key, value in extra.items():
        if key not in keys:
            merged.append({"Key": key[:128], "Value": "".join(c if c in allowed else "_" for c in value)[:256]})
    return merged
