"""Lineage records derived from the asset graph and the facts of one materialization (pure: no Dagster here).

Rules, applied to any graph:

- an asset with a job run yields one ExternalMetadata record for that run;
- its inputs are the catalog objects of its dependencies; a dependency without a catalog object is looked
  through to its own dependencies, unless it ran a job itself (then the edge is job run → job run);
- its outputs are its own catalog object or, when it has none, the catalog objects of the downstream assets
  that ran no job of their own (e.g. the model version registered in-process from a training job's adapter);
- an asset with a catalog object and no job run contributes edges only when a downstream job reads it;
- a job run that fetched from a system outside the catalog (an external source, e.g. SEC EDGAR) has that system as
  an external-metadata record of its own and an edge source → job run;
- a partitioned asset is one node per partition materialization; a table version read downstream was produced by
  the latest run of each partition that wrote a version up to it.

Every relationship has an external-metadata object on at least one side, as Unity Catalog requires.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Sequence

SYSTEM_TYPE = "OTHER"

CatalogKind = Literal["table", "model_version"]
EndpointKind = Literal["table", "model_version", "external_metadata"]

_SECRET_KEYS = {"aws_access_key_id", "aws_secret_access_key", "session_token", "authorization", "client_secret"}
# "token" but not "tokens"/"tokenizer": max_tokens and tokenizer_path are training facts, not secrets.
_SECRET_KEY = re.compile(r"secret|password|passwd|credential|api_?key|private_?key|access_?key|token(?!s(?:$|_)|i[sz])")
_SECRET_VALUES = [
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\."),  # JWT header.payload.
    re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),  # AWS access key ids
    re.compile(r"\bdapi[0-9a-f]{32}\b"),  # Databricks personal access token
    re.compile(r"\bdose[0-9a-f]{32}\b"),  # Databricks OAuth secret
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub tokens
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # user:password@ in a URL
]
_STANDARD_ROLES = ("model_version", "training_run", "curated_table", "preprocessing_run", "raw_table")
_FAN_IN_ROLES = ("ingest_runs", "sources")  # below the raw table: one run per partition, then the systems fetched from


class LineageError(ValueError):
    """The asset graph description cannot be turned into lineage."""


@dataclass(frozen=True)
class CatalogObject:
    """A catalog securable an asset wrote: a table at a Delta version or a model version."""

    kind: CatalogKind
    full_name: str
    version: str | int | None = None


@dataclass(frozen=True)
class JobRun:
    """One run of an external job (EMR Serverless, SageMaker, local Spark, local training)."""

    kind: str
    run_id: str
    properties: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ExternalSource:
    """A system outside the catalog that a job run fetched its data from."""

    name: str
    entity_type: str
    properties: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class AssetNode:
    """An asset (one partition of it, for a partitioned asset) with the facts of the materialization that produced
    what its child read."""

    key: str
    deps: tuple[str, ...] = ()
    catalog_object: CatalogObject | None = None
    job_run: JobRun | None = None
    inputs_read: Mapping[str, str | int] = field(default_factory=dict, hash=False)
    partition: str | None = None
    external_source: ExternalSource | None = None


@dataclass(frozen=True)
class ExternalMetadata:
    """The external-metadata record of one job run."""

    name: str
    system_type: str
    entity_type: str
    run_id: str
    asset_key: str
    description: str
    properties: dict[str, str] = field(hash=False)
    role: Literal["job_run", "source"] = "job_run"


@dataclass(frozen=True)
class Endpoint:
    """One side of a relationship; version is the Delta version read or written, or the model version."""

    kind: EndpointKind
    name: str
    version: str | None = None
    asset_key: str | None = field(default=None, compare=False)

    @property
    def ref(self) -> str:
        """Identity as the catalog sees it: tables by name, model versions by name and version."""
        if self.kind == "model_version":
            return f"model_version:{self.name}@{self.version}"
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Relationship:
    """A directed lineage edge with an external-metadata object on at least one side."""

    source: Endpoint
    target: Endpoint
    properties: dict[str, str] = field(hash=False)

    @property
    def key(self) -> str:
        """Stable identity of the edge, the same on every derivation."""
        return f"{self.source.ref} -> {self.target.ref}"


@dataclass(frozen=True)
class LineageGraph:
    """External-metadata records and relationships derived from one graph."""

    external_metadata: list[ExternalMetadata]
    relationships: list[Relationship]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return {
            "external_metadata": [asdict(m) for m in self.external_metadata],
            "relationships": [
                {"key": r.key, "source": asdict(r.source), "target": asdict(r.target), "properties": r.properties}
                for r in self.relationships
            ],
        }

    def metadata(self, name: str) -> ExternalMetadata | None:
        """The external-metadata record with this name."""
        return next((m for m in self.external_metadata if m.name == name), None)


def redact(properties: Mapping[str, Any]) -> dict[str, str]:
    """Properties as strings, without secret-looking keys or values and without empty values."""
    out: dict[str, str] = {}
    for key, value in properties.items():
        if value is None or _secret_key(str(key)):
            continue
        text = str(value)
        if any(p.search(text) for p in _SECRET_VALUES):
            continue
        out[str(key)] = text
    return dict(sorted(out.items()))


def _secret_key(key: str) -> bool:
    lowered = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower().replace("-", "_")
    return lowered in _SECRET_KEYS or _SECRET_KEY.search(lowered) is not None


def metadata_name(kind: str, run_id: str) -> str:
    """Deterministic external-metadata name: snake-cased kind, sanitised run id and a hash of both."""
    kind_part = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", kind)
    kind_part = re.sub(r"[^a-z0-9]+", "_", kind_part.lower()).strip("_")[:60] or "job"
    run_part = re.sub(r"[^a-z0-9]+", "_", run_id.lower()).strip("_")[:160] or "run"
    digest = hashlib.sha256(f"{kind}\x00{run_id}".encode()).hexdigest()[:8]
    return f"{kind_part}__{run_part}__{digest}"


def derive_lineage(nodes: Sequence[AssetNode]) -> LineageGraph:
    """External metadata and relationships for every job run in the graph, in a stable order."""
    by_key = _index(nodes)
    order = _topological(by_key)
    downstream: dict[str, list[str]] = {key: [] for key in order}
    for key in order:
        for dep in by_key[key].deps:
            downstream[dep].append(key)

    metadata: dict[str, ExternalMetadata] = {}
    relationships: dict[str, Relationship] = {}
    for key in order:
        node = by_key[key]
        if node.job_run is None:
            continue
        record = _metadata(node)
        metadata[record.name] = record
        job = Endpoint("external_metadata", record.name, asset_key=key)
        partition = {"partition": node.partition} if node.partition is not None else {}
        if node.external_source is not None:
            origin = _source_metadata(node.external_source)
            metadata.setdefault(origin.name, origin)
            props = {"job_asset_key": key, "source_system": origin.name, "direction": "input", **partition}
            _add(relationships, Relationship(Endpoint("external_metadata", origin.name), job, redact(props)))
        for upstream in _input_nodes(node, by_key):
            source = _input_endpoint(node, upstream)
            props = {"job_asset_key": key, "source_asset_key": upstream.key, "direction": "input", **partition}
            if source.kind == "table":
                props["delta_version_read"] = source.version
            elif source.kind == "model_version":
                props["model_version"] = source.version
            _add(relationships, Relationship(source, job, redact(props)))
        for target_node in _output_nodes(node, by_key, downstream):
            obj = target_node.catalog_object
            assert obj is not None
            target = Endpoint(obj.kind, obj.full_name, _text(obj.version), asset_key=target_node.key)
            props = {"job_asset_key": key, "target_asset_key": target_node.key, "direction": "output", **partition}
            props["delta_version_written" if obj.kind == "table" else "model_version"] = target.version
            _add(relationships, Relationship(job, target, redact(props)))
    return LineageGraph(list(metadata.values()), sorted(relationships.values(), key=lambda r: r.key))


def _source_metadata(source: ExternalSource) -> ExternalMetadata:
    """The external-metadata record of a source system: one per system, named by it."""
    name = re.sub(r"[^a-z0-9]+", "_", source.name.lower()).strip("_") or "source"
    props = redact({**source.properties, "source_system": source.name})
    return ExternalMetadata(name=name, system_type=SYSTEM_TYPE, entity_type=source.entity_type, run_id="",
                            asset_key="", description=f"{source.entity_type} {source.name}", properties=props,
                            role="source")


def _index(nodes: Sequence[AssetNode]) -> dict[str, AssetNode]:
    by_key: dict[str, AssetNode] = {}
    for node in nodes:
        if node.key in by_key:
            raise LineageError(f"asset {node.key!r} appears twice in the graph")
        by_key[node.key] = node
    for node in nodes:
        missing = [d for d in node.deps if d not in by_key]
        if missing:
            raise LineageError(f"asset {node.key!r} depends on {missing} which are not in the graph")
    return by_key


def _topological(by_key: Mapping[str, AssetNode]) -> list[str]:
    remaining = {key: set(node.deps) for key, node in by_key.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(key for key, deps in remaining.items() if not deps)
        if not ready:
            raise LineageError(f"the asset graph has a cycle among {sorted(remaining)}")
        for key in ready:
            del remaining[key]
            order.append(key)
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


def _metadata(node: AssetNode) -> ExternalMetadata:
    run = node.job_run
    assert run is not None
    props = redact({**run.properties, "run_id": run.run_id, "job_kind": run.kind, "asset_key": node.key,
                    "partition": node.partition})
    return ExternalMetadata(
        name=metadata_name(run.kind, run.run_id),
        system_type=SYSTEM_TYPE,
        entity_type=run.kind,
        run_id=run.run_id,
        asset_key=node.key,
        description=f"{run.kind} {run.run_id} materializing asset {node.key}",
        properties=props,
    )


def _input_nodes(node: AssetNode, by_key: Mapping[str, AssetNode]) -> list[AssetNode]:
    """Nearest upstream assets with a catalog object or a job run, looking through the rest."""
    found: dict[str, AssetNode] = {}
    stack = list(node.deps)
    seen: set[str] = set()
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        upstream = by_key[key]
        if upstream.catalog_object is not None or upstream.job_run is not None:
            found[key] = upstream
        else:
            stack.extend(upstream.deps)
    return [found[k] for k in sorted(found)]


def _input_endpoint(node: AssetNode, upstream: AssetNode) -> Endpoint:
    obj = upstream.catalog_object
    if obj is None:
        run = upstream.job_run
        assert run is not None
        return Endpoint("external_metadata", metadata_name(run.kind, run.run_id), asset_key=upstream.key)
    read = node.inputs_read.get(obj.full_name)
    if read is None and obj.kind == "model_version":
        read = obj.version  # a model version is immutable: depending on it means reading exactly it
    return Endpoint(obj.kind, obj.full_name, _text(read), asset_key=upstream.key)


def _output_nodes(
    node: AssetNode, by_key: Mapping[str, AssetNode], downstream: Mapping[str, list[str]]
) -> list[AssetNode]:
    """The asset's own catalog object, or those of downstream assets that ran no job of their own."""
    if node.catalog_object is not None:
        return [node]
    found: dict[str, AssetNode] = {}
    stack = list(downstream[node.key])
    seen: set[str] = set()
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        child = by_key[key]
        if child.job_run is not None:
            continue
        if child.catalog_object is not None:
            found[key] = child
        else:
            stack.extend(downstream[key])
    return [found[k] for k in sorted(found)]


