"""The whole graph as `governed-ft run` drives it, on the aws code path against loopback stand-ins, timed per step.

The stand-ins are the tests' recording Databricks workspace (catalog, MLflow Unity Catalog registry, lineage APIs)
and moto in server mode. Spark (spark-submit with Delta and S3A), training (a tiny Ministral3, default
hyperparameters) and MLflow are real, and the input is the shared EDGAR samples. No catalog server starts here, so
this is not the README's main command; `bench_end_to_end.py` measures that.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import dagster as dg  # noqa: E402
import pytest  # noqa: E402

PARTITIONS = ("2023|10-K", "2023|10-Q", "2024|10-K", "2024|10-Q")


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Wall seconds from STEP_START to STEP_SUCCESS or STEP_FAILURE of each step in the run."""
    started: dict[str, float] = {}
    out: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            out[event.step_key] = entry.timestamp - started.get(event.step_key, entry.timestamp)
    return out


def main() -> int:
    from lxml import html

    from aws_fixtures import start_registry_world
    from conftest import SHARED_SAMPLES, free_port
    from governed_ft_dagster.defs.assets.curated import curated_training_table
    from governed_ft_dagster.defs.assets.model import uc_model_version
    from governed_ft_dagster.defs.assets.raw import raw_risk_factors
    from governed_ft_dagster.defs.assets.training import finetuned_lora_model
    from governed_ft_dagster.defs.checks import all_checks
    from governed_ft_dagster.edgar.sample_corpus import mirror_shared_samples
    from governed_ft_dagster.defs.resources.base_model import BaseModelResource
    from governed_ft_dagster.defs.resources.edgar import EdgarResource
    from governed_ft_dagster.defs.resources.registry import DatabricksLineageResource, DatabricksRegistryResource
    from governed_ft_dagster.defs.resources.spark_jobs import LocalSparkResource
    from governed_ft_dagster.defs.resources.training_jobs import LocalTrainingResource
    from governed_ft_dagster.settings import load_settings
    from governed_ft_dagster.stack import jars
    from governed_ft_dagster.training.base_model import build_tiny_base

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="governed-ft-bench-") as scratch, pytest.MonkeyPatch.context() as env:
        tmp = Path(scratch)
        started = time.monotonic()
        jars.fetch_groups(tmp / "spark-home", ("spark", "hadoop", "s3a"), mirror=load_settings().jar_mirror)
        print(f"set-up (not timed): Spark jars {time.monotonic() - started:.0f} s", flush=True)

        started = time.monotonic()
        world, moto, _, _ = start_registry_world(env, free_port())
        rows.append(("stand-ins up (moto, fake workspace)", time.monotonic() - started))
        try:
            started = time.monotonic()
            texts = [html.fromstring(p.read_bytes()).text_content()
                     for p in sorted((SHARED_SAMPLES / "filings").glob("*.htm*"))]
            base = build_tiny_base(texts, tmp / "tiny-base")
            mirror_shared_samples(SHARED_SAMPLES, tmp / "edgar")
            rows.append(("tiny base model and sample mirror", time.monotonic() - started))
            resources = {
                "catalog": world.catalog_resource(),
                "edgar": EdgarResource(source="folder", cache_dir=str(tmp / "cache"), local_root=str(tmp / "edgar")),
                "spark": LocalSparkResource(home=str(tmp / "spark-home"), s3a=True),
                "training": LocalTrainingResource(work_dir=str(tmp / "work"), num_gpus=0),
                "base_model": BaseModelResource(model_ref=str(base)),
                "registry": DatabricksRegistryResource(
                    host=world.databricks.url, region="us-east-1", aws_endpoint_url=world.moto_url,
                    tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", artifact_location=(tmp / "mlartifacts").as_uri()),
                "lineage": DatabricksLineageResource(host=world.databricks.url, region="us-east-1",
                                                     aws_endpoint_url=world.moto_url),
            }
            assets = [raw_risk_factors, curated_training_table, finetuned_lora_model, uc_model_version, *all_checks]
            with dg.DagsterInstance.ephemeral() as instance:
                for partition in PARTITIONS:
                    started = time.monotonic()
                    result = dg.materialize([raw_risk_factors], partition_key=partition, instance=instance,
                                            resources=resources, raise_on_error=False)
                    rows.append((f"raw_risk_factors {partition}", time.monotonic() - started))
                    if not result.success:
                        raise SystemExit(f"raw_risk_factors {partition} failed")
                started = time.monotonic()
                result = dg.materialize(assets, instance=instance, resources=resources, raise_on_error=False,
                                        selection=dg.AssetSelection.assets(curated_training_table.key,
                                                                         finetuned_lora_model.key,
                                                                         uc_model_version.key))
                total = time.monotonic() - started
                steps = step_seconds(instance, result.run_id)
                for step, seconds in steps.items():
                    rows.append((f"  step {step}", seconds))
                rows.append(("curated + training + registration run (with checks)", total))
                if not result.success:
                    raise SystemExit("the downstream run failed")
                version = result.asset_materializations_for_node("uc_model_version")[0].metadata["model_version"]
        finally:
            world.databricks.stop()
            moto.stop()

    print("\n| phase | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} |")
    whole = sum(seconds for name, seconds in rows if not name.startswith("  "))
    print(f"| whole graph to model version {version.value} (stand-ins) | {whole:.1f} |")
    print(f"cores: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
