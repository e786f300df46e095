"""Process groups are always ended: a child that ignores SIGTERM, and the processes it started, are killed."""

import os
import subprocess
import sys
import time

from governed_ft_dagster.processes import end_group, with_default_signals

STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_a_group_that_ignores_sigterm_is_killed_with_its_children():
    process = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    grandchild = int(process.stdout.readline())
    started = time.monotonic()
    assert end_group(process, grace_s=1) == "killed after 1 s"
    assert time.monotonic() - started < 15
    assert process.returncode is not None
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(grandchild)


def test_a_group_that_exits_on_sigterm_is_reported_terminated():
    # At SIGTERM's default whatever this process ignores (an xdist worker's Dagster runs point SIGTERM at an ignored
    # SIGINT), and signalled only once the command itself runs.
    sleeper = [sys.executable, "-c", "print('ready', flush=True); import time; time.sleep(600)"]
    process = subprocess.Popen(with_default_signals(sleeper), start_new_session=True, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "ready"
    assert end_group(process, grace_s=10) == "terminated"
    process.stdout.close()


# A parent that ignores SIGINT and SIGTERM, as a background job does once Dagster maps SIGTERM to SIGINT's handler.
IGNORING_PARENT = """
import signal, subprocess, sys, time
from governed_ft_dagster.processes import end_group, with_default_signals
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
for command in (sleeper, with_default_signals(sleeper)):
    child = subprocess.Popen(command, start_new_session=True)
    time.sleep(1.0)
    print(end_group(child, grace_s=3), flush=True)
"""


def test_children_started_with_default_signals_end_on_sigterm_even_when_the_parent_ignores_it():
    done = subprocess.run([sys.executable, "-c", IGNORING_PARENT], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["killed after 3 s", "terminated"], done.stdout + done.stderr


def test_default_signals_keep_the_pid():
    process = subprocess.Popen(with_default_signals([sys.executable, "-c", "import os; print(os.getpid())"]),
                               stdout=subprocess.PIPE, text=True)
    assert int(process.communicate(timeout=30)[0]) == process.pid
