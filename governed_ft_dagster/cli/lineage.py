"""`governed-ft lineage`: read a model version's lineage records back and print its upstream chain."""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Iterable, Mapping

import click

from governed_ft_dagster.catalog.base import CatalogError, Principal
from governed_ft_dagster.lineage.derive import (
    Endpoint,
    ExternalMetadata,
    LineageError,
    LineageGraph,
    Relationship,
    SYSTEM_TYPE,
    upstream_chain,
)
from governed_ft_dagster.lineage.facts import SOURCE_DATASET_TYPE
from governed_ft_dagster.provision.policies import StackConfig
from governed_ft_dagster.settings import Settings, SettingsError, load_settings
from governed_ft_dagster.stack.errors import StackError

_KIND_BY_DATASET_TYPE = {"TABLE": "table", "MODEL": "model_version"}


def graph_from_openlineage(events: Iterable[Mapping[str, Any]]) -> LineageGraph:
    """The lineage records written as OpenLineage run events, with the versions read and written."""
    metadata: dict[str, ExternalMetadata] = {}
    relationships: dict[str, Relationship] = {}
    for event in events:
        tags = {t["key"]: t["value"] for t in event.get("run", {}).get("facets", {}).get("tags", {}).get("tags", [])}
        name = tags.pop("external_metadata_name", None)
        if not name:
            continue
        asset_key = tags.get("asset_key") or event["job"]["name"]
        kind, run_id = tags.get("job_kind", ""), tags.get("run_id", "")
        description = f"{kind} {run_id} materializing asset {asset_key}"
        metadata[name] = ExternalMetadata(name, SYSTEM_TYPE, kind, run_id, asset_key, description,
                                          dict(sorted(tags.items())))
        job = Endpoint("external_metadata", name, asset_key=asset_key)
        partition = tags.get("partition")
        for dataset in event.get("inputs", []):
            if _dataset_type(dataset) == SOURCE_DATASET_TYPE:
                origin = _source_metadata(dataset)
                metadata.setdefault(origin.name, origin)
                props = {"job_asset_key": asset_key, "source_system": origin.name, "direction": "input",
                         "partition": partition}
                _keep(relationships, Relationship(Endpoint("external_metadata", origin.name), job, _strings(props)))
                continue
            source = _dataset_endpoint(dataset)
            props = {"job_asset_key": asset_key, "direction": "input", "partition": partition,
                     _version_property(source, "read"): source.version}
            _keep(relationships, Relationship(source, job, _strings(props)))
        for dataset in event.get("outputs", []):
            target = _dataset_endpoint(dataset)
            props = {"job_asset_key": asset_key, "direction": "output", "partition": partition,
                     _version_property(target, "written"): target.version}
            _keep(relationships, Relationship(job, target, _strings(props)))
    return LineageGraph(sorted(metadata.values(), key=lambda m: m.name),
                        sorted(relationships.values(), key=lambda r: r.key))


def _dataset_type(dataset: Mapping[str, Any]) -> str:
    return dataset.get("facets", {}).get("datasetType", {}).get("datasetType", "TABLE")


def _source_metadata(dataset: Mapping[str, Any]) -> ExternalMetadata:
    """The external-metadata record of a source system, from the input dataset it was written as."""
    entity_type = dataset.get("facets", {}).get("datasetType", {}).get("subType") or "DataSource"
    props = {"source_system": dataset["name"], "url": dataset.get("namespace", "")}
    return ExternalMetadata(dataset["name"], SYSTEM_TYPE, entity_type, "", "", f"{entity_type} {dataset['name']}",
                            props, role="source")


def _dataset_endpoint(dataset: Mapping[str, Any]) -> Endpoint:
    facets = dataset.get("facets", {})
    kind = _KIND_BY_DATASET_TYPE.get(facets.get("datasetType", {}).get("datasetType", "TABLE"), "table")
    return Endpoint(kind, dataset["name"], facets.get("version", {}).get("datasetVersion"))  # type: ignore[arg-type]


