"""`governed-ft run`: materialize the whole graph on the configured deployment and say where the model is."""

import os
import sys
from pathlib import Path

import click

from governed_ft_dagster.settings import load_settings


@click.command("run")
@click.option("--partition", "partitions", multiple=True, help="Raw partitions (fiscal_year|form_type); default all.")
def run(partitions: tuple[str, ...]) -> None:
    """Ingest every raw partition, then curate, train and register; print the model version and its lineage."""
    settings = load_settings()
    os.environ.setdefault("DAGSTER_HOME", str(settings.home / "dagster"))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    import dagster as dg

    from governed_ft_dagster.definitions import defs
    from governed_ft_dagster.partitions import raw_partitions

    assets = [defs.get_assets_def(key) for key in
              ("raw_risk_factors", "curated_training_table", "finetuned_lora_model", "uc_model_version")]
    resources = defs.resources
    checks = list(defs.asset_checks or [])
    with dg.DagsterInstance.get() as instance:
        for key in partitions or raw_partitions.get_partition_keys():
            click.echo(f"raw_risk_factors {key} ...")
            _fail_on(dg.materialize(assets[:1] + checks[:3], partition_key=key, instance=instance,
                                    resources=resources, raise_on_error=False))
        click.echo("curated_training_table, finetuned_lora_model, uc_model_version ...")
        result = dg.materialize(assets + checks, selection=dg.AssetSelection.assets(*assets[1:]),
                                instance=instance, resources=resources, raise_on_error=False)
        _fail_on(result)
    metadata = result.asset_materializations_for_node("uc_model_version")[0].metadata
    name, version = metadata["model_name"].value, metadata["model_version"].value
    click.echo(f"registered {name} version {version}")
    click.echo(f"lineage: governed-ft lineage {name} --version {version} --json")


def _fail_on(result) -> None:
    failures = result.get_step_failure_events()
    if failures:
        message = failures[0].event_specific_data.error.message.strip()
        if message.startswith("dagster.") and ": " in message:
            message = message.split(": ", 1)[1]
        click.echo(f"error: {failures[0].step_key}: {message}", err=True)
        sys.exit(1)
