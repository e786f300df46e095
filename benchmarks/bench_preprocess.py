"""Benchmark the local preprocessing job (records/s, MB/s) at 1x, 4x and 16x the SEC samples, and Spark start-up.

With --raw-location (a raw Delta table, e.g. the one bench_ingest.py wrote) it times the job on that table instead,
stage by stage: each stage of the curation is run on the previous one's cached output and counted, so the table
shows where the job's time goes (cleaning and splitting, exact and near de-duplication, token counting, the token
budget, the write)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from governed_ft_dagster.edgar.extract import extract_risk_factors  # noqa: E402
from governed_ft_dagster.preprocess.spark import RAW_SCHEMA  # noqa: E402
from governed_ft_dagster.settings import load_settings  # noqa: E402
from governed_ft_dagster.stack import jars, spark_runtime  # noqa: E402

SAMPLES = Path(os.environ.get("GOVERNED_FT_SEC_SAMPLES", REPO_ROOT.parent / "shared" / "sec_samples"))
CONF = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": "4", "spark.databricks.delta.snapshotPartitions": "2",
        "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}


def sample_rows() -> list[dict[str, Any]]:
    """One raw row per sample filing, as the raw asset would write it."""
    rows = []
    with open(SAMPLES / "manifest.tsv", encoding="utf-8") as handle:
        for m in csv.DictReader(handle, delimiter="\t"):
            if not m["local_file"].startswith("filings/"):
                continue
            extraction = extract_risk_factors((SAMPLES / m["local_file"]).read_bytes(), m["form"])
            period = dt.date.fromisoformat(m["period"])
            rows.append({"cik": m["cik"], "ticker": m["ticker"], "entity_name": m["company"], "form_type": m["form"],
                         "is_amendment": False, "fiscal_year": period.year,
                         "fiscal_period": "FY" if m["form"] == "10-K" else "Q", "quarter": None,
                         "accession_number": m["accession"] or f"sample-{m['ticker']}-{m['form']}",
                         "filing_date": str(period + dt.timedelta(days=30)), "report_date": m["period"],
                         "source_url": m["path"], "status": extraction.status.value,
                         "risk_factors_text": extraction.text, "text_sha256": "", "extractor_version": "bench",
                         "extracted_at": ""})
    return rows


def variant(text: str, replica: int) -> str:
    """The text with about a third of interior word pairs swapped, so a replica is not a (near-)duplicate."""
    if replica == 0:
        return text
    out = []
    for index, paragraph in enumerate(text.split("\n\n")):
        words = paragraph.split(" ")
        rng = random.Random(f"{replica}:{index}")
        i = 1
        while i < len(words) - 2:
            if rng.random() < 0.3:
                words[i], words[i + 1] = words[i + 1], words[i]
                i += 2
            else:
                i += 1
        out.append(" ".join(words))
    return "\n\n".join(out)


def replicate(rows: list[dict[str, Any]], factor: int) -> list[dict[str, Any]]:
    """factor copies of the rows with distinct CIKs, accession numbers and perturbed text."""
    return [{**row, "cik": f"{int(row['cik']) + replica * 10_000_000:010d}", "ticker": f"{row['ticker']}{replica}",
             "accession_number": f"{row['accession_number']}-r{replica}",
             "risk_factors_text": variant(row["risk_factors_text"], replica)}
            for replica in range(factor) for row in rows]


def startup_seconds(jar_paths: list[Path]) -> float:
    """Wall time of a fresh process that starts a Delta-enabled local[2] session and runs one trivial job."""
    code = ("import sys; from pyspark.sql import SparkSession; b = SparkSession.builder.master('local[2]')"
            f".config('spark.jars', {','.join(map(str, jar_paths))!r})\n"
            f"for k, v in {CONF!r}.items(): b = b.config(k, v)\n"
            "s = b.getOrCreate(); s.range(1).count(); s.stop()")
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.monotonic() - started


def load_job():
    """The job script as a module, to run its run() in this process's warm session."""
    spec = importlib.util.spec_from_file_location("preprocess_job", REPO_ROOT / "job_scripts" / "preprocess_risk_factors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spark_session(jar_paths: list[Path], driver_memory: str = "2g"):
    """A warm Delta-enabled local[2] session (2 GB of driver memory, as the local job has)."""
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master("local[2]").config("spark.jars", ",".join(map(str, jar_paths)))
               .config("spark.driver.memory", driver_memory))
    for key, value in CONF.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def profile_stages(spark, raw_location: str, tokenizer_dir: Path, target: Path) -> list[tuple[str, int, float]]:
    """Each curation stage on the previous one's cached output: (stage, rows out, seconds)."""
    from pyspark.sql import functions as F

    from governed_ft_dagster.preprocess import spark as curation

    rows: list[tuple[str, int, float]] = []
    cached: list = []

    def timed(name: str, build):
        started = time.monotonic()
        df = build().cache()
        rows.append((name, df.count(), time.monotonic() - started))
        cached.append(df)
        if len(cached) > 2:
            cached.pop(0).unpersist()  # only the input of the next stage stays in memory
        return df

    raw = timed("read the raw table", lambda: spark.read.format("delta").load(raw_location))
    extracted = timed("keep extracted", lambda: curation.keep_extracted(raw)[0])
    factors = timed("clean and split into risk factors",
                    lambda: curation.split_risk_factors(curation.normalise(extracted))[0])
    unique = timed("exact de-duplication", lambda: curation.drop_duplicates_exact(factors)[0])
    distinct = timed("near de-duplication (MinHash LSH)", lambda: curation.drop_near_duplicates(unique)[0])
    counted = timed("chat messages and token counts",
                    lambda: curation.count_tokens(curation.to_instruction_records(distinct), str(tokenizer_dir)))
    fitting = timed("token budget (chunking the long ones)",
                    lambda: curation.enforce_token_budget(counted, str(tokenizer_dir))[0])
    started = time.monotonic()
    curation.assign_split(fitting).withColumn("n_tokens", F.col("n_tokens").cast("int")).write.format("delta") \
        .mode("overwrite").save(str(target))
    rows.append(("split and write the curated table", fitting.count(), time.monotonic() - started))
    return rows