def _version_property(endpoint: Endpoint, verb: str) -> str:
    return f"delta_version_{verb}" if endpoint.kind == "table" else "model_version"


def _strings(props: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in sorted(props.items()) if v is not None}


def _keep(relationships: dict[str, Relationship], relationship: Relationship) -> None:
    relationships.setdefault(relationship.key, relationship)


def latest_openlineage_version(events: Iterable[Mapping[str, Any]], model_full_name: str) -> str | None:
    """The highest version of the model among the events' outputs."""
    versions = [
        dataset.get("facets", {}).get("version", {}).get("datasetVersion")
        for event in events for dataset in event.get("outputs", [])
        if dataset.get("name", "").lower() == model_full_name.lower()
        and dataset.get("facets", {}).get("datasetType", {}).get("datasetType") == "MODEL"
    ]
    return _highest(v for v in versions if v)


def graph_from_databricks(workspace: Any, model_full_name: str, version: str) -> LineageGraph:
    """Walk Unity Catalog's external lineage upstream from the model version, following the table versions read."""
    from databricks.sdk.errors import NotFound
    from databricks.sdk.service import catalog as uc

    from governed_ft_dagster.lineage.sinks import lineage_object

    metadata: dict[str, ExternalMetadata] = {}
    relationships: dict[str, Relationship] = {}
    frontier = [Endpoint("model_version", model_full_name, str(version))]
    seen: set[str] = set()
    while frontier:
        endpoint = frontier.pop(0)
        if endpoint.ref in seen:
            continue
        seen.add(endpoint.ref)
        if endpoint.kind == "external_metadata":
            try:
                stored = workspace.external_metadata.get_external_metadata(endpoint.name)
            except NotFound:
                stored = None
            if stored is not None:
                props = dict(stored.properties or {})
                metadata[endpoint.name] = ExternalMetadata(
                    endpoint.name, stored.system_type.value if stored.system_type else SYSTEM_TYPE,
                    stored.entity_type or "", props.get("run_id", ""), props.get("asset_key", ""),
                    stored.description or "", dict(sorted(props.items())),
                    role="job_run" if props.get("run_id") else "source")
        listed = workspace.external_lineage.list_external_lineage_relationships(
            object_info=lineage_object(endpoint), lineage_direction=uc.LineageDirection.UPSTREAM)
        for info in listed:
            edge = info.external_lineage_info
            if edge is None or edge.source is None or edge.target is None:
                continue
            props = dict(edge.properties or {})
            source = _stored_endpoint(edge.source, props, "source")
            target = _stored_endpoint(edge.target, props, "target")
            if endpoint.kind == "table" and endpoint.version is not None and target.version != endpoint.version and not (
                    props.get("partition") and target.version is not None
                    and _version_number(target.version) <= _version_number(endpoint.version)):
                continue  # a run that wrote another version of the table than the one read (or, for a partition,
                # a later one)
            _keep(relationships, Relationship(source, target, dict(sorted(props.items()))))
            frontier.append(source)
    return LineageGraph(sorted(metadata.values(), key=lambda m: m.name),
                        sorted(relationships.values(), key=lambda r: r.key))


def _stored_endpoint(obj: Any, props: Mapping[str, str], side: str) -> Endpoint:
    """An endpoint of a stored relationship; the Delta version comes from the relationship's properties."""
    job_key = props.get("job_asset_key")
    if obj.external_metadata is not None:
        return Endpoint("external_metadata", obj.external_metadata.name, asset_key=job_key)
    own_key = props.get(f"{side}_asset_key")
    if obj.model_version is not None:
        return Endpoint("model_version", obj.model_version.name, str(obj.model_version.version), asset_key=own_key)
    if obj.table is not None:
        version = props.get("delta_version_read" if side == "source" else "delta_version_written")
        return Endpoint("table", obj.table.name, version, asset_key=own_key)
    raise LineageError(f"a stored lineage relationship has an object this tool does not read: {obj}")


def _version_number(version: str) -> int:
    return int(version) if str(version).isdigit() else -1


