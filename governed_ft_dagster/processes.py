"""Child process groups that are always ended: terminate the group, wait, then kill (no Dagster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Sequence

# Ignored signals survive exec: a shell's background job ignores SIGINT, and Dagster points SIGTERM at SIGINT's
# handler, so a JVM or `dagster dev` started from such a process would ignore the SIGTERM meant to end it.
_DEFAULT_SIGNALS = ("import os, signal, sys\n"
                    "for sig in (signal.SIGINT, signal.SIGTERM):\n"
                    "    signal.signal(sig, signal.SIG_DFL)\n"
                    "os.execvp(sys.argv[1], sys.argv[1:])")


def with_default_signals(command: Sequence[str]) -> list[str]:
    """The command, started with SIGINT and SIGTERM at their defaults whatever this process ignores (same pid)."""
    return [sys.executable, "-c", _DEFAULT_SIGNALS, *command]


def end_group(process: subprocess.Popen, grace_s: float = 20.0) -> str:
    """End a process started with start_new_session=True and everything it started; say how it ended."""
    if process.poll() is not None:
        _kill_group(process)  # the leader is gone; what it started may not be
        return "already exited"
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
        outcome = "terminated"
    except subprocess.TimeoutExpired:
        outcome = f"killed after {grace_s:.0f} s"
    _kill_group(process)
    return outcome


def _kill_group(process: subprocess.Popen) -> None:
    pgid = process.pid
    _signal_group(pgid, signal.SIGKILL)
    process.wait()  # an unreaped leader would keep the group alive
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
