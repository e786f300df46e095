"""The code location: assets, checks, schedules, sensors and the deployment's resources."""

import dagster as dg

from governed_ft_dagster.assets.raw import raw_risk_factors
from governed_ft_dagster.checks import raw_accessions_unique, raw_extracted_share, raw_text_lengths
from governed_ft_dagster.resources import build_resources
from governed_ft_dagster.schedules import edgar_refresh_schedule
from governed_ft_dagster.sensors import new_filings_sensor, raw_refresh_job
from governed_ft_dagster.settings import load_settings

defs = dg.Definitions(
    assets=[raw_risk_factors],
    asset_checks=[raw_accessions_unique, raw_extracted_share, raw_text_lengths],
    jobs=[raw_refresh_job],
    schedules=[edgar_refresh_schedule],
    sensors=[new_filings_sensor],
    resources=build_resources(load_settings()),
)