def latest_databricks_version(workspace: Any, model_full_name: str) -> str | None:
    """The highest version of the registered model in Unity Catalog."""
    return _highest(str(v.version) for v in workspace.model_versions.list(model_full_name) if v.version is not None)


def _highest(versions: Iterable[str]) -> str | None:
    numbers = [int(v) for v in versions if str(v).isdigit()]
    return str(max(numbers)) if numbers else None


def read_lineage(settings: Settings, model_full_name: str, version: str | None,
                 environ: Mapping[str, str] | None = None) -> tuple[LineageGraph, str]:
    """The deployment's lineage records around the model version (the latest one when version is None)."""
    env = os.environ if environ is None else environ
    if settings.deployment == "local":
        from governed_ft_dagster.lineage.facts import openlineage_path
        from governed_ft_dagster.lineage.sinks import read_events

        path = openlineage_path(settings.home)
        events = read_events(path)
        version = version or latest_openlineage_version(events, model_full_name)
        if version is None:
            raise LineageError(f"no lineage recorded for model {model_full_name} in {path}; "
                               "materialize uc_model_version first")
        return graph_from_openlineage(events), version
    from governed_ft_dagster.defs.resources.registry import DatabricksLineageResource, databricks_lineage_errors

    missing = [key for key in ("DATABRICKS_HOST", "AWS_REGION") if not env.get(key)]
    if missing:
        raise SettingsError(f"set {' and '.join(missing)} to read lineage from the Databricks workspace")
    resource = DatabricksLineageResource(host=env["DATABRICKS_HOST"], region=env["AWS_REGION"],
                                         secret_id=env.get("GOVERNED_FT_REGISTRAR_SECRET_ID")
                                         or StackConfig(name=settings.stack_name).secret_name(Principal.REGISTRAR))
    registrar = resource.registrar_client()
    with databricks_lineage_errors(resource.host, f"reading the lineage of model {model_full_name}",
                                   grantee=registrar.client_id):
        workspace = registrar._ws()
        version = version or latest_databricks_version(workspace, model_full_name)
        if version is None:
            raise LineageError(f"model {model_full_name} has no versions in Unity Catalog at {resource.host}")
        return graph_from_databricks(workspace, model_full_name, version), version


