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
    ("end to end: stopped stack to registered model version", ["bench_end_to_end.py"]),
)


def main() -> int:
    rows = []
    for title, command in BENCHMARKS:
        print(f"\n=== {title}: {' '.join(command)} ===", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / command[0]), *command[1:]], cwd=HERE.parent)
        rows.append((title, " ".join(command), time.monotonic() - started, rc))
    print("\n| benchmark | command | wall seconds | exit code |\n|---|---|---|---|")
    for title, command, seconds, rc in rows:
        print(f"| {title} | benchmarks/{command} | {seconds:.0f} | {rc} |")
    return max(rc for *_, rc in rows)


if __name__ == "__main__":
    sys.exit(main())
