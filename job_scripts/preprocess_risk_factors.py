"""Spark job: raw Risk Factors Delta table -> curated instruction records (EMR Serverless and local spark-submit)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

LOG = logging.getLogger("governed_ft.preprocess")
PIPES_CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"
PROPERTY_PREFIX = "governed_ft"
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the job."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source-table", required=True, help="catalog name of the raw table (catalog.schema.table)")
    parser.add_argument("--target-table", required=True, help="catalog name of the curated table")
    parser.add_argument("--tokenizer-dir", required=True, help="directory of the base model's tokenizer")
    parser.add_argument("--run-id", required=True, help="orchestrator run id, recorded on every row")
    parser.add_argument("--catalog-url", default=None, help="catalog endpoint used by resolve_tables")
    parser.add_argument("--source-location", default=None, help="storage location of the raw Delta table")
    parser.add_argument("--source-version", type=int, default=None, help="Delta version to read; latest if omitted")
    parser.add_argument("--target-location", default=None, help="storage location of the curated Delta table")
    parser.add_argument("--rejects-location", default=None, help="optional Delta location for rejected rows")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def resolve_tables(args: argparse.Namespace) -> tuple[str, int | None, str]:
    """(source location, source version, target location): the hook where the catalog wiring goes."""
    # To be replaced by the catalog step: authenticate as the preprocess principal, resolve both tables through the
    # catalog, vend temporary credentials and configure S3A with them. For now the locations come as arguments.
    missing = [flag for flag, value in (("--source-location", args.source_location),
                                        ("--target-location", args.target_location)) if not value]
    if missing:
        raise SystemExit(f"resolve_tables: {' and '.join(missing)} required until the catalog hook is wired")
    return args.source_location, args.source_version, args.target_location


def _quote_path(location: str) -> str:
    return "delta.`" + location.replace("`", "``") + "`"


def _latest_version(spark, location: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, location).history(1).select("version").first()[0])


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_delta(spark, df, location: str, properties: dict[str, str], view: str, order_by: str = "record_id") -> int:
    """Replace the Delta table at location with df in one commit carrying properties; return the version written."""
    df.createOrReplaceTempView(view)
    props = ", ".join(f"{_sql_string(k)} = {_sql_string(v)}" for k, v in sorted(properties.items()))
    spark.sql(f"CREATE OR REPLACE TABLE {_quote_path(location)} USING DELTA TBLPROPERTIES ({props}) "
              f"AS SELECT * FROM {view} ORDER BY {order_by}")
    return _latest_version(spark, location)


def run(spark, args: argparse.Namespace) -> dict[str, Any]:
    """Read the raw table at a pinned version, curate it, write the curated table; return what to report."""
    from governed_ft_dagster.preprocess.spark import run_curation
    from governed_ft_dagster.preprocess.text import PREPROCESS_VERSION, TASK

    started = time.monotonic()
    source_location, source_version, target_location = resolve_tables(args)
    if source_version is None:
        source_version = _latest_version(spark, source_location)
    raw = spark.read.format("delta").option("versionAsOf", source_version).load(source_location)
    result = run_curation(raw, args.tokenizer_dir, source_version, args.run_id, args.max_tokens,
                          source_table=args.source_table, validation_fraction=args.validation_fraction, seed=args.seed)
    properties = {
        f"{PROPERTY_PREFIX}.source_table": args.source_table,
        f"{PROPERTY_PREFIX}.source_version": str(source_version),
        f"{PROPERTY_PREFIX}.run_id": args.run_id,
        f"{PROPERTY_PREFIX}.task": TASK,
        f"{PROPERTY_PREFIX}.preprocess_version": PREPROCESS_VERSION,
        f"{PROPERTY_PREFIX}.context_length": str(args.max_tokens),
    }
    spark.conf.set(USER_METADATA_CONF, f"{PROPERTY_PREFIX}.run_id={args.run_id}")
    try:
        version = write_delta(spark, result.curated, target_location, properties, "governed_ft_curated")
        rejects_version = None
        if args.rejects_location:
            rejects_version = write_delta(spark, result.rejects, args.rejects_location, properties,
                                          "governed_ft_rejects", order_by="accession_number, ordinal, record_id")
    finally:
        spark.conf.unset(USER_METADATA_CONF)
    return {**result.stats, "source_table": args.source_table, "target_table": args.target_table,
            "source_version": source_version, "target_location": target_location, "delta_version": version,
            "rejects_delta_version": rejects_version, "seconds": round(time.monotonic() - started, 2)}


def materialization_metadata(report: dict[str, Any]) -> dict[str, Any]:
    """The report as Pipes metadata: scalars as they are, nested values as JSON."""
    return {key: {"raw_value": value, "type": "json"} if isinstance(value, (dict, list)) else value
            for key, value in report.items() if value is not None}


class _LogReporter:
    """Stand-in for the Pipes context when the job is not launched by Dagster."""

    log = LOG

    def report_asset_materialization(self, metadata: dict[str, Any], data_version: str | None = None) -> None:
        LOG.info("materialization (data version %s): %s", data_version, metadata)


@contextmanager
def reporter() -> Iterator[Any]:
    """The Dagster Pipes context when launched by Dagster, plain logging otherwise."""
    if os.environ.get(PIPES_CONTEXT_ENV):
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            yield pipes
    else:
        yield _LogReporter()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for spark-submit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    with reporter() as context:
        args = parse_args(argv)
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.appName(f"governed-ft-preprocess-{args.run_id}").getOrCreate()
        try:
            report = run(spark, args)
            context.log.info(f"curated {report['rows_out']} records from {report['rows_in']} raw rows "
                             f"into {args.target_table} version {report['delta_version']}")
            context.report_asset_materialization(metadata=materialization_metadata(report),
                                                 data_version=str(report["delta_version"]))
        finally:
            spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
