"""Schedules: the periodic EDGAR refresh of every raw partition in the configured period."""

import dagster as dg

from governed_ft_dagster.defs.partitions import raw_partitions
from governed_ft_dagster.defs.sensors import raw_refresh_job
from governed_ft_dagster.settings import Settings


def edgar_refresh_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """The refresh of the settings' raw partitions on the settings' cron."""
    partitions_def = raw_partitions(settings.fiscal_years)

    @dg.schedule(job=raw_refresh_job, cron_schedule=settings.edgar_refresh_cron,
                 default_status=dg.DefaultScheduleStatus.STOPPED, execution_timezone="UTC")
    def edgar_refresh_schedule(context: dg.ScheduleEvaluationContext):
        """One run per raw partition; the document cache and the merge on accession number make re-runs cheap."""
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
        return [dg.RunRequest(run_key=f"{stamp}:{key}", partition_key=key, tags={"governed_ft/trigger": "schedule"})
                for key in partitions_def.get_partition_keys()]

    return edgar_refresh_schedule
