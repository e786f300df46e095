"""The code location: the definitions built from the environment's settings."""

from governed_ft_dagster.defs.build import build_defs
from governed_ft_dagster.settings import load_settings

defs = build_defs(load_settings())
