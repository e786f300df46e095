"""raw_risk_factors: EDGAR filings, Risk Factors extracted, landed as JSON and merged into the raw Delta table."""


from typing import Optional

import dagster as dg
from pydantic import Field

from governed_ft_dagster.defs.assets.failures import readable_failures
from governed_ft_dagster.catalog.base import Principal, Privilege
from governed_ft_dagster.edgar.extract import DEFAULT_MAX_BYTES
from governed_ft_dagster.edgar.landing import LANDING_PREFIX
from governed_ft_dagster.edgar.universe import load_universe
from governed_ft_dagster.governance import RAW_TABLE
from governed_ft_dagster.ingest import RawTarget, ingest
from governed_ft_dagster.defs.resources.catalog import CatalogResource
from governed_ft_dagster.defs.resources.edgar import EDGAR_POOL, EdgarResource


class RawRiskFactorsConfig(dg.Config):
    """Run parameters of the EDGAR ingestion."""

    universe: Optional[str] = Field(default=None, description="'sp500', a ticker file, or comma-separated tickers; default: the source's own universe.")
    include_amendments: bool = Field(default=True, description="Also ingest 10-K/A and 10-Q/A (flagged).")
    max_document_mb: int = Field(default=DEFAULT_MAX_BYTES // (1024 * 1024), description="Larger documents become error rows without parsing.")


RAW_KEY = dg.AssetKey("raw_risk_factors")
INGEST_RUN_KIND = "EdgarIngestRun"
LISTED_METADATA = "listed_accessions"


def raw_risk_factors_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The raw asset over the given partitions (the settings' fiscal years by form type)."""

    @dg.asset(
        name=RAW_KEY.path[-1],
        partitions_def=partitions_def,
        group_name="ingestion",
        kinds={"python", "delta", "unitycatalog"},
        owners=["team:governed-ft"],
        tags={"principal": Principal.INGEST.value},
        pool=EDGAR_POOL,
    )
    def raw_risk_factors(context: dg.AssetExecutionContext, config: RawRiskFactorsConfig, catalog: CatalogResource,
                         edgar: EdgarResource) -> dg.MaterializeResult:
        """Risk Factors sections of 10-K/10-Q filings, one row per filing, in the raw schema."""
        with readable_failures():
            return _materialize(context, config, catalog, edgar)

    return raw_risk_factors


def _materialize(context: dg.AssetExecutionContext, config: RawRiskFactorsConfig, catalog: CatalogResource,
                 edgar: EdgarResource) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    fiscal_year, form_type = int(keys["fiscal_year"]), keys["form_type"]
    table = catalog.table_name(RAW_TABLE)
    raw_schema = catalog.table_name("raw")
    catalog.preflight(Principal.INGEST, [
        ("catalog", catalog.catalog, Privilege.USE_CATALOG),
        ("schema", raw_schema, Privilege.USE_SCHEMA),
        ("schema", raw_schema, Privilege.CREATE_TABLE),
        ("schema", raw_schema, Privilege.MODIFY),
    ])
    tickers = load_universe(config.universe) if config.universe else edgar.default_universe()
    target = RawTarget(table=table, table_location=catalog.location("raw/tables/risk_factors"),
                       landing_root=catalog.location(LANDING_PREFIX), endpoint=catalog.endpoint(),
                       table_properties=tuple(sorted(catalog.table_properties().items())))
    report = ingest(edgar.filing_source(), tickers, form_type, fiscal_year, catalog.client(Principal.INGEST), target,
                    context.log.info, include_amendments=config.include_amendments,
                    max_bytes=config.max_document_mb * 1024 * 1024)
    granted = catalog.grant_table_readers(Principal.INGEST, RAW_TABLE) if report.delta_version is not None else []
    for line in granted:
        context.log.info(f"granted {line}")
    for reject in report.rejects[:50]:
        context.log.warning(f"rejected {reject['key']}: {reject['reason']}")
    if len(report.rejects) > 50:
        context.log.warning(f"... and {len(report.rejects) - 50} more rejects (see the 'rejects_sample' metadata)")
    if incomplete := report.incomplete(context.partition_key, table):
        raise dg.Failure(description=incomplete, allow_retries=False, metadata={
            "filings_in": dg.MetadataValue.int(report.filings_in),
            "rows": dg.MetadataValue.int(report.rows),
            "rejects": dg.MetadataValue.int(len(report.rejects)),
            "rejects_sample": dg.MetadataValue.json(report.rejects[:100]),
            "delta_version": dg.MetadataValue.int(report.delta_version if report.delta_version is not None else -1),
        })
    origin = edgar.origin()
    job_properties = {"partition": context.partition_key, "form_type": form_type, "fiscal_year": fiscal_year,
                      "companies": len(tickers), "filings_listed": report.filings_in, "filings_fetched": report.fetched,
                      "rows_landed": report.rows, "rows_inserted": report.inserted, "rows_updated": report.updated,
                      "superseded": len(report.superseded), "source_system": origin["name"],
                      "source_url": origin["properties"]["url"], "landing_root": target.landing_root}
    written = report.delta_version if report.delta_version is not None and report.wrote else -1
    return dg.MaterializeResult(metadata={
        "catalog_table": dg.MetadataValue.text(table),
        "delta_version": dg.MetadataValue.int(report.delta_version if report.delta_version is not None else -1),
        "delta_version_written": dg.MetadataValue.int(written),
        "job_run_kind": dg.MetadataValue.text(INGEST_RUN_KIND),
        "job_run_id": dg.MetadataValue.text(f"{context.run.run_id}:{context.partition_key}"),
        "job_properties": dg.MetadataValue.json(job_properties),
        "external_source": dg.MetadataValue.json(origin),
        "filings_fetched": dg.MetadataValue.int(report.fetched),
        "superseded": dg.MetadataValue.json(report.superseded),
        "filings_in": dg.MetadataValue.int(report.filings_in),
        "rows": dg.MetadataValue.int(report.rows),
        "rejects": dg.MetadataValue.int(len(report.rejects)),
        "rejects_sample": dg.MetadataValue.json(report.rejects[:100]),
        "rows_by_status": dg.MetadataValue.json(dict(sorted(report.rows_by_status.items()))),
        "rows_inserted": dg.MetadataValue.int(report.inserted),
        "rows_updated": dg.MetadataValue.int(report.updated),
        "unknown_tickers": dg.MetadataValue.json(report.unknown_tickers),
        LISTED_METADATA: dg.MetadataValue.json(report.listed),
        "landing_root": dg.MetadataValue.path(target.landing_root),
        **_link(catalog.ui_url(table)),
    }, data_version=dg.DataVersion(str(report.delta_version)) if report.delta_version is not None else None)


def _link(url: Optional[str]) -> dict:
    return {"catalog_ui": dg.MetadataValue.url(url)} if url else {}
