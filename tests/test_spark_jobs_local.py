"""LocalSparkResource runs a real PySpark script with spark-submit on the EMR release's Hadoop, offline jars and Dagster
Pipes."""

import textwrap
from pathlib import Path

import dagster as dg

from governed_ft_dagster.defs.resources.spark_jobs import LocalSparkResource, SparkJobResource, SparkJobSpec

WRITE_DELTA = """
import os
import sys

from dagster_pipes import open_dagster_pipes
from pyspark.sql import SparkSession

with open_dagster_pipes() as pipes:
    target = sys.argv[1]
    spark = SparkSession.builder.getOrCreate()
    spark.range(7).withColumnRenamed("id", "n").write.format("delta").mode("overwrite").save(target)
    version = spark.sql(f"DESCRIBE HISTORY delta.`{target}`").selectExpr("max(version)").first()[0]
    rows = spark.read.format("delta").load(target).count()
    pipes.log.info(f"wrote {rows} rows at version {version}")
    pipes.report_asset_materialization(metadata={
        "rows_out": rows, "delta_version": int(version), "marker": os.environ["GOVERNED_FT_MARKER"],
        "asset_key_seen": pipes.asset_key,
        "hadoop": spark._jvm.org.apache.hadoop.util.VersionInfo.getVersion(),
    })
    spark.stop()
"""

FAIL = """
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    raise ValueError("planted failure 7731: no rows survived curation")
"""


def _materialize(home: Path, script: Path, args: list[str], raise_on_error: bool = True):
    @dg.asset
    def curated_training_table(context: dg.AssetExecutionContext, spark: SparkJobResource) -> dg.MaterializeResult:
        result = spark.run(context, SparkJobSpec(script=str(script), args=args, name="tiny-delta",
                                                 env={"GOVERNED_FT_MARKER": "m-42"}))
        assert result.materialize_result is not None
        return dg.MaterializeResult(metadata={**result.materialize_result.metadata, "job_kind": result.kind,
                                              "job_run_id": result.run_id, **result.properties})

    return dg.materialize([curated_training_table], resources={"spark": LocalSparkResource(home=str(home))},
                          raise_on_error=raise_on_error)


def test_script_writes_delta_offline_and_reports_through_pipes(spark_home, tmp_path):
    script = tmp_path / "write_delta.py"
    script.write_text(textwrap.dedent(WRITE_DELTA))
    table = tmp_path / "tables" / "tiny"

    result = _materialize(spark_home, script, [str(table)])

    metadata = result.asset_materializations_for_node("curated_training_table")[0].metadata
    assert metadata["rows_out"].value == 7
    assert metadata["delta_version"].value == 0
    assert metadata["marker"].value == "m-42"
    assert metadata["asset_key_seen"].value == "curated_training_table"
    assert metadata["hadoop"].value == metadata["hadoop_version"].value == "3.4.1"  # the release's, not pyspark's 3.3.4
    assert metadata["job_kind"].value == "LocalSparkJobRun"
    assert metadata["exit_code"].value == "0"
    assert (table / "_delta_log" / "00000000000000000000.json").is_file()
    assert list(table.glob("*.parquet"))


def test_failing_script_fails_the_run_with_exit_code_and_error_line(spark_home, tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(FAIL))

    result = _materialize(spark_home, script, [], raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    description = failure.user_failure_data.description
    assert description.startswith("Spark job 'tiny-delta' failed: spark-submit exited with code 1")
    assert "ValueError: planted failure 7731: no rows survived curation" in description
    assert failure.user_failure_data.metadata["exit_code"].value == "1"
    assert len(description.splitlines()) <= 21
