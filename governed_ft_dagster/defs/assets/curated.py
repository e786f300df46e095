"""curated_training_table: the Spark job turns the raw table into instruction records in the curated schema."""

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import dagster as dg
from pydantic import Field

from governed_ft_dagster.defs.assets.failures import readable_failures
from governed_ft_dagster.defs.assets.raw import RAW_KEY
from governed_ft_dagster.defs.automation import RAW_TABLE_VERSION
from governed_ft_dagster.catalog.base import CatalogError, Principal, Privilege
from governed_ft_dagster.governance import CURATED_TABLE, GRANTS, RAW_TABLE
from governed_ft_dagster.job_code import PREPROCESS_SCRIPT, PY_FILES_SUFFIX, job_script, project_wheel
from governed_ft_dagster.provision.staging import TOKENIZER_ALIAS
from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.defs.resources.catalog import CatalogResource
from governed_ft_dagster.defs.resources.spark_jobs import SparkJobResource, SparkJobSpec
from governed_ft_dagster.storage import delta_version, storage_options

JOB_SCRIPT = job_script(PREPROCESS_SCRIPT)
CURATED_PREFIX = "curated/tables/risk_factor_instructions"


class CuratedTrainingTableConfig(dg.Config):
    """Run parameters of the curation job."""

    max_tokens: int = Field(default=1024, description="Token budget of one chat-templated record (the context length).")
    validation_fraction: float = Field(default=0.1, description="Share of companies held out for validation.")
    seed: int = Field(default=0, description="Seed of the company-level train/validation split.")


@dg.asset(
    deps=[dg.AssetDep(RAW_KEY, partition_mapping=dg.AllPartitionMapping()), RAW_TABLE_VERSION],
    group_name="preprocessing",
    kinds={"spark", "delta", "unitycatalog"},
    owners=["team:governed-ft"],
    tags={"principal": Principal.PREPROCESS.value},
    output_required=False,
)
def curated_training_table(context: dg.AssetExecutionContext, config: CuratedTrainingTableConfig,
                           catalog: CatalogResource, spark: SparkJobResource,
                           base_model: BaseModelResource) -> Iterator[dg.MaterializeResult]:
    """Instruction-style training records within the token budget, split by company, in the curated schema."""
    with readable_failures():
        result = _materialize(context, config, catalog, spark, base_model)
    if result is not None:
        yield result


def _materialize(context: dg.AssetExecutionContext, config: CuratedTrainingTableConfig, catalog: CatalogResource,
                 spark: SparkJobResource, base_model: BaseModelResource) -> Optional[dg.MaterializeResult]:
    """The job's materialization, or None (no job, no event) when the table is up to date."""
    source, target = catalog.table_name(RAW_TABLE), catalog.table_name(CURATED_TABLE)
    preflight(catalog)
    tokenizer_dir = base_model.tokenizer_path()
    fingerprint = _fingerprint(config, tokenizer_dir)
    if _up_to_date(context, catalog, fingerprint):
        return None
    args = [
        *catalog.job_access(Principal.PREPROCESS).as_args(),
        "--source-table", source, "--target-table", target, "--target-location", catalog.location(CURATED_PREFIX),
        "--tokenizer-dir", TOKENIZER_ALIAS, "--run-id", context.run.run_id,
        "--max-tokens", str(config.max_tokens), "--validation-fraction", str(config.validation_fraction),
        "--seed", str(config.seed), "--storage-region", catalog.storage_region,
    ]
    for grantee in table_readers(catalog, CURATED_TABLE):
        args += ["--grant-select-to", grantee]
    for key, value in sorted(catalog.table_properties().items()):
        args += ["--table-property", f"{key}={value}"]
    if catalog.s3_endpoint_url:
        args += ["--s3-endpoint-url", catalog.s3_endpoint_url]
    with tempfile.TemporaryDirectory(prefix="governed-ft-py-files-") as tmp:
        code = project_wheel(Path(tmp), PY_FILES_SUFFIX)
        job = spark.run(context, SparkJobSpec(script=str(JOB_SCRIPT), args=args, py_files=[str(code)],
                                              archives={TOKENIZER_ALIAS: tokenizer_dir},
                                              name="preprocess_risk_factors"))
    reported = job.materialize_result
    if reported is None:
        raise dg.Failure(description=(f"the Spark job {job.kind} {job.run_id} succeeded but reported no "
                                      f"materialization through Pipes; see its log: {job.properties}"))
    metadata = dict(reported.metadata)
    for name in ("delta_version", "source_version"):
        if name not in reported.metadata:
            raise dg.Failure(description=f"the Spark job {job.run_id} did not report {name}")
    delta_version = int(_value(reported.metadata["delta_version"]))
    metadata.update({
        "catalog_table": dg.MetadataValue.text(target),
        "delta_version": dg.MetadataValue.int(delta_version),
        "source_table": dg.MetadataValue.text(source),
        "source_version": dg.MetadataValue.int(int(_value(reported.metadata["source_version"]))),
        "job_run_kind": dg.MetadataValue.text(job.kind),
        "job_run_id": dg.MetadataValue.text(job.run_id),
        "job_properties": dg.MetadataValue.json(dict(job.properties)),
        "inputs_fingerprint": dg.MetadataValue.text(fingerprint),
        **({"catalog_ui": dg.MetadataValue.url(catalog.ui_url(target))} if catalog.ui_url(target) else {}),
    })
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(str(delta_version)))


