"""End-to-end time of the README's main command on the embedded default: stopped stack to registered model version.

Packages and jars are set up first and not timed (`governed-ft stack fetch`). Then, in a fresh state folder, the
timed phases are the ones `make demo` runs: `stack up`, `bootstrap`, `run`, with `run` broken down into its raw
partitions, the curated, training and registration steps (from the timings file `run` writes next to its log), and
the rest (imports, definitions, Dagster's own work). The same three commands once more are the no-change re-run.
The stack is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from governed_ft_dagster.stack.server import free_port_pair

GOAL_S = 180.0
RERUN_GOAL_S = 20.0
COMMANDS = (("stack up", ["stack", "up"]), ("bootstrap", ["bootstrap"]), ("run", ["run"]))
STEPS = (("curated (Spark job)", "step curated_training_table"), ("training (LoRA job)", "step finetuned_lora_model"),
         ("registration + lineage", "step uc_model_version"))


def governed_ft(args: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, float, str]:
    """Run one CLI command; its exit code, wall seconds and combined output."""
    command = [str(Path(sys.executable).with_name("governed-ft")), *args]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    return done.returncode, time.monotonic() - started, done.stdout + done.stderr


def demo(env: dict[str, str], timeout_s: float) -> tuple[list[tuple[str, float]], bool]:
    """`make demo`'s commands, timed; `run` split into its phases. Rows and whether every command succeeded."""
    rows: list[tuple[str, float]] = []
    for name, args in COMMANDS:
        rc, seconds, output = governed_ft(args, env, timeout_s)
        shown = output.rstrip()  # each command's account is a few lines: the phases' figures with the timings
        print(f"--- {name}: {seconds:.1f} s, exit {rc}\n{shown}", flush=True)
        if rc != 0:
            rows.append((f"{name} (failed, exit {rc})", seconds))
            return rows, False
        if name != "run":
            rows.append((name, seconds))
            continue
        timings = json.loads(Path(output.rstrip().splitlines()[-1].split("full log: ", 1)[1].split(";")[0])
                             .with_suffix(".timings.json").read_text())
        accounted = 0.0
        for phase, phase_s in timings["phases"].items():
            if phase.startswith("raw_risk_factors "):
                rows.append((f"run: raw partition {phase.split(' ', 1)[1]}", phase_s))
                accounted += phase_s
        for label, key in STEPS:
            if key in timings["steps"]:
                rows.append((f"run: {label}", timings["steps"][key]))
                accounted += timings["steps"][key]
        rows.append(("run: the rest (start-up, imports, Dagster, summary)", seconds - accounted))
    return rows, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, help="state folder to use (default: a fresh temporary one, removed "
                                                  "after a complete run)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per command")
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

    try:
        first, complete = demo(env, options.timeout)
        again, complete_again = demo(env, options.timeout) if complete else ([], False)
    finally:
        governed_ft(["stack", "down"], env, options.timeout)

    print("\n| phase | seconds |\n|---|---:|")
    for name, seconds in first:
        print(f"| {name} | {seconds:.1f} |")
    total = sum(seconds for _, seconds in first)
    verdict = f"{'under' if total <= GOAL_S else 'over'} the {GOAL_S:.0f} s goal" if complete else "did not finish"
    print(f"| **total, stopped stack to registered model version** | **{total:.1f}** ({verdict}) |")
    for name, seconds in again:
        print(f"| re-run, no change: {name} | {seconds:.1f} |")
    rerun = sum(seconds for _, seconds in again)
    verdict = (f"{'under' if rerun <= RERUN_GOAL_S else 'over'} the {RERUN_GOAL_S:.0f} s goal" if complete_again
               else "did not finish")
    print(f"| **total, no-change re-run of the same commands** | **{rerun:.1f}** ({verdict}) |")
    if complete and complete_again and options.home is None:
        shutil.rmtree(home, ignore_errors=True)
        home = Path(f"{home} (removed)")
    print(f"cores: {os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.1f}, state folder: {home}")
    return 0 if complete and complete_again else 1


if __name__ == "__main__":
    sys.exit(main())
