"""Sensors: new EDGAR filings, a signal outside Dagster, request just their raw partitions."""

import dagster as dg

from governed_ft_dagster.defs.assets.raw import RAW_KEY
from governed_ft_dagster.refresh import RefreshCursor, scan
from governed_ft_dagster.defs.resources.edgar import EdgarResource
from governed_ft_dagster.settings import Settings

# One process per run: the raw step and its checks wait on EDGAR and share its 10 requests/s, so starting a process
# per step would only add start-up time to every partition the schedule or the sensor launches.
raw_refresh_job = dg.define_asset_job("raw_refresh_job", selection=[RAW_KEY], executor_def=dg.in_process_executor)


def new_filings_sensor(settings: Settings) -> dg.SensorDefinition:
    """The sensor over the settings' fiscal years."""

    @dg.sensor(job=raw_refresh_job, minimum_interval_seconds=15 * 60, default_status=dg.DefaultSensorStatus.STOPPED)
    def new_filings_sensor(context: dg.SensorEvaluationContext, edgar: EdgarResource):
        """Requests a run for each raw partition that gained a 10-K or 10-Q since the last tick."""
        cursor = RefreshCursor.loads(context.cursor)
        result = scan(edgar.filing_source(), edgar.default_universe(), cursor, settings.fiscal_years,
                      batch_size=edgar.sensor_batch_size, log=context.log.info)
        for failure in result.failures:
            context.log.warning(f"could not read filings of {failure}")
        context.update_cursor(result.cursor.dumps())
        if not result.partitions:
            return dg.SkipReason(f"no new filings among the companies scanned (next offset {result.cursor.offset})")
        accessions = ",".join(sorted(ref.accession_number for ref in result.new_filings))
        return [dg.RunRequest(run_key=f"{key}:{accessions}", partition_key=key,
                              tags={"governed_ft/trigger": "new_filings"}) for key in result.partitions]

    return new_filings_sensor