def _fingerprint(config: CuratedTrainingTableConfig, tokenizer_dir: str) -> str:
    """What, besides the raw table's version, decides the curated rows: run config, job code, tokenizer."""
    digest = hashlib.sha256(json.dumps(config.model_dump(), sort_keys=True).encode())
    digest.update(JOB_SCRIPT.read_bytes())
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("preprocess").glob("*.py")):
        digest.update(path.read_bytes())
    for path in sorted(Path(tokenizer_dir).glob("tokenizer*")) if Path(tokenizer_dir).is_dir() else []:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _up_to_date(context: dg.AssetExecutionContext, catalog: CatalogResource, fingerprint: str) -> bool:
    """Whether the last materialization still holds: same job inputs, raw and curated tables at its versions."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    last = event.asset_materialization.metadata if event and event.asset_materialization else {}
    if _value(last.get("inputs_fingerprint")) != fingerprint:
        return False
    client = catalog.client(Principal.PREPROCESS)
    versions = {}
    for relative, key in ((RAW_TABLE, "source_version"), (CURATED_TABLE, "delta_version")):
        name = catalog.table_name(relative)
        if not client.table_exists(name):
            return False
        creds = client.temporary_table_credentials(name, "READ")
        versions[key] = delta_version(creds.location, storage_options(creds, catalog.endpoint()))
    if any(versions[key] != int(_value(last[key])) for key in versions):
        return False
    context.log.info(f"curated table is up to date: raw version {versions['source_version']} and the job inputs "
                     f"are unchanged since run {_value(last['job_run_id'])}; no job started, nothing materialized")
    return True


def preflight(catalog: CatalogResource) -> None:
    """The preprocess principal's privileges, checked before any job starts."""
    raw_schema, curated_schema = catalog.table_name("raw"), catalog.table_name("curated")
    raw_table = catalog.table_name(RAW_TABLE)
    catalog.preflight(Principal.PREPROCESS, [
        ("catalog", catalog.catalog, Privilege.USE_CATALOG),
        ("schema", raw_schema, Privilege.USE_SCHEMA),
    ])
    if not catalog.client(Principal.PREPROCESS).table_exists(raw_table):
        raise CatalogError(f"table {raw_table} is not registered in the catalog; materialize raw_risk_factors first")
    catalog.preflight(Principal.PREPROCESS, [
        ("table", raw_table, Privilege.SELECT),
        ("schema", curated_schema, Privilege.USE_SCHEMA),
        ("schema", curated_schema, Privilege.CREATE_TABLE),
        ("schema", curated_schema, Privilege.MODIFY),
    ])


def table_readers(catalog: CatalogResource, relative_table: str) -> list[str]:
    """Catalog names of the principals the design grants SELECT on the table."""
    return [catalog.principal_name(g.principal) for g in GRANTS
            if g.securable_type == "table" and g.name == relative_table and g.privilege == Privilege.SELECT]


def _value(entry):
    return entry.value if isinstance(entry, dg.MetadataValue) else entry
