"""Partitions of the raw table: fiscal year by form type."""

from typing import Sequence

import dagster as dg

FORM_TYPES = ("10-K", "10-Q")


def raw_partitions(fiscal_years: Sequence[int]) -> dg.MultiPartitionsDefinition:
    """One partition per configured fiscal year and form type."""
    return dg.MultiPartitionsDefinition({
        "fiscal_year": dg.StaticPartitionsDefinition([str(y) for y in fiscal_years]),
        "form_type": dg.StaticPartitionsDefinition(list(FORM_TYPES)),
    })