def _clean_errors(func):
    """Project errors as one line on stderr with exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            from governed_ft_dagster.lineage.sinks import LineageSinkError

            from governed_ft_dagster.lineage.manifest import ManifestError

            if not isinstance(exc, (LineageError, LineageSinkError, CatalogError, SettingsError, StackError,
                                    ManifestError)):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def describe_entry(entry: Mapping[str, Any], short: bool = False) -> str:
    """One link of an upstream chain: a job run, a table at the Delta version read, or the model version."""
    if entry["type"] == "job_run":
        partition = (entry.get("properties") or {}).get("partition")
        return f"{entry.get('kind', 'job run')} {entry.get('run_id', entry['name'])}" + (
            f" (partition {partition})" if partition and not short else "")
    if entry["type"] == "source":
        url = (entry.get("properties") or {}).get("url")
        return f"{entry['name']}" if short else f"source {entry['name']} ({entry.get('kind')}, {url})"
    if entry["type"] == "table":
        return (f"{entry['full_name']}@{entry['version_read']}" if short
                else f"table {entry['full_name']} at Delta version {entry['version_read']}")
    return f"{entry['full_name']} v{entry['version']}" if short else f"model {entry['full_name']} version {entry['version']}"


def audit_resources(settings: Settings, environ: Mapping[str, str] | None = None) -> tuple[Any, Any]:
    """The catalog and registry resources the audit commands read with, for the deployment."""
    import logging

    env = os.environ if environ is None else environ
    # A command's output is its answer: no download progress bars, and no warning per request from the
    # sagemaker-mlflow plugin's header provider, which fails on every tracking URI that is not a SageMaker ARN.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)
    from governed_ft_dagster.defs.resources.catalog import DatabricksCatalogResource, local_catalog_resource
    from governed_ft_dagster.defs.resources.registry import DatabricksRegistryResource, local_registry_resource

    if settings.deployment == "local":
        return local_catalog_resource(settings), local_registry_resource(settings)

    missing = [key for key in ("DATABRICKS_HOST", "AWS_REGION") if not env.get(key)]
    if missing:
        raise SettingsError(f"set {' and '.join(missing)} to read model versions from the Databricks workspace")
    names = StackConfig(name=settings.stack_name)
    catalog = DatabricksCatalogResource(catalog=settings.catalog_name, host=env["DATABRICKS_HOST"],
                                        region=env["AWS_REGION"], storage_region=env["AWS_REGION"],
                                        storage_root=env.get("GOVERNED_FT_STORAGE_ROOT") or "s3://unset",
                                        secret_prefix=names.secret_prefix)
    registry = DatabricksRegistryResource(host=env["DATABRICKS_HOST"], region=env["AWS_REGION"],
                                          secret_id=names.secret_name(Principal.REGISTRAR))
    return catalog, registry


def full_model_name(settings: Settings, name: str | None) -> str:
    """catalog.schema.model; a schema.model name is in the settings' catalog; none is the deployment's model."""
    name = name or settings.model_name
    return f"{settings.catalog_name}.{name}" if name.count(".") == 1 else name


@click.command("lineage")
@click.argument("model_full_name", required=False)
@click.option("--version", "version", default=None, help="Model version (default: the latest one with lineage).")
@click.option("--filing", "accession", default=None, metavar="ACCESSION",
              help="Every model version trained on this filing (from the versions' manifests).")
@click.option("--cik", "cik", default=None, help="Every model version trained on a filing of this company.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@_clean_errors
def lineage(model_full_name: str | None, version: str | None, accession: str | None, cik: str | None,
            as_json: bool) -> None:
    """Upstream chain of a model version, from the ingest runs and their source to the version; or, with --filing
    or --cik, the model versions trained on that filing or company."""
    settings = load_settings()
    if accession or cik:
        if accession and cik:
            raise LineageError("ask for one filing (--filing) or one company (--cik), not both")
        if version:
            raise LineageError("--version applies to a model's chain; --filing and --cik search every version")
        from governed_ft_dagster.audit import impact, impact_lines

        _, registry = audit_resources(settings)
        answer = impact(registry, [full_model_name(settings, model_full_name)], accession=accession, cik=cik)
        if as_json:
            click.echo(json.dumps(answer, indent=2, sort_keys=True))
        else:
            for line in impact_lines(answer):
                click.echo(line)
        return
    if not model_full_name:
        raise LineageError("name a model (catalog.schema.model), or ask with --filing or --cik")
    model_full_name = full_model_name(settings, model_full_name)
    graph, version = read_lineage(settings, model_full_name, version)
    chain = upstream_chain(graph, model_full_name, version)
    if as_json:
        click.echo(json.dumps(chain, indent=2, sort_keys=True))
        return
    for entry in chain["chain"]:
        click.echo("  " * entry["depth"] + describe_entry(entry))


@click.command("verify")
@click.argument("model_full_name")
@click.option("--version", "version", required=True, help="The model version whose training data to verify.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_clean_errors
def verify(model_full_name: str, version: str, as_json: bool) -> None:
    """Re-read the curated table at the version the model was trained on (and the raw table at the version the
    curation read) through the catalog, and compare with the version's manifest; exit 0 only on a match."""
    from governed_ft_dagster.audit import stored_manifests, verify as verify_version, verify_lines

    settings = load_settings()
    model_full_name = full_model_name(settings, model_full_name)
    catalog, registry = audit_resources(settings)
    found, without = stored_manifests(registry, [model_full_name], version)
    if not found:
        raise LineageError(f"{model_full_name} version {version} has no training-data manifest"
                           + (" (it was registered before manifests were recorded)" if without else ""))
    report = verify_version(catalog, found[0])
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        for line in verify_lines(report):
            click.echo(line)
    sys.exit(0 if report["match"] else 1)
