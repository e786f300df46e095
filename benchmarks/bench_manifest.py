"""Benchmark the training-data manifest: its size for the demo corpus and, estimated, the S&P 500 universe; how long
`governed-ft verify` and the impact queries (`governed-ft lineage --cik/--filing`) take on the demo.

The estimate needs nothing running: it counts the risk factors of the shared real filings (records per extracted
10-K and 10-Q, and the share of 10-Qs that restate their risk factors), scales them to the universe and builds a
manifest of that shape. The demo part reads a state folder where `make demo` ran (GOVERNED_FT_HOME, default
./.governed_ft, with its catalog server up) and times the commands, each run REPEATS times.

    .venv/bin/python benchmarks/bench_manifest.py
    GOVERNED_FT_HOME=/path/to/state GOVERNED_FT_UC_PORT=8080 .venv/bin/python benchmarks/bench_manifest.py
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from governed_ft_dagster.edgar.extract import extract_risk_factors  # noqa: E402
from governed_ft_dagster.lineage import manifest as m  # noqa: E402
from governed_ft_dagster.preprocess import text  # noqa: E402

SAMPLES = Path(os.environ.get("GOVERNED_FT_SEC_SAMPLES", REPO_ROOT.parent / "shared" / "sec_samples"))
COMPANIES, YEARS = 500, 2  # S&P 500, fiscal 2023-2024: about 4,000 filings (1 10-K and 3 10-Qs a year)
RECORDS_PER_FACTOR = 2.0  # upper bound: a risk factor over the 1,024-token budget becomes several records
VALIDATION_FRACTION = 0.1
REPEATS = 3


def sample_rates() -> dict[str, float]:
    """Risk factors per extracted filing and the share of filings with a section to train on, by form."""
    counts: dict[str, list[int]] = {"10-K": [], "10-Q": []}
    for path in sorted((SAMPLES / "filings").glob("*.htm*")):
        form = "10-K" if "_10-K_" in path.name else "10-Q"
        result = extract_risk_factors(path.read_bytes(), form)
        factors = text.split_risk_factors(text.clean_section(result.text)) if result.status.value == "extracted" else []
        counts[form].append(len(factors))
    rates = {}
    for form, found in counts.items():
        with_text = [n for n in found if n]
        rates[f"{form} share with records"] = len(with_text) / len(found)
        rates[f"{form} risk factors per filing"] = statistics.mean(with_text)
    return rates


def estimated_manifest(rates: dict[str, float], seed: int = 0) -> dict:
    """A manifest of the universe's shape, with real-format identifiers and digests."""
    rng = random.Random(seed)
    train, validation = [], []
    for company in range(COMPANIES):
        cik = f"{rng.randrange(10**4, 2 * 10**6):010d}"
        split = "validation" if rng.random() < VALIDATION_FRACTION else "train"
        for year in range(YEARS):
            for form, filings in (("10-K", 1), ("10-Q", 3)):
                for _ in range(filings):
                    if rng.random() >= rates[f"{form} share with records"]:
                        continue
                    accession = f"{cik}-{23 + year:02d}-{rng.randrange(10**6):06d}"
                    records = round(rates[f"{form} risk factors per filing"] * RECORDS_PER_FACTOR)
                    for ordinal in range(records):
                        record = {"record_id": hashlib.sha256(f"{accession}|{ordinal}".encode()).hexdigest()[:32],
                                  "accession_number": accession, "cik": cik, "split": split,
                                  "text_sha256": hashlib.sha256(accession.encode()).hexdigest(),
                                  "messages": [{"role": "user", "content": f"{accession} {ordinal}"}]}
                        (train if split == "train" else validation).append(record)
    return m.build_manifest(train, validation, table="governed_ft.curated.risk_factor_instructions", delta_version=12,
                            source_table="governed_ft.raw.risk_factors", source_version=40,
                            source_fingerprint="sha256:" + "0" * 64)


def sizes(manifest: dict) -> dict[str, int]:
    data = m.dumps(manifest)
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data)), **manifest["counts"]}


def timed(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    runs = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        runs.append((time.perf_counter() - started, done))
    return statistics.median(t for t, _ in runs), runs[-1][1]


def demo(env: dict[str, str]) -> None:
    """The demo's version 1: manifest size, and wall time of verify and the impact queries (CLI, process start
    included) and of the work itself (as the commands report it in --json)."""
    from governed_ft_dagster.audit import stored_manifests
    from governed_ft_dagster.cli.lineage import audit_resources, full_model_name
    from governed_ft_dagster.settings import load_settings

    settings = load_settings(env)
    model = full_model_name(settings, None)
    _, registry = audit_resources(settings, env)
    stored, _ = stored_manifests(registry, [model], "1")
    if not stored:
        print(f"no manifest on {model} version 1 under {settings.home}; run `make demo` first")
        return
    manifest = stored[0].manifest
    print(f"demo manifest ({stored[0].where}): {json.dumps(sizes(manifest))}")
    cli = str(Path(sys.executable).with_name("governed-ft"))
    cik = next(iter(next(iter(manifest["splits"].values())).values()))["cik"]
    accession = next(iter(next(iter(manifest["splits"].values()))))
    for label, args in (("verify", ["verify", model, "--version", "1", "--json"]),
                        ("impact --cik", ["lineage", "--cik", cik, "--json"]),
                        ("impact --filing", ["lineage", "--filing", accession, "--json"])):
        wall, done = timed([cli, *args], env)
        inner = json.loads(done.stdout).get("seconds") if done.stdout.startswith("{") else None
        print(f"{label}: {wall:.2f} s wall (median of {REPEATS}, process start included), {inner} s of work; "
              f"exit {done.returncode}")


def main() -> None:
    rates = sample_rates()
    print("from the shared real filings: " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()))
    estimate = sizes(estimated_manifest(rates))
    print(f"S&P 500 estimate ({COMPANIES} companies x {YEARS} years, {RECORDS_PER_FACTOR:g} records per risk factor): "
          f"{json.dumps(estimate)}")
    env = {**os.environ}
    home = Path(env.get("GOVERNED_FT_HOME", ".governed_ft"))
    if (home / "uc").is_dir():
        demo(env)
    else:
        print(f"no demo state at {home.resolve()}: set GOVERNED_FT_HOME to a folder where `make demo` ran")


if __name__ == "__main__":
    main()
