"""The curated transformation's DataFrame functions, curate() on real filings, and the job under spark-submit."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark")
pytest.importorskip("delta")

from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from governed_ft_dagster.preprocess import spark as P  # noqa: E402
from governed_ft_dagster.preprocess import text as T  # noqa: E402
from governed_ft_dagster.stack import jars  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "sec_samples"
if not SAMPLES.is_dir():
    SAMPLES = Path("/work/shared/sec_samples")
JOB_SCRIPT = REPO / "job_scripts" / "preprocess_risk_factors.py"
DELTA_CONF = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
              "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}
LOCAL_CONF = {"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4",
              "spark.databricks.delta.snapshotPartitions": "2", "spark.ui.enabled": "false",
              "spark.ui.showConsoleProgress": "false"}
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="the shared SEC samples are not present")


def section(path: Path, form: str) -> tuple[str, str]:
    """(status, text) of a filing's Risk Factors section, from the project's extractor or a plain lxml fallback."""
    try:
        from governed_ft_dagster.edgar.extract import extract_risk_factors
    except ImportError:
        from lxml import html

        text = html.fromstring(path.read_bytes()).text_content()
        start = text.rfind("Risk Factors")
        return ("extracted", text[start:start + 200_000]) if start >= 0 else ("not_found", "")
    extraction = extract_risk_factors(path.read_bytes(), form)
    return extraction.status.value, extraction.text


def raw_row(**values: Any) -> dict[str, Any]:
    """A raw-table row with neutral defaults."""
    row = {"cik": "0000000001", "ticker": "TST", "entity_name": "Test Corp", "form_type": "10-K",
           "is_amendment": False, "fiscal_year": 2024, "fiscal_period": "FY", "quarter": None,
           "accession_number": "0000000001-24-000001", "filing_date": "2024-02-01", "report_date": "2023-12-31",
           "source_url": "https://example.invalid/doc.htm", "status": "extracted", "risk_factors_text": "",
           "text_sha256": "", "extractor_version": "test", "extracted_at": "2024-02-02T00:00:00Z"}
    row.update(values)
    return row


def sample_rows() -> list[dict[str, Any]]:
    """One raw row per real sample filing (filing date approximated as period end + 30 days)."""
    rows = []
    with open(SAMPLES / "manifest.tsv", encoding="utf-8") as handle:
        for m in csv.DictReader(handle, delimiter="\t"):
            if not m["local_file"].startswith("filings/"):
                continue
            status, text = section(SAMPLES / m["local_file"], m["form"])
            period = dt.date.fromisoformat(m["period"])
            rows.append(raw_row(
                cik=m["cik"], ticker=m["ticker"], entity_name=m["company"], form_type=m["form"],
                fiscal_year=period.year, fiscal_period="FY" if m["form"] == "10-K" else "Q", quarter=None,
                accession_number=m["accession"] or f"sample-{m['ticker']}-{m['form']}-{m['period']}",
                filing_date=str(period + dt.timedelta(days=30)), report_date=m["period"],
                source_url=f"https://github.com/{m['repo']}/blob/{m['commit']}/{m['path']}",
                status=status, risk_factors_text=text))
    return rows


def apple_restatement(apple_10k_text: str) -> tuple[dict[str, Any], str]:
    """A later Apple 10-Q that restates one 10-K risk factor with small edits and adds a new one."""
    restated = next(f for f in T.split_risk_factors(T.clean_section(apple_10k_text)) if f.ordinal == 12)
    body = restated.body.replace("The Company", "Apple", 1) + " The Company continues to monitor these matters."
    new_body = " ".join(["Recent export licensing requirements for advanced components could delay shipments to "
                         "certain customers and reduce net sales in affected regions."] * 3)
    text = "\n\n".join(["Item 1A. Risk Factors",
                        "There have been no other changes except those described below.",
                        restated.heading, body,
                        "New export controls could adversely affect the Company's supply chain.", new_body])
    return raw_row(cik="0000320193", ticker="AAPL", entity_name="Apple Inc.", form_type="10-Q", fiscal_year=2025,
                   fiscal_period="Q1", quarter=1, accession_number="0000320193-25-000008", filing_date="2025-01-31",
                   report_date="2024-12-28", risk_factors_text=text), restated.heading


@pytest.fixture(scope="session")
def spark_jar_paths(spark_home) -> list[Path]:
    return jars.classpath(spark_home, "spark")


@pytest.fixture(scope="module")
def spark(in_process_spark_jars, tmp_path_factory) -> SparkSession:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    builder = (SparkSession.builder.master("local[2]").appName("test-preprocess")
               .config("spark.jars", ",".join(str(p) for p in in_process_spark_jars))
               .config("spark.sql.warehouse.dir", str(warehouse))
               .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={warehouse}"))
    for key, value in {**DELTA_CONF, **LOCAL_CONF}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def real_rows() -> list[dict[str, Any]]:
    rows = sample_rows()
    apple = next(r for r in rows if r["ticker"] == "AAPL" and r["form_type"] == "10-K")
    restatement, _ = apple_restatement(apple["risk_factors_text"])
    return rows + [restatement]


@pytest.fixture(scope="session")
def tokenizer_dir(real_rows, tmp_path_factory) -> str:
    from governed_ft_dagster.training.base_model import build_tiny_base

    texts = [r["risk_factors_text"] for r in real_rows if r["risk_factors_text"]]
    return str(build_tiny_base(texts, tmp_path_factory.mktemp("tiny-base") / "model"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from governed_ft_dagster.training.base_model import load_tokenizer

    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def curation(spark, real_rows, tokenizer_dir) -> P.Curation:
    raw = spark.createDataFrame(real_rows, P.RAW_SCHEMA)
    return P.run_curation(raw, tokenizer_dir, 7, "run-test", 1024, source_table="governed_ft.raw.risk_factors")


def frame(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    return spark.createDataFrame(rows, P.RAW_SCHEMA)


def factors_of(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    kept, _ = P.keep_extracted(frame(spark, rows))
    factors, _ = P.split_risk_factors(P.normalise(kept))
    return factors


BODY = ("Our suppliers operate in regions exposed to extreme weather, political unrest and power shortages, and any "
        "disruption at a single facility can delay shipments for several quarters while alternatives are qualified. ")
SECTION = "\n\n".join([
    "Item 1A. Risk Factors", "Risks Related to Operations",
    "Supply disruptions could reduce our revenue.", BODY * 2, "ACME Corp | 2024 Form 10-K | 17",
    "Table of Contents", BODY,
    "Cyber attacks may harm our reputation and operations.", BODY.replace("suppliers", "data centers") * 2,
])


def test_keep_extracted_rejects_other_statuses(spark) -> None:
    rows = [raw_row(accession_number="a1"), raw_row(accession_number="a2", status="no_material_changes"),
            raw_row(accession_number="a3", status=None)]
    kept, rejects = P.keep_extracted(frame(spark, rows))
    assert [r.accession_number for r in kept.collect()] == ["a1"]
    assert sorted((r.accession_number, r.reason) for r in rejects.collect()) == [
        ("a2", "not_extracted:no_material_changes"), ("a3", "not_extracted:null")]
    assert tuple(rejects.columns) == P.REJECT_COLUMNS


def test_normalise_then_split_explodes_risk_factors(spark) -> None:
    rows = [raw_row(accession_number="a1", risk_factors_text=SECTION),
            raw_row(accession_number="a2", risk_factors_text="Item 1A. Risk Factors\n\nSee our Annual Report on Form 10-K.")]
    normalised = P.normalise(frame(spark, rows))
    assert "| 2024 Form 10-K |" not in normalised.where("accession_number = 'a1'").first().clean_text
    factors, rejects = P.split_risk_factors(normalised)
    got = factors.orderBy("ordinal").collect()
    assert [(r.ordinal, r.risk_factor_heading, r.section) for r in got] == [
        (0, "Supply disruptions could reduce our revenue.", "Risks Related to Operations"),
        (1, "Cyber attacks may harm our reputation and operations.", "Risks Related to Operations")]
    assert "Table of Contents" not in got[0].body and got[0].body.count("Our suppliers operate") == 3
    assert len({r.record_id for r in got}) == 2 and "risk_factors_text" not in factors.columns
    assert [(r.accession_number, r.reason) for r in rejects.collect()] == [("a2", "empty_after_cleaning")]


def test_drop_duplicates_exact_keeps_the_earliest_filing(spark) -> None:
    rows = [raw_row(accession_number=acc, filing_date=date, risk_factors_text=text) for acc, date, text in [
        ("late", "2024-08-01", SECTION), ("early", "2024-02-01", SECTION.upper().replace("ITEM", "Item")),
        ("other", "2024-05-01", SECTION.replace("Supply disruptions could", "Tariffs could"))]]
    kept, rejects = P.drop_duplicates_exact(factors_of(spark, rows))
    kept_rows = sorted((r.accession_number, r.ordinal) for r in kept.collect())
    assert ("early", 0) in kept_rows and ("late", 0) not in kept_rows
    assert {r.reason for r in rejects.collect()} == {"exact_duplicate"}
    assert kept.count() + rejects.count() == 6


def test_drop_near_duplicates_keeps_the_earliest_copy(spark, real_rows) -> None:
    apple = next(r for r in real_rows if r["ticker"] == "AAPL" and r["form_type"] == "10-K")
    restatement, heading = apple_restatement(apple["risk_factors_text"])
    earlier = {**restatement, "accession_number": "0000320193-24-000001", "filing_date": "2024-01-31"}
    factors = factors_of(spark, [apple, restatement, earlier])
    kept, rejects = P.drop_near_duplicates(factors)
    rejected = {(r.accession_number, r.risk_factor_heading) for r in rejects.collect()}
    # The copy filed before the 10-K survives; the 10-K's and the later 10-Q's copies go.
    assert (restatement["accession_number"], heading) in rejected
    assert (apple["accession_number"], heading) in rejected
    assert (earlier["accession_number"], heading) not in rejected
    kept_rows = {(r.accession_number, r.risk_factor_heading) for r in kept.collect()}
    assert (earlier["accession_number"], heading) in kept_rows
    new = "New export controls could adversely affect the Company's supply chain."
    assert (earlier["accession_number"], new) in kept_rows and (restatement["accession_number"], new) in rejected
    assert all(r.detail.startswith("near duplicate of ") for r in rejects.collect())
    assert kept.count() + rejects.count() == factors.count()
    assert set(kept.columns) == set(factors.columns)


def test_instruction_records_and_token_counts(spark, tokenizer_dir, tokenizer) -> None:
    records = P.count_tokens(P.to_instruction_records(factors_of(spark, [raw_row(risk_factors_text=SECTION)])),
                             tokenizer_dir)
    assert records.schema["messages"].dataType == P.MESSAGES_TYPE
    for row in records.collect():
        messages = [m.asDict() for m in row.messages]
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert messages[2]["content"] == row.risk_factor_heading and row.body in messages[1]["content"]
        assert row.n_tokens == len(tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"])


def test_enforce_token_budget_chunks_or_rejects(spark, tokenizer_dir, tokenizer) -> None:
    endless = "This sentence never ends and could harm us " + "greatly " * 400 + "."
    rows = [raw_row(accession_number="long", risk_factors_text=SECTION),
            raw_row(accession_number="huge", risk_factors_text="\n\n".join(
                ["Risks", "A single sentence could be too long.", endless, "Another risk may apply.", BODY]))]
    records = P.count_tokens(P.to_instruction_records(factors_of(spark, rows)), tokenizer_dir)
    assert records.where("n_tokens > 200").count() >= 2
    kept, rejects = P.enforce_token_budget(records, tokenizer_dir, max_tokens=200)
    kept_rows = kept.collect()
    assert all(r.n_tokens <= 200 for r in kept_rows)
    chunks = [r for r in kept_rows if r.accession_number == "long" and r.ordinal == 0]
    assert len(chunks) >= 2 and {r.parts for r in chunks} == {len(chunks)}
    assert sorted(r.part for r in chunks) == list(range(1, len(chunks) + 1))
    assert " ".join(" ".join(r.body for r in sorted(chunks, key=lambda r: r.part)).split()).count("Our suppliers") == 3
    for r in chunks:
        assert r.n_tokens == len(tokenizer.apply_chat_template([m.asDict() for m in r.messages],
                                                               tokenize=True)["input_ids"])
    assert [(r.accession_number, r.reason) for r in rejects.collect()] == [("huge", "over_token_budget")]
    assert set(kept.columns) == set(records.columns)


def _plain_chunks(body: str, fits) -> list[str] | None:
    """Reference: greedy paragraphs (sentences of one that does not fit), each candidate tokenized afresh."""
    chunks, current = [], ""
    for para in [p for p in body.split("\n\n") if p.strip()]:
        units = [para] if fits(para) else T.split_sentences(para)
        for j, unit in enumerate(units):
            candidate = current + (" " if j else "\n\n") + unit if current else unit
            if fits(candidate):
                current = candidate
            elif not fits(unit):
                return None
            else:
                chunks, current = chunks + [current] if current else chunks, unit
    return chunks + [current] if current else chunks


def test_chunking_tokenizes_the_body_once_with_the_same_chunks(real_rows, tokenizer) -> None:
    factors = [(f, r) for r in real_rows for f in T.split_risk_factors(T.clean_section(r["risk_factors_text"]))]
    tokenized = {"reference": 0, "counted": 0}  # characters

    def count(pieces: list[str], heading: str, row: dict) -> list[int]:
        tokenized["counted"] += sum(map(len, pieces))
        messages = [T.build_messages(p, heading, row["entity_name"], row["form_type"], 99, 99) for p in pieces]
        encoded = tokenizer.apply_chat_template(messages, tokenize=True) if pieces else {"input_ids": []}
        return [len(ids) for ids in encoded["input_ids"]]

    def token_ends(body: str) -> list[int]:
        tokenized["counted"] += len(body)
        return [e for _, e in tokenizer(body, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]

    def word_ends(body: str) -> list[int]:  # a poor estimate: the exact checks must catch it and fall back
        return [m.end() for m in re.finditer(r"\S+", body)]

    outcomes = []
    for max_tokens, ends in ((1024, token_ends), (300, token_ends), (300, word_ends), (120, token_ends)):
        over = [(f, r) for f, r in factors if count([f.body], f.heading, r)[0] > max_tokens][:25]
        tokenized.update(reference=0, counted=0)
        for f, r in over:
            counted = lambda pieces: count(pieces, f.heading, r)  # noqa: E731

            def fits(piece: str) -> bool:
                tokenized["reference"] += len(piece)
                return counted([piece])[0] <= max_tokens

            before = tokenized["counted"]
            expected = _plain_chunks(f.body, fits)
            tokenized["counted"] = before
            assert T.chunk_paragraphs_counted(f.body, counted, ends, max_tokens) == expected
            outcomes.append("chunks" if expected else "none")
        if max_tokens == 1024:
            assert len(over) >= 10 and tokenized["counted"] < 0.7 * tokenized["reference"], tokenized
    assert outcomes.count("chunks") >= 40 and outcomes.count("none") >= 10


def test_assign_split_is_by_company(spark) -> None:
    rows = [raw_row(cik=str(cik), accession_number=f"a{cik}-{i}", risk_factors_text=SECTION)
            for cik in range(40) for i in range(2)]
    split = P.assign_split(factors_of(spark, rows), 0.3, seed=1)
    per_company = split.groupBy("cik").agg(F.countDistinct("split").alias("n")).collect()
    assert all(r.n == 1 for r in per_company)
    assert {r.split for r in split.select("split").distinct().collect()} == {"train", "validation"}
    assert all(r.split == T.split_for(r.cik, 0.3, 1) for r in split.collect())


def test_curate_real_filings(curation, tokenizer) -> None:
    stats = curation.stats
    curated = curation.curated.collect()
    rejects = curation.rejects.collect()
    assert tuple(curation.curated.columns) == P.OUTPUT_COLUMNS
    assert stats["rows_in"] == 10 and stats["rows_out"] == len(curated) > 100
    # Record-level ledger: every filing and risk factor is either curated or rejected with a reason.
    filing_rejects = [r for r in rejects if r.record_id is None]
    assert stats["records_in"] == (len(filing_rejects) + stats["risk_factors"]
                                   - stats["chunked_risk_factors"] + stats["chunks"])
    assert stats["records_in"] == len(curated) + len(rejects) and stats["balanced"]
    assert sum(stats["rejects"].values()) == len(rejects)
    assert {(r.accession_number, r.reason) for r in filing_rejects} == {
        ("0000320193-23-000077", "not_extracted:no_material_changes"),
        ("0000200406-23-000082", "not_extracted:not_found"),
        ("sample-WFC-10-K-2024-12-31", "not_extracted:incorporated_by_reference"),
        ("sample-ORCL-10-Q-2024-08-31", "not_extracted:incorporated_by_reference")}
    assert all(r.n_tokens <= 1024 for r in curated) and stats["token_length"]["max"] <= 1024
    for row in curated[:: max(1, len(curated) // 15)]:
        assert row.n_tokens == len(tokenizer.apply_chat_template([m.asDict() for m in row.messages],
                                                                 tokenize=True)["input_ids"])
    assert stats["chunks"] > 0
    splits: dict[str, set[str]] = {}
    for row in curated:
        splits.setdefault(row.split, set()).add(row.cik)
    assert set(splits) == {"train", "validation"} and not splits["train"] & splits["validation"]
    assert {k: v["records"] for k, v in stats["splits"].items()} == {
        k: sum(r.split == k for r in curated) for k in splits}
    assert len({r.record_id for r in curated}) == len(curated)
    assert {(r.source_table, r.source_version, r.run_id) for r in curated} == {
        ("governed_ft.raw.risk_factors", 7, "run-test")}
    tokens = stats["token_length"]
    assert tokens["min"] <= tokens["p50"] <= tokens["p90"] <= tokens["p99"] <= tokens["max"]
    assert json.loads(json.dumps(stats)) == stats


def test_curate_removes_restated_risk_factors(curation, real_rows) -> None:
    apple = next(r for r in real_rows if r["ticker"] == "AAPL" and r["form_type"] == "10-K")
    _, heading = apple_restatement(apple["risk_factors_text"])
    near = [r for r in curation.rejects.collect() if r.reason == "near_duplicate"]
    by_accession = {(r.accession_number, r.risk_factor_heading) for r in near}
    assert ("0000320193-25-000008", heading) in by_accession
    curated = curation.curated.collect()
    assert any(r.accession_number == apple["accession_number"] and r.risk_factor_heading == heading for r in curated)
    # NVIDIA's 10-Q (filed first) restates 10-K risk factors: the later 10-K copies are the ones dropped.
    nvda = [r for r in near if r.ticker == "NVDA"]
    assert nvda and {r.form_type for r in nvda} == {"10-K"}
    kept_q = {" ".join(r.risk_factor_heading.split()[:5]) for r in curated if r.ticker == "NVDA" and r.form_type == "10-Q"}
    assert all(" ".join(r.risk_factor_heading.split()[:5]) in kept_q for r in nvda)
    assert any(r.reason == "exact_duplicate" and r.ticker == "NVDA" for r in curation.rejects.collect())


def test_curate_returns_records_and_stats(monkeypatch) -> None:
    seen = {}

    def fake_run_curation(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        return P.Curation("curated", "rejects", {"rows_in": 1})

    monkeypatch.setattr(P, "run_curation", fake_run_curation)
    assert P.curate("raw", "tok", 3, "run", 512, seed=4) == ("curated", {"rows_in": 1})
    assert seen == {"args": ("raw", "tok", 3, "run", 512), "kwargs": {"seed": 4}}


def _pipes_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    from dagster_pipes import encode_param

    messages = tmp_path / "pipes-messages.jsonl"
    context = {"asset_keys": ["curated_training_table"], "code_version_by_asset_key": None,
               "provenance_by_asset_key": None, "partition_key": None, "partition_key_range": None,
               "partition_time_window": None, "run_id": "dagster-run-1", "job_name": "preprocess", "retry_number": 0,
               "extras": {}}
    env = {"DAGSTER_PIPES_CONTEXT": encode_param({"data": context}),
           "DAGSTER_PIPES_MESSAGES": encode_param({"path": str(messages)})}
    return env, messages


def test_job_script_under_spark_submit(spark, spark_jar_paths, real_rows, tokenizer_dir, curation, tmp_path) -> None:
    """The job run by spark-submit writes the same records as curate() in this process: a second, independent run."""
    from delta.tables import DeltaTable
    from pyspark.find_spark_home import _find_spark_home

    source, target = tmp_path / "raw" / "risk_factors", tmp_path / "curated" / "training"
    frame(spark, real_rows).write.format("delta").save(str(source))
    frame(spark, real_rows[:2]).write.format("delta").mode("overwrite").save(str(source))  # version 1: must not be read
    pipes_env, messages = _pipes_env(tmp_path)
    confs = [arg for key, value in {**DELTA_CONF, **LOCAL_CONF}.items() for arg in ("--conf", f"{key}={value}")]
    command = [str(Path(_find_spark_home()) / "bin" / "spark-submit"), "--master", "local[2]",
               "--jars", ",".join(str(p) for p in spark_jar_paths), *confs, str(JOB_SCRIPT),
               "--source-table", "governed_ft.raw.risk_factors", "--target-table", "governed_ft.curated.training",
               "--tokenizer-dir", tokenizer_dir, "--run-id", "run-submit", "--catalog-url", "http://127.0.0.1:1",
               "--source-location", str(source), "--source-version", "0", "--target-location", str(target)]
    env = {**os.environ, **pipes_env, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]

    curated = spark.read.format("delta").load(str(target))
    rows = curated.collect()
    detail = DeltaTable.forPath(spark, str(target)).detail().first()
    assert detail.properties["governed_ft.source_table"] == "governed_ft.raw.risk_factors"
    assert detail.properties["governed_ft.source_version"] == "0"
    assert detail.properties["governed_ft.run_id"] == "run-submit"
    assert tuple(curated.columns) == P.OUTPUT_COLUMNS and curated.schema["messages"].dataType == P.MESSAGES_TYPE
    assert rows and all(r.n_tokens <= 1024 and r.source_version == 0 and r.run_id == "run-submit" for r in rows)
    volatile = ("source_version", "run_id")
    assert sorted(tuple(r[c] for c in P.OUTPUT_COLUMNS if c not in volatile) for r in rows) == sorted(
        tuple(r[c] for c in P.OUTPUT_COLUMNS if c not in volatile) for r in curation.curated.collect())

    sent = [json.loads(line) for line in messages.read_text().splitlines() if line.strip()]
    materialized = [m for m in sent if m["method"] == "report_asset_materialization"]
    assert [m["method"] for m in sent][0] == "opened" and sent[-1]["method"] == "closed"
    assert len(materialized) == 1
    metadata = materialized[0]["params"]["metadata"]
    assert metadata["rows_in"]["raw_value"] == len(real_rows) and metadata["rows_out"]["raw_value"] == len(rows)
    assert metadata["delta_version"]["raw_value"] == 0 and materialized[0]["params"]["data_version"] == "0"
    assert metadata["rejects"]["type"] == "json" and metadata["token_length"]["raw_value"]["max"] <= 1024
    assert "near_duplicate" in metadata["rejects"]["raw_value"]


def load_job():
    import importlib.util

    spec = importlib.util.spec_from_file_location("preprocess_job", JOB_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_job_run_pins_the_latest_source_version_and_writes_rejects(spark, tokenizer_dir, tmp_path) -> None:
    job = load_job()
    source, target, rejects = (str(tmp_path / name) for name in ("raw", "curated", "rejects"))
    frame(spark, [raw_row(accession_number="a1", risk_factors_text=SECTION)]).write.format("delta").save(source)
    frame(spark, [raw_row(accession_number="a2", cik="0000000002", status="not_found")]).write.format("delta") \
        .mode("append").save(source)
    base = ["--source-table", "c.raw.rf", "--target-table", "c.curated.rf", "--tokenizer-dir", tokenizer_dir,
            "--run-id", "run-inproc"]
    with pytest.raises(SystemExit, match="--source-location and --target-location"):
        job.resolve_tables(job.parse_args(base))
    args = job.parse_args(base + ["--source-location", source, "--target-location", target,
                                  "--rejects-location", rejects])
    report = job.run(spark, args)
    assert report["source_version"] == 1 and report["rows_in"] == 2 and report["rows_out"] == 2
    assert report["delta_version"] == 0 and report["rejects_delta_version"] == 0
    assert [r.reason for r in spark.read.format("delta").load(rejects).collect()] == ["not_extracted:not_found"]
    again = job.run(spark, args)
    assert again["delta_version"] == 1
    assert sorted(map(tuple, spark.read.format("delta").load(target).collect())) == sorted(
        map(tuple, spark.read.format("delta").option("versionAsOf", 0).load(target).collect()))
    metadata = job.materialization_metadata(report)
    assert metadata["rejects"] == {"type": "json", "raw_value": {"not_extracted:not_found": 1}}
    assert "rejects_delta_version" in metadata and metadata["rows_out"] == 2