def profile_table(raw_location: str, work: Path) -> int:
    """The job's stages on an existing raw table, timed."""
    jars.fetch_group(work, "spark", mirror=load_settings().jar_mirror)
    from governed_ft_dagster.training.base_model import build_tiny_base

    texts = [extract_risk_factors(p.read_bytes(), "10-K").text for p in sorted((SAMPLES / "filings").glob("*10-K*"))]
    tokenizer_dir = build_tiny_base([t for t in texts if t], work / "base")
    spark = spark_session(jars.classpath(work, "spark"), driver_memory="4g")  # it caches each stage's output
    megabytes = spark.read.format("delta").load(raw_location).select(
        text_bytes("risk_factors_text")).first()[0] / 1e6
    stages = profile_stages(spark, raw_location, tokenizer_dir, work / "curated")
    spark.stop()
    total = sum(seconds for *_, seconds in stages)
    print(f"\nlocal[2] on {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}); raw table {raw_location}, "
          f"{stages[0][1]} rows, {megabytes:.1f} MB of section text; Spark start-up excluded\n")
    print("| stage | rows out | seconds | share |\n|---|---:|---:|---:|")
    for name, count, seconds in stages:
        print(f"| {name} | {count} | {seconds:.1f} | {seconds / total:.0%} |")
    records = stages[-1][1]
    print(f"| **all stages** | {records} | {total:.1f} | 100% |")
    print(f"\n{records / total:.1f} records/s out, {stages[0][1] / total:.1f} raw rows/s, {megabytes / total:.2f} MB/s")
    return 0


