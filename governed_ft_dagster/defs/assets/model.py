"""uc_model_version: the fine-tuned adapter registered as a Unity Catalog model version, with lineage pushed."""

import functools
import json
import os
import subprocess
import tarfile
import tempfile
from importlib import metadata as package_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import dagster as dg
from dagster_shared.check import CheckError

from governed_ft_dagster.defs.assets.failures import readable_failures
from governed_ft_dagster.catalog.base import CatalogError, Principal, Privilege
from governed_ft_dagster.governance import MODEL_SCHEMA
from governed_ft_dagster.lineage.derive import AssetNode, LineageError, derive_lineage
from governed_ft_dagster.lineage.manifest import MANIFEST_FILE
from governed_ft_dagster.lineage.facts import MODEL_NAME as FACT_MODEL_NAME
from governed_ft_dagster.lineage.facts import MODEL_VERSION as FACT_MODEL_VERSION
from governed_ft_dagster.lineage.facts import lineage_nodes_from_graph
from governed_ft_dagster.defs.provenance import (
    Link,
    ProvenanceError,
    check_evaluation,
    latest_materialization,
    lineage_facts,
    link,
    provenance_chain,
)
from governed_ft_dagster.defs.resources.catalog import CatalogResource
from governed_ft_dagster.defs.resources.registry import LineageResource, RegistryResource
from governed_ft_dagster.storage import extract_tar, is_local, local_path

if TYPE_CHECKING:
    from governed_ft_dagster.lineage.derive import LineageGraph
    from governed_ft_dagster.registry import RegisteredVersion

FINETUNED_LORA_MODEL = dg.AssetKey("finetuned_lora_model")
TAG_TRAINING_MLFLOW_RUN = "governed_ft.training_mlflow_run_id"
TAG_EVAL_LOSS = "governed_ft.eval_loss"
TAG_BASE_EVAL_LOSS = "governed_ft.base_eval_loss"
TAG_GATE = "governed_ft.gate"
TAG_TRAINING_DATA_FINGERPRINT = "governed_ft.training_data_fingerprint"
TAG_TRAINING_DATA_COUNT_PREFIX = "governed_ft.training_data_"  # + records, train, validation, filings, companies
TRAINING_DATA_ATTACHMENT = "training_data_manifest"
TAG_GATE_RELATIVE_IMPROVEMENT = "governed_ft.gate_relative_improvement"
TAG_GATE_MIN_RELATIVE_IMPROVEMENT = "governed_ft.gate_min_relative_improvement"
GATE = dg.AssetCheckKey(FINETUNED_LORA_MODEL, "adapter_beats_base_model")
PACKAGE = "governed-ft-dagster"


@dg.asset(
    deps=[FINETUNED_LORA_MODEL],
    group_name="registry",
    kinds={"mlflow", "unitycatalog"},
    owners=["team:governed-ft"],
    tags={"principal": Principal.REGISTRAR.value},
)
def uc_model_version(context: dg.AssetExecutionContext, catalog: CatalogResource, registry: RegistryResource,
                     lineage: LineageResource) -> dg.MaterializeResult:
    """The LoRA adapter as a model version in the ml schema, tagged with its sources and jobs, lineage pushed."""
    with readable_failures():
        try:
            return _materialize(context, catalog, registry, lineage)
        except LineageError as exc:
            raise _failure(f"lineage cannot be derived from the asset graph: {exc}") from None


def _failure(description: str) -> dg.Failure:
    return dg.Failure(description=description, allow_retries=False)


