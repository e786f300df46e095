"""Dagster definitions: assets, checks, partitions, schedules, sensors and the resources they run through."""
