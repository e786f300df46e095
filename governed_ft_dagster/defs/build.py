"""The code location built from explicit settings: assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from governed_ft_dagster.defs.assets.curated import curated_training_table
from governed_ft_dagster.defs.assets.model import uc_model_version
from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
from governed_ft_dagster.defs.assets.training import finetuned_lora_model
from governed_ft_dagster.defs.automation import automation_sensors, raw_table_version, with_automation
from governed_ft_dagster.defs.checks import all_checks
from governed_ft_dagster.defs.partitions import raw_partitions
from governed_ft_dagster.defs.resources import build_resources
from governed_ft_dagster.defs.schedules import edgar_refresh_schedule
from governed_ft_dagster.defs.sensors import new_filings_sensor, raw_refresh_job
from governed_ft_dagster.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    """Everything the settings decide (partitions, schedules, sensors, conditions, resources) is built here."""
    partitions_def = raw_partitions(settings.fiscal_years)
    assets = [raw_risk_factors_asset(partitions_def), curated_training_table, finetuned_lora_model, uc_model_version]
    return dg.Definitions(
        assets=[raw_table_version, *with_automation(assets, settings)],
        asset_checks=all_checks(partitions_def),
        jobs=[raw_refresh_job],
        schedules=[edgar_refresh_schedule(settings)],
        sensors=[new_filings_sensor(settings), *automation_sensors(settings)],
        resources=build_resources(settings),
    )