def _materialize(context: dg.AssetExecutionContext, catalog: CatalogResource, registry: RegistryResource,
                 lineage: LineageResource) -> dg.MaterializeResult:
    from governed_ft_dagster.lineage.sinks import LineageSinkError
    from governed_ft_dagster.registry import artifact_sha256

    own_key = context.asset_key.to_user_string()
    description = asset_graph_description(context)
    trained_key = FINETUNED_LORA_MODEL.to_user_string()
    chain = registration_chain(context.instance, description, own_key)
    adapter = chain.get(trained_key)
    if adapter is None:
        raise _failure(f"asset {trained_key} has no materialization yet; materialize it before {own_key}")
    trained = adapter.facts
    for required in ("job_run_kind", "job_run_id", "base_model", "source_table", "adapter_sha256"):
        if not trained.get(required):
            raise _failure(f"{adapter.describe()} has no '{required}' metadata; re-materialize {trained_key}")
    gate = passed_gate(context.instance, adapter)
    facts = lineage_facts(context.instance, chain, description)
    upstream = _ancestor_nodes(lineage_nodes_from_graph(description, facts), own_key)
    context.log.info("registering the adapter of " + adapter.describe() + "; provenance: "
                     + "; ".join(item.describe() for key, item in sorted(chain.items()) if key != trained_key))

    model_full_name = catalog.table_name(registry.model_name)
    ml_schema = catalog.table_name(MODEL_SCHEMA)
    catalog.preflight(Principal.REGISTRAR, [
        ("catalog", catalog.catalog, Privilege.USE_CATALOG),
        ("schema", ml_schema, Privilege.USE_SCHEMA),
        ("schema", ml_schema, Privilege.CREATE_MODEL),
    ])
    lineage.preflight()

    tags, version_description = _version_facts(upstream, trained_key, trained)
    tags.update(_gate_tags(gate))
    hyperparameters = _json_mapping(trained.get("hyperparameters"))
    with tempfile.TemporaryDirectory(prefix="governed-ft-adapter-") as scratch:
        adapter_dir = _adapter_dir(context, catalog, trained, Path(scratch))
        found = artifact_sha256(adapter_dir)
        if found != trained["adapter_sha256"]:
            raise _failure(f"refusing to register the adapter of {adapter.describe()}: the files at {adapter_dir} "
                           f"hash to {found[:12]}, not to the {str(trained['adapter_sha256'])[:12]} it recorded; "
                           f"re-materialize {trained_key}")
        manifest = adapter_dir / MANIFEST_FILE
        if not manifest.is_file():
            raise _failure(f"the adapter of {adapter.describe()} has no {MANIFEST_FILE}; re-materialize {trained_key}")
        registered = registry.register(
            model_full_name=model_full_name, adapter_dir=adapter_dir, base_model_ref=str(trained["base_model"]),
            description=version_description, tags=tags, hyperparameters=hyperparameters or None,
            attachments={TRAINING_DATA_ATTACHMENT: manifest},
        )
    context.log.info(f"{'registered' if registered.created else 'already registered'}: "
                     f"{registered.name} version {registered.version}")

    own_facts = {FACT_MODEL_NAME: registered.name, FACT_MODEL_VERSION: registered.version}
    graph = derive_lineage(lineage_nodes_from_graph(description, {**facts, own_key: own_facts}))
    try:
        counts = lineage.push(graph)
    except (LineageSinkError, CatalogError) as exc:
        raise _failure(f"model version {registered.version} of {registered.name} is registered but its lineage "
                       f"was not written: {exc}") from None
    context.log.info(f"lineage: {counts['created']} created, {counts['updated']} updated, "
                     f"{counts['unchanged']} unchanged")
    metadata = _result_metadata(registered, tags, graph, counts, lineage)
    metadata["provenance"] = dg.MetadataValue.json({key: item.as_metadata() for key, item in sorted(chain.items())})
    metadata["adapter_materialization"] = dg.MetadataValue.int(adapter.storage_id)
    metadata["gate"] = dg.MetadataValue.json({"check": GATE.name, "passed": gate.passed,
                                              "description": gate.description or ""})
    links = {"catalog_ui": catalog.ui_url(registered.name, int(registered.version)),
             "mlflow_run": registered.experiment_id and registry.run_url(registered.experiment_id, registered.run_id)}
    metadata.update({label: dg.MetadataValue.url(url) for label, url in links.items() if url})
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(str(registered.version)))


# ---- the asset graph and the recorded provenance ----------------------------------------------------------------


def asset_graph_description(context: dg.AssetExecutionContext) -> dict[str, list[str]]:
    """This asset and its materialized ancestors, each with its direct dependencies, as Dagster's asset graph has
    them; observations (the raw table's version) leave no materialization to walk back to and are left out."""
    try:
        asset_graph = context.repository_def.asset_graph
    except CheckError:  # in-process runs have no repository; a job's graph is cut at the selection's parents
        job_graph = context.job_def.asset_layer.asset_graph
        asset_graph = getattr(job_graph, "source_asset_graph", job_graph)
    key = context.asset_key
    keys = {k for k in asset_graph.get_ancestor_asset_keys(key) if asset_graph.get(k).is_materializable} | {key}
    return {k.to_user_string(): sorted(p.to_user_string() for p in asset_graph.get(k).parent_keys if p in keys)
            for k in keys}


