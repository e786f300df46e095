"""Sensors: new EDGAR filings request just their raw partitions."""

import json
from typing import Optional

import dagster as dg
import pyarrow as pa

from governed_ft_dagster.defs.assets.raw import RAW_KEY
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.governance import CURATED_TABLE, RAW_TABLE
from governed_ft_dagster.refresh import RefreshCursor, RetrainPolicy, retrain_due, scan
from governed_ft_dagster.defs.resources.catalog import CatalogResource
from governed_ft_dagster.defs.resources.edgar import EdgarResource
from governed_ft_dagster.settings import Settings
from governed_ft_dagster.storage import storage_options

raw_refresh_job = dg.define_asset_job("raw_refresh_job", selection=[RAW_KEY])


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


curation_job = dg.define_asset_job("curation_job", selection=[dg.AssetKey("curated_training_table")])
retraining_job = dg.define_asset_job(
    "retraining_job", selection=[dg.AssetKey("finetuned_lora_model"), dg.AssetKey("uc_model_version")])


def _table_state(catalog: CatalogResource, principal: Principal, relative: str) -> Optional[tuple[int, int]]:
    """(Delta version, row count) of a governed table read with the principal's vended credentials, None if absent."""
    client = catalog.client(principal)
    name = catalog.table_name(relative)
    if not client.table_exists(name):
        return None
    creds = client.temporary_table_credentials(name, "READ")
    from deltalake import DeltaTable

    table = DeltaTable(creds.location, storage_options=storage_options(creds, catalog.endpoint()))
    actions = pa.table(table.get_add_actions(flatten=True))
    return table.version(), sum(int(n or 0) for n in actions.column("num_records").to_pylist())


def _last_metadata(instance: dg.DagsterInstance, key: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


@dg.sensor(job=curation_job, minimum_interval_seconds=5 * 60, default_status=dg.DefaultSensorStatus.STOPPED)
def raw_table_version_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource):
    """Refreshes the curated table whenever the raw table's Delta version moves, by Dagster or by anyone else."""
    state = _table_state(catalog, Principal.PREPROCESS, RAW_TABLE)
    if state is None:
        return dg.SkipReason("the raw table is not registered yet")
    version = state[0]
    curated_from = _last_metadata(context.instance, "curated_training_table").get("source_version")
    if str(version) == context.cursor or curated_from == version:
        context.update_cursor(str(version))
        return dg.SkipReason(f"the curated table is built from raw version {version}")
    context.update_cursor(str(version))
    return dg.RunRequest(run_key=f"raw-v{version}", tags={"governed_ft/trigger": "raw_version",
                                                         "governed_ft/raw_version": str(version)})


def retraining_sensor(settings: Settings) -> dg.SensorDefinition:
    """The retraining sensor, on when the settings' policy is new_data:<records>."""
    policy = RetrainPolicy.parse(settings.retrain_policy)
    status = dg.DefaultSensorStatus.RUNNING if policy.kind == "new_data" else dg.DefaultSensorStatus.STOPPED

    @dg.sensor(job=retraining_job, minimum_interval_seconds=15 * 60, default_status=status)
    def retraining_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource):
        """Retrains only when the policy says so (GOVERNED_FT_RETRAIN_POLICY=new_data:<records>)."""
        if policy.kind != "new_data":
            return dg.SkipReason(f"retraining policy is {policy.kind}; this sensor acts only on new_data:<records>")
        state = _table_state(catalog, Principal.TRAIN, CURATED_TABLE)
        if state is None:
            return dg.SkipReason("the curated table is not registered yet")
        version, rows = state
        cursor = json.loads(context.cursor) if context.cursor else None
        trained = _last_metadata(context.instance, "finetuned_lora_model").get("source_version") is not None
        baseline = cursor["rows"] if cursor else (None if not trained else rows)
        if cursor is None and trained:
            context.update_cursor(json.dumps({"version": version, "rows": rows}))
            return dg.SkipReason(f"baseline set at {rows} curated records (version {version})")
        if not retrain_due(policy, baseline, rows):
            return dg.SkipReason(f"{rows - (baseline or 0)} new curated records since the last training; "
                                 f"the policy needs {policy.min_new_records}")
        context.update_cursor(json.dumps({"version": version, "rows": rows}))
        return dg.RunRequest(run_key=f"curated-v{version}", tags={"governed_ft/trigger": "retrain_policy"})

    return retraining_sensor
