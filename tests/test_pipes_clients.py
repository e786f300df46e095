"""The Pipes clients written on Dagster's public Pipes API: what they do when the run is interrupted."""

import os
import sys
import time

import dagster as dg
import pytest
from dagster_aws.pipes import PipesCloudWatchMessageReader

from governed_ft_dagster.defs.resources.pipes_subprocess import run_pipes_subprocess
from governed_ft_dagster.defs.resources.spark_jobs import _deep_merge, _EMRServerlessPipesClient


class _InterruptedEmr:
    """EMR Serverless whose GetJobRun is interrupted the way Dagster interrupts a step (terminate, SIGINT)."""

    def __init__(self):
        self.started: list[dict] = []
        self.cancelled: list[tuple[str, str]] = []

    def start_job_run(self, **params):
        self.started.append(params)
        return {"applicationId": "00app", "jobRunId": "00run"}

    def get_job_run(self, **_):
        raise dg.DagsterExecutionInterruptedError()

    def cancel_job_run(self, applicationId, jobRunId):  # noqa: N803 (boto3's parameter names)
        self.cancelled.append((applicationId, jobRunId))


def test_an_interrupted_emr_run_is_cancelled_and_the_interruption_raised():
    emr = _InterruptedEmr()

    @dg.asset
    def curated(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        client = _EMRServerlessPipesClient(client=emr, message_reader=PipesCloudWatchMessageReader(client=object()),
                                           poll_interval=0.01)
        with pytest.raises(dg.DagsterExecutionInterruptedError):
            client.run(context=context, start_job_run_params={"applicationId": "00app", "tags": {"a": "b"},
                                                              "jobDriver": {"sparkSubmit": {"entryPoint": "s3://x"}}})
        return dg.MaterializeResult()

    assert dg.materialize([curated]).success
    assert emr.cancelled == [("00app", "00run")]
    submit = emr.started[0]["jobDriver"]["sparkSubmit"]
    assert " --conf spark.emr-serverless.driverEnv.DAGSTER_PIPES_CONTEXT=" in submit["sparkSubmitParameters"]
    assert emr.started[0]["tags"]["a"] == "b" and "dagster/run-id" in emr.started[0]["tags"]


def test_an_interrupted_local_process_is_stopped(tmp_path):
    pid_file = tmp_path / "pid"
    script = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(60)"

    @dg.asset
    def job(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        import signal

        def interrupt(*_):
            raise dg.DagsterExecutionInterruptedError()

        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        try:
            with pytest.raises(dg.DagsterExecutionInterruptedError):
                run_pipes_subprocess(context, [sys.executable, "-c", script], env={}, cwd=str(tmp_path))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return dg.MaterializeResult()

    began = time.monotonic()
    assert dg.materialize([job]).success
    assert time.monotonic() - began < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_a_job_run_override_merges_into_the_application_monitoring_configuration():
    application = {"cloudWatchLoggingConfiguration": {"enabled": True, "logGroupName": "/app"}, "s3": {"uri": "s3://a"}}
    job_run = {"cloudWatchLoggingConfiguration": {"logGroupName": "/job"}}
    assert _deep_merge(application, job_run) == {
        "cloudWatchLoggingConfiguration": {"enabled": True, "logGroupName": "/job"}, "s3": {"uri": "s3://a"}}