def registration_chain(instance: dg.DagsterInstance, description: Mapping[str, list[str]],
                       own_key: str) -> dict[str, Link]:
    """The latest materialization of each input of own_key and, back from each, the materializations that
    produced what it read, as Dagster recorded them."""
    chain: dict[str, Link] = {}
    try:
        for parent in description.get(own_key, []):
            record = latest_materialization(instance, parent)
            if record is not None and parent not in chain:
                chain.update(provenance_chain(instance, link(parent, record), description))
    except ProvenanceError as exc:
        raise _failure(f"the provenance of what {own_key} registers cannot be followed: {exc}") from None
    return chain


def passed_gate(instance: dg.DagsterInstance, adapter: Link) -> dg.AssetCheckEvaluation:
    """The gate's passed evaluation of exactly this adapter materialization; a failure otherwise."""
    evaluation = check_evaluation(instance, GATE, adapter)
    refusal = f"refusing to register the adapter of {adapter.describe()}: check {GATE.name}"
    if evaluation is None:
        raise _failure(f"{refusal} was never evaluated for it; execute the check on this materialization (or "
                       f"re-materialize {GATE.asset_key.to_user_string()} with its checks) first")
    if not evaluation.passed:
        raise _failure(f"{refusal} failed for it: {evaluation.description or 'no description'}")
    return evaluation


def _gate_tags(evaluation: dg.AssetCheckEvaluation) -> dict[str, str]:
    values = {name: value.value if isinstance(value, dg.MetadataValue) else value
              for name, value in evaluation.metadata.items()}
    tags = {TAG_GATE: f"{GATE.name}:passed"}
    for tag, key in ((TAG_GATE_RELATIVE_IMPROVEMENT, "relative_improvement"),
                     (TAG_GATE_MIN_RELATIVE_IMPROVEMENT, "min_relative_improvement")):
        if values.get(key) not in (None, ""):
            tags[tag] = str(values[key])
    return tags


def _ancestor_nodes(nodes: list[AssetNode], own_key: str) -> list[AssetNode]:
    """The nodes upstream of own_key, in dependency order (nearest last)."""
    by_key = {node.key: node for node in nodes}
    ordered: list[AssetNode] = []
    seen: set[str] = set()

    def visit(key: str) -> None:
        if key in seen:
            return
        seen.add(key)
        for dep in by_key[key].deps:
            visit(dep)
        if key != own_key:
            ordered.append(by_key[key])

    visit(own_key)
    return ordered


# ---- tags and description -------------------------------------------------------------------------------------


