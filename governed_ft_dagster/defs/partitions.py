"""Partitions of the raw table: fiscal year by form type."""

import dagster as dg

from governed_ft_dagster.settings import load_settings

FORM_TYPES = ("10-K", "10-Q")

raw_partitions = dg.MultiPartitionsDefinition({
    "fiscal_year": dg.StaticPartitionsDefinition([str(y) for y in load_settings().fiscal_years]),
    "form_type": dg.StaticPartitionsDefinition(list(FORM_TYPES)),
})
