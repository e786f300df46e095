"""A local process in a Dagster Pipes session whose exit code is returned, not raised as a private Dagster error."""

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import dagster as dg

Context = Union[dg.AssetExecutionContext, dg.OpExecutionContext]
TERMINATION_TIMEOUT_S = 20.0


def run_pipes_subprocess(context: Context, command: Sequence[str], *, env: Mapping[str, str], cwd: str,
                         extras: Optional[dict[str, Any]] = None) -> tuple[dg.PipesClientCompletedInvocation, int]:
    """Run the command with the Pipes bootstrap in its environment; return what it reported and its exit code."""
    with dg.open_pipes_session(context=context, context_injector=dg.PipesTempFileContextInjector(),
                               message_reader=dg.PipesTempFileMessageReader(), extras=extras) as session:
        process = subprocess.Popen(list(command), cwd=cwd,
                                   env={**os.environ, **env, **session.get_bootstrap_env_vars()})
        try:
            exit_code = process.wait()
        except dg.DagsterExecutionInterruptedError:
            context.log.warning(f"[pipes] run interrupted: stopping process {process.pid}")
            _stop(process)
            raise
    return dg.PipesClientCompletedInvocation(session), exit_code


def _stop(process: subprocess.Popen) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        process.send_signal(sig)
        try:
            process.wait(timeout=TERMINATION_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue
    process.kill()