def _version_facts(upstream: list[AssetNode], trained_key: str,
                   trained: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    """Version tags (tables and Delta versions read, job ids, code version, hyperparameter hash) and description."""
    from governed_ft_dagster.registry import TAG_HYPERPARAMETERS_SHA256, governance_tags

    source_tables: dict[str, int | str] = {}
    preprocessing: list[str] = []
    training = ""
    for node in upstream:
        if node.job_run is None or node.external_source is not None:
            continue  # ingest runs fetch from outside the catalog; the version tags name the tables read
        source_tables.update(node.inputs_read)
        job = f"{node.job_run.kind}:{node.job_run.run_id}"
        if node.key == trained_key:
            training = job
        else:
            preprocessing.append(job)
    hyperparameters = _json_mapping(trained.get("hyperparameters"))
    tags = governance_tags(source_tables=source_tables, preprocessing_job=",".join(preprocessing),
                           training_job=training, code_version=code_version(), hyperparameters=hyperparameters)
    if trained.get("hyperparameters_sha256"):
        tags[TAG_HYPERPARAMETERS_SHA256] = str(trained["hyperparameters_sha256"])
    for tag, key in ((TAG_TRAINING_MLFLOW_RUN, "mlflow_run_id"), (TAG_EVAL_LOSS, "eval_loss"),
                     (TAG_BASE_EVAL_LOSS, "base_eval_loss"), (TAG_TRAINING_DATA_FINGERPRINT, "training_data_fingerprint")):
        if trained.get(key) not in (None, ""):
            tags[tag] = str(trained[key])
    counts = _json_mapping(trained.get("training_data_counts"))
    tags.update({f"{TAG_TRAINING_DATA_COUNT_PREFIX}{name}": str(n) for name, n in sorted(counts.items())})
    read = ", ".join(f"{table} at Delta version {version}" for table, version in sorted(source_tables.items()))
    description = (f"LoRA adapter over {trained['base_model']}, trained by {training} on {read}"
                   + (f", preprocessed by {', '.join(preprocessing)}" if preprocessing else "") + ".")
    return tags, description


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`git:<describe>` of the checkout the package runs from (`-dirty` with local changes), else its version."""
    root = Path(__file__).resolve().parents[3]
    if (root / ".git").exists():
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never refresh the index

        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                                  env=env, check=True).stdout.strip()

        try:
            described = git("describe", "--always", "--tags")
            dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
            return f"git:{described}{'-dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return f"package:{package_metadata.version(PACKAGE)}"
    except package_metadata.PackageNotFoundError:
        return "unknown"


def _json_mapping(value: Any) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _failure(f"the training metadata's hyperparameters are not JSON: {value[:80]!r}") from None
    return dict(value) if isinstance(value, Mapping) else {}


# ---- the adapter files ----------------------------------------------------------------------------------------


def _adapter_dir(context: dg.AssetExecutionContext, catalog: CatalogResource, trained: Mapping[str, Any],
                 scratch: Path) -> Path:
    """The training job's model folder when it is on this machine, else a copy read with the registrar's credentials."""
    model_dir = trained.get("model_dir")
    if model_dir and Path(str(model_dir)).is_dir() and any(Path(str(model_dir)).iterdir()):
        return Path(str(model_dir))
    location = str(trained.get("adapter_location") or "")
    if not location:
        raise _failure(f"the adapter is neither in model_dir {model_dir!r} on this machine nor at an "
                       "adapter_location; re-materialize finetuned_lora_model")
    if is_local(location):
        path = local_path(location)
        if not path.is_dir():
            raise _failure(f"the adapter location {location} does not exist on this machine")
        return path
    context.log.info(f"reading the adapter from {location} with credentials vended to the registrar")
    return download_adapter(catalog, location, scratch / "adapter")


def download_adapter(catalog: CatalogResource, location: str, dest: Path) -> Path:
    """Copy an adapter prefix (or a SageMaker model.tar.gz, unpacked) with PATH_READ credentials of the registrar."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    url = location.rstrip("/")
    creds = catalog.client(Principal.REGISTRAR).temporary_path_credentials(url, "PATH_READ")
    endpoint = catalog.endpoint()
    s3 = boto3.session.Session(
        aws_access_key_id=creds.aws_access_key_id, aws_secret_access_key=creds.aws_secret_access_key,
        aws_session_token=creds.aws_session_token, region_name=endpoint.region,
    ).client("s3", endpoint_url=endpoint.endpoint_url)
    bucket, _, key = url.removeprefix("s3://").partition("/")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if key.endswith(".tar.gz"):
            archive = dest.parent / "model.tar.gz"
            s3.download_file(bucket, key, str(archive))
            with tarfile.open(archive, "r:gz") as tar:
                extract_tar(tar, dest)
            archive.unlink()
        else:
            count = 0
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{key}/"):
                for item in page.get("Contents", []):
                    relative = item["Key"][len(key) + 1:]
                    if not relative or relative.endswith("/"):
                        continue
                    target = dest / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, item["Key"], str(target))
                    count += 1
            if not count:
                raise _failure(f"no adapter files under {location}; re-materialize finetuned_lora_model")
    except (ClientError, BotoCoreError) as exc:
        raise CatalogError(f"reading the adapter from {location} as the registrar failed "
                           f"({type(exc).__name__}: {str(exc)[:200]})") from None
    return dest


# ---- materialization metadata ---------------------------------------------------------------------------------


def _result_metadata(registered: "RegisteredVersion", tags: Mapping[str, str], graph: "LineageGraph",
                     counts: Mapping[str, int], lineage: LineageResource) -> dict[str, Any]:
    command = f"governed-ft lineage {registered.name} --version {registered.version} --json"
    return {
        FACT_MODEL_NAME: dg.MetadataValue.text(registered.name),
        FACT_MODEL_VERSION: dg.MetadataValue.int(int(registered.version)),
        "created": dg.MetadataValue.bool(registered.created),
        "mlflow_run_id": dg.MetadataValue.text(registered.run_id),
        "model_source": dg.MetadataValue.text(registered.source),
        "artifact_sha256": dg.MetadataValue.text(registered.artifact_sha256),
        "version_tags": dg.MetadataValue.json(dict(sorted(tags.items()))),
        "lineage": dg.MetadataValue.json(dict(counts)),
        "lineage_external_metadata": dg.MetadataValue.int(len(graph.external_metadata)),
        "lineage_relationships": dg.MetadataValue.int(len(graph.relationships)),
        "lineage_where": dg.MetadataValue.text(lineage.where(registered.name, registered.version)),
        "lineage_command": dg.MetadataValue.md(f"`{command}`"),
    }


__all__ = ["FINETUNED_LORA_MODEL", "GATE", "asset_graph_description", "code_version", "download_adapter",
           "passed_gate", "registration_chain", "uc_model_version"]
