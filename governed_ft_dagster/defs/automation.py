"""Declarative automation: the raw table's Delta version as an observation, curation and retraining as conditions."""

from __future__ import annotations

from typing import Optional

import dagster as dg

from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.defs.resources.catalog import CatalogResource
from governed_ft_dagster.governance import RAW_TABLE
from governed_ft_dagster.refresh import RetrainPolicy, retrain_due
from governed_ft_dagster.settings import Settings
from governed_ft_dagster.storage import delta_version, storage_options

RAW_TABLE_VERSION = dg.AssetKey("raw_table_version")
CURATED = dg.AssetKey("curated_training_table")
TRAINED = dg.AssetKey("finetuned_lora_model")
REGISTERED = dg.AssetKey("uc_model_version")
OBSERVE_CRON = "*/5 * * * *"
ABSENT = "absent"


@dg.multi_observable_source_asset(specs=[dg.AssetSpec(
    RAW_TABLE_VERSION,
    group_name="ingestion",
    kinds={"delta", "unitycatalog"},
    owners=["team:governed-ft"],
    automation_condition=dg.AutomationCondition.cron_tick_passed(OBSERVE_CRON),
    description="The raw Delta table's version as any writer left it, Dagster or not, read with the preprocess "
                "principal.",
)])
def raw_table_version(catalog: CatalogResource) -> dg.ObserveResult:
    client = catalog.client(Principal.PREPROCESS)
    name = catalog.table_name(RAW_TABLE)
    if not client.table_exists(name):
        return dg.ObserveResult(asset_key=RAW_TABLE_VERSION, data_version=dg.DataVersion(ABSENT),
                                metadata={"catalog_table": name})
    creds = client.temporary_table_credentials(name, "READ")
    version = delta_version(creds.location, storage_options(creds, catalog.endpoint()))
    return dg.ObserveResult(asset_key=RAW_TABLE_VERSION,
                            data_version=dg.DataVersion(ABSENT if version is None else str(version)),
                            metadata={"catalog_table": name, "delta_version": -1 if version is None else version})


CURATE_ON_NEW_RAW_DATA = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("curate when a raw partition is written or the raw table's version moves")

CHECK_WITH_TARGET = dg.AutomationCondition.any_deps_updated()


class EnoughNewCuratedRecords(dg.AutomationCondition):
    """True when the latest curated table has enough more records than the one the latest adapter was trained on."""

    def __init__(self, min_new_records: int):
        self.min_new_records = min_new_records

    @property
    def name(self) -> str:
        return f"at least {self.min_new_records} new curated records since the last training"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        instance = context.asset_graph_view.instance
        policy = RetrainPolicy("new_data", min_new_records=self.min_new_records)
        due = retrain_due(policy, _trained_rows(instance), _rows(_latest(instance, CURATED)) or 0)
        return dg.AutomationResult(context=context,
                                   true_subset=context.candidate_subset if due else context.get_empty_subset())


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> Optional[dg.EventLogRecord]:
    records = instance.fetch_materializations(key, limit=1).records
    return records[0] if records else None


def _rows(record: Optional[dg.EventLogRecord]) -> Optional[int]:
    value = record.asset_materialization.metadata.get("rows_out") if record else None
    return None if value is None else int(value.value)


def _trained_rows(instance: dg.DagsterInstance) -> Optional[int]:
    """Records of the curated materialization the latest adapter recorded reading; None before any training."""
    trained = _latest(instance, TRAINED)
    provenance = dg.DataProvenance.from_tags(trained.asset_materialization.tags or {}) if trained else None
    pointer = provenance.input_storage_ids.get(CURATED) if provenance else None
    if pointer is None:
        return None
    read = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=CURATED, storage_ids=[pointer]),
                                           limit=1).records
    return _rows(read[0]) if read else None


def retraining_condition(policy: RetrainPolicy) -> Optional[dg.AutomationCondition]:
    """The retraining policy as a condition on the adapter; None for on_demand."""
    if policy.kind == "schedule":
        return (dg.AutomationCondition.on_cron(policy.cron)
                & dg.AutomationCondition.all_deps_blocking_checks_passed()).with_label(f"retrain on {policy.cron}")
    if policy.kind == "new_data":
        return (dg.AutomationCondition.any_deps_updated().since_last_handled()
                & EnoughNewCuratedRecords(policy.min_new_records)
                & dg.AutomationCondition.all_deps_blocking_checks_passed()
                & ~dg.AutomationCondition.any_deps_in_progress()
                & ~dg.AutomationCondition.in_progress()
                ).with_label(f"retrain after {policy.min_new_records} new curated records")
    return None


REGISTER_NEW_ADAPTERS = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("register each new adapter (the gate blocks a failed one)")


def with_automation(assets: list[dg.AssetsDefinition], settings: Settings) -> list[dg.AssetsDefinition]:
    """The assets with the conditions of the curation and of the settings' retraining policy."""
    retrain = retraining_condition(RetrainPolicy.parse(settings.retrain_policy))
    conditions = {CURATED: CURATE_ON_NEW_RAW_DATA, TRAINED: retrain, REGISTERED: REGISTER_NEW_ADAPTERS if retrain else None}

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        condition = conditions.get(spec.key)
        return spec.replace_attributes(automation_condition=condition) if condition is not None else spec

    return [a.map_asset_specs(attach) if set(a.keys) & set(conditions) else a for a in assets]


def automation_sensors(settings: Settings) -> list[dg.AutomationConditionSensorDefinition]:
    """Curation off until turned on; retraining on exactly when the settings choose a policy other than on_demand."""
    policy = RetrainPolicy.parse(settings.retrain_policy)
    retraining_status = (dg.DefaultSensorStatus.STOPPED if policy.kind == "on_demand"
                         else dg.DefaultSensorStatus.RUNNING)
    return [
        dg.AutomationConditionSensorDefinition(
            "curation_automation", target=dg.AssetSelection.assets(RAW_TABLE_VERSION, CURATED),
            default_status=dg.DefaultSensorStatus.STOPPED,
            description="Observes the raw table's Delta version every 5 minutes and curates when it moved or a raw "
                        "partition was written."),
        dg.AutomationConditionSensorDefinition(
            "retraining_automation", target=dg.AssetSelection.assets(TRAINED, REGISTERED),
            default_status=retraining_status, use_user_code_server=policy.kind == "new_data",
            description=f"Retrains per GOVERNED_FT_RETRAIN_POLICY ({settings.retrain_policy}) and registers each "
                        "adapter that passes its gate."),
    ]