def _add(relationships: dict[str, Relationship], relationship: Relationship) -> None:
    relationships.setdefault(relationship.key, relationship)


def _text(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def upstream_chain(graph: LineageGraph, model_full_name: str, version: str | int) -> dict[str, Any]:
    """Walk back from a model version through job runs and the table versions they read."""
    start = Endpoint("model_version", model_full_name, str(version))
    if not any(r.target.ref == start.ref or r.source.ref == start.ref for r in graph.relationships):
        raise LineageError(f"no lineage recorded for model {model_full_name} version {version}")
    chain: list[dict[str, Any]] = []
    frontier: list[tuple[Endpoint, int]] = [(start, 0)]
    seen: set[str] = set()
    while frontier:
        endpoint, depth = frontier.pop(0)
        if endpoint.ref in seen:
            continue
        seen.add(endpoint.ref)
        producers = _producers(graph, endpoint)
        entry = _chain_entry(graph, endpoint, depth)
        entry["upstream"] = [p.ref for p in producers]
        chain.append(entry)
        frontier.extend((p, depth + 1) for p in producers)
    result: dict[str, Any] = {role: None for role in _STANDARD_ROLES}
    for depth, role in enumerate(_STANDARD_ROLES):
        at_depth = [e for e in chain if e["depth"] == depth]
        if len(at_depth) == 1:
            result[role] = at_depth[0]
    for depth, role in enumerate(_FAN_IN_ROLES, start=len(_STANDARD_ROLES)):
        result[role] = [e for e in chain if e["depth"] == depth]
    result["chain"] = chain
    return result


def _producers(graph: LineageGraph, endpoint: Endpoint) -> list[Endpoint]:
    """What flowed into endpoint: for a job its inputs (with versions read), for an object the job that wrote it;
    for a table version written partition by partition, the latest writer of each partition up to that version."""
    incoming = [r for r in graph.relationships if r.target.ref == endpoint.ref]
    if endpoint.kind == "table" and endpoint.version is not None:
        read = _version_sort(endpoint.version)
        # only the run that wrote the very version read produced it; a later writer did not
        exact = [r for r in incoming if r.target.version == endpoint.version and "partition" not in r.properties]
        latest: dict[tuple[str, str], Relationship] = {}
        for r in incoming:
            partition = r.properties.get("partition")
            if partition is None or r.target.version is None or _version_sort(r.target.version) > read:
                continue
            group = (re.sub(r"\[.*\]$", "", r.properties.get("job_asset_key", "")), partition)
            if group not in latest or _version_sort(r.target.version) > _version_sort(latest[group].target.version):
                latest[group] = r
        incoming = exact + list(latest.values())
    return [r.source for r in sorted(incoming, key=lambda r: (r.properties.get("partition") or "", r.key))]


def _chain_entry(graph: LineageGraph, endpoint: Endpoint, depth: int) -> dict[str, Any]:
    if endpoint.kind == "external_metadata":
        record = graph.metadata(endpoint.name)
        role = record.role if record is not None else "job_run"
        entry: dict[str, Any] = {"type": role, "depth": depth, "name": endpoint.name, "ref": endpoint.ref}
        if record is not None:
            entry.update(
                kind=record.entity_type,
                run_id=record.run_id,
                asset_key=record.asset_key,
                properties=dict(record.properties),
            )
        return entry
    entry = {
        "type": endpoint.kind,
        "depth": depth,
        "full_name": endpoint.name,
        "ref": endpoint.ref,
        "asset_key": endpoint.asset_key or _asset_key_of(graph, endpoint),
    }
    if endpoint.kind == "table":
        entry["version_read"] = endpoint.version
        written = [r.target.version for r in graph.relationships if r.target.ref == endpoint.ref]
        entry["versions_written"] = sorted({v for v in written if v is not None}, key=_version_sort)
    else:
        entry["version"] = endpoint.version
    return entry


def _asset_key_of(graph: LineageGraph, endpoint: Endpoint) -> str | None:
    for r in graph.relationships:
        for side in (r.source, r.target):
            if side.ref == endpoint.ref and side.asset_key:
                return side.asset_key
    return None


def _version_sort(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def job_relationships(graph: LineageGraph, name: str) -> tuple[list[Relationship], list[Relationship]]:
    """Relationships into and out of one external-metadata object."""
    ref = Endpoint("external_metadata", name).ref
    inputs = [r for r in graph.relationships if r.target.ref == ref]
    outputs = [r for r in graph.relationships if r.source.ref == ref]
    return inputs, outputs


__all__ = [
    "AssetNode",
    "CatalogObject",
    "Endpoint",
    "ExternalMetadata",
    "ExternalSource",
    "JobRun",
    "LineageError",
    "LineageGraph",
    "Relationship",
    "SYSTEM_TYPE",
    "derive_lineage",
    "job_relationships",
    "metadata_name",
    "redact",
    "upstream_chain",
]
