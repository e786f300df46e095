"""The code location: assets, checks, schedules, sensors and the deployment's resources."""

import dagster as dg

from governed_ft_dagster.resources import build_resources
from governed_ft_dagster.settings import load_settings

defs = dg.Definitions(
    resources=build_resources(load_settings()),
)
