"""Asset checks: the data contracts of the raw and curated tables, and the adapter's quality gate."""

import dagster as dg
from pydantic import Field

from governed_ft_dagster import quality
from governed_ft_dagster.defs.assets.failures import readable_failures
from governed_ft_dagster.defs.assets.raw import LISTED_METADATA
from governed_ft_dagster.defs.automation import CHECK_WITH_TARGET
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.governance import CURATED_TABLE, OWNERS, RAW_TABLE
from governed_ft_dagster.retention import DEFAULT_WARN_WITHIN_DAYS
from governed_ft_dagster.defs.provenance import data_version
from governed_ft_dagster.defs.resources.catalog import CatalogResource

MIN_LOCATED_SHARE = 0.8
TEXT_CHARS = (200, 2_000_000)
TOKEN_BUDGET = 1024
RAW = dg.AssetKey("raw_risk_factors")
CURATED = dg.AssetKey("curated_training_table")
MODEL = dg.AssetKey("finetuned_lora_model")
REGISTERED = dg.AssetKey("uc_model_version")


def _result(verdict: quality.Verdict, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=verdict.passed, severity=severity, description=verdict.description,
                               metadata={k: dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v
                                         for k, v in verdict.metadata.items()})


def _partition_rows(context: dg.AssetCheckExecutionContext, catalog: CatalogResource) -> tuple[str, list[dict]]:
    """The raw rows of the partition being checked, read once with credentials vended to the table's owner."""
    keys = context.partition_key.keys_by_dimension
    with readable_failures():
        table, _ = catalog.read_table(Principal.INGEST, RAW_TABLE, ["accession_number", "status", "risk_factors_text"],
                                      where={"fiscal_year": int(keys["fiscal_year"]), "form_type": keys["form_type"]})
    return context.partition_key, table.to_pylist()


def _for_partition(partition: str, verdict: quality.Verdict) -> dg.AssetCheckResult:
    result = _result(verdict)
    return dg.AssetCheckResult(passed=result.passed, severity=result.severity,
                               description=f"{partition}: {result.description}",
                               metadata={**result.metadata, "partition": partition})


def raw_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The raw table's contracts, each evaluated on the partition just written."""

    @dg.asset_check(asset=RAW, partitions_def=partitions_def,
                    description="No accession number appears twice in the partition.")
    def raw_accessions_unique(context: dg.AssetCheckExecutionContext,
                              catalog: CatalogResource) -> dg.AssetCheckResult:
        partition, rows = _partition_rows(context, catalog)
        return _for_partition(partition, quality.unique_accessions(rows))

    @dg.asset_check(asset=RAW, partitions_def=partitions_def,
                    description=f"At least {MIN_LOCATED_SHARE:.0%} of the partition's filings have their Risk Factors "
                                "section located (extracted, no material changes, or incorporated by reference).")
    def raw_located_share(context: dg.AssetCheckExecutionContext, catalog: CatalogResource) -> dg.AssetCheckResult:
        partition, rows = _partition_rows(context, catalog)
        return _for_partition(partition, quality.located_share(rows, MIN_LOCATED_SHARE))

    @dg.asset_check(asset=RAW, partitions_def=partitions_def,
                    description="Extracted sections in the partition are neither fragments nor whole documents.")
    def raw_text_lengths(context: dg.AssetCheckExecutionContext, catalog: CatalogResource) -> dg.AssetCheckResult:
        partition, rows = _partition_rows(context, catalog)
        return _for_partition(partition, quality.text_lengths_in_range(rows, *TEXT_CHARS))

    @dg.asset_check(asset=RAW, partitions_def=partitions_def,
                    description="Every filing the partition's run listed from EDGAR has a row in the raw table.")
    def raw_rows_cover_listing(context: dg.AssetCheckExecutionContext,
                               catalog: CatalogResource) -> dg.AssetCheckResult:
        partition, rows = _partition_rows(context, catalog)
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW, asset_partitions=[partition]), limit=1).records
        metadata = records[0].asset_materialization.metadata if records else {}
        if LISTED_METADATA not in metadata:
            return _for_partition(partition, quality.Verdict(
                False, f"no materialization of {partition} records its listing ('{LISTED_METADATA}'); "
                       "materialize the partition again"))
        return _for_partition(partition, quality.rows_cover_listing(rows, metadata[LISTED_METADATA].value))

    return [raw_accessions_unique, raw_located_share, raw_text_lengths, raw_rows_cover_listing]


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=CURATED, description=text, blocking=True,
                             automation_condition=CHECK_WITH_TARGET) for name, text in (
        ("curated_schema", "The curated table has the training record columns."),
        ("curated_messages_complete", "Every record has system, user and assistant messages with content."),
        ("curated_token_budget", f"Every record fits in {TOKEN_BUDGET} tokens of the base tokenizer."),
        ("curated_split_by_company", "No company is in both the train and the validation split."),
        ("curated_count_against_raw", "The record count is consistent with the raw table's extracted filings."),
    )],
)
def curated_contracts(catalog: CatalogResource):
    """The curated table's contracts, read once with credentials vended to its owner."""
    with readable_failures():
        curated, _ = catalog.read_table(Principal.PREPROCESS, CURATED_TABLE)
        raw, _ = catalog.read_table(Principal.INGEST, RAW_TABLE, ["status"])
    rows = curated.to_pylist()
    extracted = sum(1 for status in raw.column("status").to_pylist() if status == "extracted")
    verdicts = {
        "curated_schema": quality.curated_schema(curated.column_names),
        "curated_messages_complete": quality.no_empty_messages(rows),
        "curated_token_budget": quality.within_token_budget(rows, TOKEN_BUDGET),
        "curated_split_by_company": quality.companies_in_one_split(rows),
        "curated_count_against_raw": quality.curated_count_against_raw(len(rows), extracted),
    }
    for name, verdict in verdicts.items():
        result = _result(verdict)
        yield dg.AssetCheckResult(check_name=name, asset_key=CURATED, passed=result.passed,
                                  severity=result.severity, description=result.description, metadata=result.metadata)