def python_work(raw_location: str, sections: int, work: Path, max_tokens: int = 1024) -> int:
    """The curated job's Python work on sampled extracted sections of a raw table, CPU-seconds by kind."""
    from deltalake import DeltaTable

    from governed_ft_dagster.preprocess import spark as P
    from governed_ft_dagster.preprocess import text as T
    from governed_ft_dagster.training.base_model import build_tiny_base

    texts = [extract_risk_factors(p.read_bytes(), "10-K").text for p in sorted((SAMPLES / "filings").glob("*10-K*"))]
    tokenizer = P._tokenizer(str(build_tiny_base([t for t in texts if t], work / "base")))
    rows = [r for r in DeltaTable(raw_location).to_pyarrow_table().to_pylist() if r["status"] == "extracted"]
    extracted = len(rows)
    rows = random.Random(0).sample(rows, min(sections, extracted))
    cpu: dict[str, float] = {}

    def timed(kind: str, fn, *args):
        started = time.process_time()
        out = fn(*args)
        cpu[kind] = cpu.get(kind, 0.0) + time.process_time() - started
        return out

    n_factors = n_chunked = 0
    for r in rows:
        factors = timed("cleaning and splitting", lambda: T.split_risk_factors(T.clean_section(r["risk_factors_text"])))
        for f in factors:
            n_factors += 1
            timed("record ids and exact keys", lambda: (T.record_id(r["accession_number"], f.ordinal, 1, 1, f.body),
                                                        T.exact_key(f.body)))
            shingles = timed("shingles", T.shingle_hashes, f.body)
            timed("MinHash signatures and bands", lambda: T.lsh_band_keys(T.minhash_signature(shingles)))
            messages = timed("chat messages", T.build_messages, f.body, f.heading, r["entity_name"], r["form_type"])
            if timed("token counts of every record", P._token_counts, tokenizer, [messages])[0] > max_tokens:
                n_chunked += 1
                timed("chunking over the token budget", P.chunk_record, tokenizer, max_tokens, r["accession_number"],
                      f.ordinal, f.body, f.heading, r["entity_name"], r["form_type"])
    total = sum(cpu.values())
    megabytes = sum(len(r["risk_factors_text"].encode()) for r in rows) / 1e6
    print(f"\nPython work of the curated job on {len(rows)} of {extracted} extracted sections ({megabytes:.1f} MB, "
          f"{n_factors} risk factors, {n_chunked} over {max_tokens} tokens): {total:.1f} CPU-s, "
          f"{total * extracted / len(rows):.0f} CPU-s scaled to the table\n")
    print("| work | CPU-s | share |\n|---|---:|---:|")
    for kind, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {seconds:.2f} | {seconds / total:.0%} |")
    return 0


def text_bytes(column: str):
    """Sum of the UTF-8 byte lengths of a string column."""
    from pyspark.sql import functions as F

    return F.sum(F.octet_length(F.col(column)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--raw-location", default=None, help="profile the job's stages on this raw Delta table")
    parser.add_argument("--python-work", type=int, metavar="N",
                        help="with --raw-location: instead, the job's Python work on N sampled sections, without Spark")
    args = parser.parse_args()
    if args.raw_location:
        work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-preprocess-"))
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        try:
            if args.python_work:
                return python_work(args.raw_location, args.python_work, work)
            return profile_table(args.raw_location, work)
        finally:
            if not args.work_dir:
                shutil.rmtree(work, ignore_errors=True)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-preprocess-"))
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        jars.fetch_groups(work, ("spark", "hadoop"), mirror=load_settings().jar_mirror)
        jar_paths = jars.classpath(work, "spark")
        # The EMR release's Hadoop in place of pyspark's, for the timed subprocess and this process alike.
        os.environ["SPARK_HOME"] = str(spark_runtime.spark_home(work))
        base = sample_rows()
        from governed_ft_dagster.training.base_model import build_tiny_base

        tokenizer_dir = build_tiny_base([r["risk_factors_text"] for r in base if r["risk_factors_text"]], work / "base")
        startup = startup_seconds(jar_paths)

        spark = spark_session(jar_paths)
        job = load_job()
        results = []
        for label, factor in [("1x (cold workers)", 1)] + [(f"{s}x", int(s)) for s in args.scales.split(",")]:
            rows = replicate(base, factor)
            source, target = work / f"raw-{factor}", work / f"curated-{factor}"
            spark.createDataFrame(rows, RAW_SCHEMA).write.format("delta").mode("overwrite").save(str(source))
            megabytes = sum(len((r["risk_factors_text"] or "").encode()) for r in rows) / 1e6
            job_args = job.parse_args(["--source-table", "bench.raw.risk_factors", "--target-table", "bench.curated.t",
                                       "--tokenizer-dir", str(tokenizer_dir), "--run-id", f"bench-{factor}",
                                       "--source-location", str(source), "--source-version", "0",
                                       "--target-location", str(target)])
            started = time.monotonic()
            report = job.run(spark, job_args)
            seconds = time.monotonic() - started
            spark.catalog.clearCache()
            results.append((label, len(rows), megabytes, report["risk_factors"], report["rows_out"], seconds))
        spark.stop()
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nlocal[2] on {os.cpu_count()} CPUs (load average {load:.1f} at the end); Spark start-up excluded below")
    print(f"Spark start-up (fresh process, Delta session, first job): {startup:.1f} s\n")
    header = ("scale", "raw rows", "text MB", "risk factors", "records out", "seconds", "records/s", "MB/s")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for label, n_rows, megabytes, factors, records, seconds in results:
        print(f"| {label} | {n_rows} | {megabytes:.2f} | {factors} | {records} | {seconds:.1f} | "
              f"{records / seconds:.1f} | {megabytes / seconds:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
