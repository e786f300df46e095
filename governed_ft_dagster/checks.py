"""Asset checks: the data contracts of the raw and curated tables, and the adapter's quality gate."""

import dagster as dg

from governed_ft_dagster import quality
from governed_ft_dagster.assets.failures import readable_failures
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.governance import CURATED_TABLE, RAW_TABLE
from governed_ft_dagster.resources.catalog import CatalogResource

MIN_EXTRACTED_SHARE = 0.5
TEXT_CHARS = (200, 2_000_000)
TOKEN_BUDGET = 1024
RAW = dg.AssetKey("raw_risk_factors")
CURATED = dg.AssetKey("curated_training_table")
MODEL = dg.AssetKey("finetuned_lora_model")


def _result(verdict: quality.Verdict, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=verdict.passed, severity=severity, description=verdict.description,
                               metadata={k: dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v
                                         for k, v in verdict.metadata.items()})


def _raw_rows(catalog: CatalogResource) -> list[dict]:
    with readable_failures():
        table, _ = catalog.read_table(Principal.INGEST, RAW_TABLE,
                                      ["accession_number", "status", "risk_factors_text"])
    return table.to_pylist()


@dg.asset_check(asset=RAW, description="No accession number appears twice in the raw table.")
def raw_accessions_unique(catalog: CatalogResource) -> dg.AssetCheckResult:
    return _result(quality.unique_accessions(_raw_rows(catalog)))


@dg.asset_check(asset=RAW, description=f"At least {MIN_EXTRACTED_SHARE:.0%} of filings have an extracted Risk Factors section.")
def raw_extracted_share(catalog: CatalogResource) -> dg.AssetCheckResult:
    return _result(quality.extracted_share(_raw_rows(catalog), MIN_EXTRACTED_SHARE))


@dg.asset_check(asset=RAW, description="Extracted sections are neither fragments nor whole documents.")
def raw_text_lengths(catalog: CatalogResource) -> dg.AssetCheckResult:
    return _result(quality.text_lengths_in_range(_raw_rows(catalog), *TEXT_CHARS))


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=CURATED, description=text) for name, text in (
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


@dg.asset_check(asset=MODEL, blocking=True,
                description="The adapter's validation loss is below the base model's on the same validation set.")
def adapter_beats_base_model(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(MODEL)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    value = lambda key: float(metadata[key].value) if key in metadata and metadata[key].value is not None else None
    return _result(quality.adapter_beats_base(value("eval_loss"), value("base_eval_loss")))


all_checks = [raw_accessions_unique, raw_extracted_share, raw_text_lengths, curated_contracts, adapter_beats_base_model]