class AdapterGateConfig(dg.Config):
    """The quality gate's threshold."""

    min_relative_improvement: float = Field(
        default=quality.DEFAULT_MIN_RELATIVE_IMPROVEMENT,
        description="Share by which the adapter must lower the base model's validation loss (0.01 = 1%).")


@dg.asset_check(asset=MODEL, blocking=True, automation_condition=CHECK_WITH_TARGET,
                description="The adapter lowers the base model's validation loss on the same validation set by at "
                            "least the configured share (default "
                            f"{quality.DEFAULT_MIN_RELATIVE_IMPROVEMENT:.0%}).")
def adapter_beats_base_model(context: dg.AssetCheckExecutionContext, config: AdapterGateConfig) -> dg.AssetCheckResult:
    records = context.instance.fetch_materializations(MODEL, limit=1).records
    if not records:
        return _result(quality.Verdict(False, f"{MODEL.to_user_string()} has no materialization to evaluate"))
    record = records[0]
    metadata = record.asset_materialization.metadata
    value = lambda key: float(metadata[key].value) if key in metadata and metadata[key].value is not None else None
    verdict = quality.adapter_beats_base(value("eval_loss"), value("base_eval_loss"), config.min_relative_improvement)
    result = _result(verdict)
    return dg.AssetCheckResult(passed=result.passed, severity=result.severity, description=result.description,
                               metadata={**result.metadata, "adapter_storage_id": record.storage_id,
                                         "adapter_data_version": data_version(record) or ""})


class RetentionCheckConfig(dg.Config):
    """How early the retention check warns."""

    warn_within_days: float = Field(default=DEFAULT_WARN_WITHIN_DAYS,
                                    description="Warn when a table version a registered model version was trained on "
                                                "may be removed within this many days.")


@dg.asset_check(asset=REGISTERED, automation_condition=CHECK_WITH_TARGET,
                description="Every table version a registered model version was trained on (curated and raw) stays "
                            "readable for longer than the warning window under its table's retention properties.")
def training_data_retained(context: dg.AssetCheckExecutionContext, config: RetentionCheckConfig,
                           catalog: CatalogResource) -> dg.AssetCheckResult:
    import datetime as dt

    from governed_ft_dagster.retention import version_retention
    from governed_ft_dagster.storage import commit_times, storage_options, table_configuration

    used = registered_table_versions(context.instance)
    registered = {model for versions in used.values() for models in versions.values() for model in models}
    now = dt.datetime.now(dt.timezone.utc)
    owners = {catalog.table_name(relative): principal for relative, principal in OWNERS.items()}
    rows, at_risk = [], []
    with readable_failures():
        for table, versions in sorted(used.items()):
            creds = catalog.client(owners.get(table, Principal.PREPROCESS)).temporary_table_credentials(table, "READ")
            options = storage_options(creds, catalog.endpoint())
            times, configuration = commit_times(creds.location, options), table_configuration(creds.location, options)
            for version, model_versions in sorted(versions.items()):
                kept = version_retention(table, version, times, configuration)
                days = kept.days_left(now)
                rows.append({"table": table, "version": version, "model_versions": sorted(model_versions),
                             "expires": kept.expires.isoformat() if kept.expires else None,
                             "days_left": None if days is None else round(days, 1), "why": kept.reason})
                if days is not None and days <= config.warn_within_days:
                    at_risk.append(f"{table}@{version} ({', '.join(sorted(model_versions))}): "
                                   f"{'gone' if days <= 0 else f'{days:.1f} days left'}, {kept.reason}")
    description = (f"{len(at_risk)} table versions that registered model versions were trained on may be removed "
                   f"within {config.warn_within_days:g} days: {'; '.join(at_risk[:5])}" if at_risk else
                   f"the {len(rows)} table versions that {len(registered)} registered model versions were trained "
                   f"on stay readable beyond {config.warn_within_days:g} days")
    return dg.AssetCheckResult(passed=not at_risk, severity=dg.AssetCheckSeverity.WARN, description=description,
                               metadata={"versions": dg.MetadataValue.json(rows),
                                         "warn_within_days": config.warn_within_days})


def registered_table_versions(instance: dg.DagsterInstance) -> dict[str, dict[int, set[str]]]:
    """Table → Delta version → the registered model versions trained on it, from every registration recorded."""
    from governed_ft_dagster.registry import TAG_SOURCE_TABLES

    used: dict[str, dict[int, set[str]]] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(REGISTERED, limit=100, cursor=cursor)
        for record in page.records:
            metadata = record.asset_materialization.metadata
            tags = metadata["version_tags"].value if "version_tags" in metadata else {}
            model = f"{metadata['model_name'].value} v{metadata['model_version'].value}" if "model_name" in metadata \
                else "?"
            for item in str(tags.get(TAG_SOURCE_TABLES) or "").split(","):
                table, _, version = item.rpartition("@")
                if table and version.isdigit():
                    used.setdefault(table, {}).setdefault(int(version), set()).add(model)
        if not page.has_more:
            return used
        cursor = page.cursor


def all_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """Every check of the graph, the raw ones over the raw asset's partitions."""
    return [*raw_checks(partitions_def), curated_contracts, adapter_beats_base_model, training_data_retained]
