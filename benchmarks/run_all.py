"""Run every benchmark in turn, show each one's own table, then one summary table."""

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    ("extraction MB/s (ours against edgartools)", ["bench_extract.py"]),
    ("preprocessing cost curve", ["bench_preprocess.py"]),
    ("training tokens/s and padding share", ["bench_training.py", "--repeats", "2"]),
    ("whole graph on the aws path against the stand-ins", ["bench_graph_standins.py"]),
    ("registration through tracking URI databricks against the stand-ins", ["bench_registration_tracking.py"]),
    ("end to end: stopped stack to registered model version", ["bench_end_to_end.py"]),
    ("training-data manifest size, verify and impact times", ["bench_manifest.py"]),
)


def main() -> int:
    rows = []
    for title, command in BENCHMARKS:
        print(f"\n=== {title}: {' '.join(command)} ===", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / command[0]), *command[1:]], cwd=HERE.parent)
        rows.append((title, " ".join(command), time.monotonic() - started, rc))
    print("\n=== storage enforcement probes: pytest tests/test_enforcement.py -s ===", flush=True)
    started = time.monotonic()
    probe = subprocess.run([sys.executable, "-m", "pytest", "tests/test_enforcement.py", "-q", "-s", "-p",
                            "no:cacheprovider"], cwd=HERE.parent, capture_output=True, text=True)
    probe_summary = next((line for line in probe.stdout.splitlines() if line.startswith("probes:")),
                         "no probe summary printed")
    print(probe_summary)
    rows.append(("storage enforcement probes", "tests/test_enforcement.py", time.monotonic() - started,
                 probe.returncode))
    print("\n| benchmark | command | wall seconds | exit code |\n|---|---|---|---|")
    for title, command, seconds, rc in rows:
        where = command if command.startswith("tests/") else f"benchmarks/{command}"
        print(f"| {title} | {where} | {seconds:.0f} | {rc} |")
    print(f"\nstorage enforcement: {probe_summary}")
    return max(rc for *_, rc in rows)


if __name__ == "__main__":
    sys.exit(main())
