"""End-to-end time of the README's main command on the embedded default: stopped stack to registered model version.

Packages and jars are set up first and not timed (`governed-ft stack fetch`). Then, in a fresh state folder, the
timed phases are the ones `make demo` runs: `stack up`, `bootstrap`, `run`. The stack is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from governed_ft_dagster.stack.server import free_port_pair

GOAL_S = 300.0
PHASES = (("stack up", ["stack", "up"]), ("bootstrap", ["bootstrap"]), ("run", ["run"]))


def governed_ft(args: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, float, str]:
    """Run one CLI command; its exit code, wall seconds and combined output."""
    command = [str(Path(sys.executable).with_name("governed-ft")), *args]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    return done.returncode, time.monotonic() - started, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, help="state folder to use (default: a fresh temporary one, removed "
                                                  "after a complete run)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per phase")
    options = parser.parse_args(argv)
    home = options.home or Path(tempfile.mkdtemp(prefix="governed-ft-e2e-"))
    env = {**os.environ, "GOVERNED_FT_HOME": str(home), "GOVERNED_FT_DEPLOYMENT": "local"}
    env.setdefault("GOVERNED_FT_UC_PORT", str(free_port_pair()))  # a running demo stack keeps its port
    env.pop("DAGSTER_HOME", None)

    rc, seconds, output = governed_ft(["stack", "fetch"], env, options.timeout)
    print(f"set-up (not timed): stack fetch, {seconds:.0f} s, exit {rc}")
    if rc != 0:
        print(f"end-to-end: not measured: {output.strip().splitlines()[-1] if output.strip() else 'fetch failed'}")
        return 2
    governed_ft(["stack", "down"], env, options.timeout)

    rows: list[tuple[str, float, int]] = []
    try:
        for name, args in PHASES:
            rc, seconds, output = governed_ft(args, env, options.timeout)
            rows.append((name, seconds, rc))
            shown = output.rstrip() if rc else "\n".join(output.rstrip().splitlines()[-3:])  # all of it on failure
            print(f"--- {name}: {seconds:.1f} s, exit {rc}\n{shown}", flush=True)
            if rc != 0:
                break
    finally:
        governed_ft(["stack", "down"], env, options.timeout)

    total = sum(seconds for _, seconds, _ in rows)
    complete = len(rows) == len(PHASES) and all(rc == 0 for *_, rc in rows)
    print("\n| phase | seconds | exit code |\n|---|---|---|")
    for name, seconds, rc in rows:
        print(f"| {name} | {seconds:.1f} | {rc} |")
    verdict = ("under" if total < GOAL_S else "over") + f" the {GOAL_S:.0f} s goal" if complete else "did not finish"
    print(f"| total, stopped stack to registered model version | {total:.1f} | {verdict} |")
    if complete and options.home is None:
        shutil.rmtree(home, ignore_errors=True)
        home = Path(f"{home} (removed)")
    print(f"cores: {os.cpu_count()}, state folder: {home}")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
